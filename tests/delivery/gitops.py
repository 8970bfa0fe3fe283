"""Git and load helpers for the delivery tests: push like a developer, watch like a user."""

from __future__ import annotations

import subprocess
import threading
from collections import Counter
from pathlib import Path

from serving.stack_helpers import post_json

from modelserve.registry import Registry

ROW = [6, 148, 72, 35, 0, 33.6, 0.627, 50]
GIT_ID = ["-c", "user.name=dev", "-c", "user.email=dev@example.org"]


def git(*args: str, cwd: Path, check: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run git in a checkout; the push's `remote:` lines are in stderr."""
    done = subprocess.run(["git", *GIT_ID, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False, env=env)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def commit(checkout: Path, message: str) -> str:
    """Commit everything in the checkout; return the commit id."""
    git("add", "-A", cwd=checkout)
    git("commit", "-q", "--allow-empty", "-m", message, cwd=checkout)
    return git("rev-parse", "HEAD", cwd=checkout).stdout.strip()


def push(checkout: Path, *options: str, branch: str = "master",
         env: dict[str, str] | None = None, remote: str = "origin") -> subprocess.CompletedProcess:
    """Push HEAD with `-o` options; the result's stderr holds the `remote:` lines."""
    push_options = [arg for option in options for arg in ("-o", option)]
    return git("push", *push_options, remote, f"HEAD:{branch}", cwd=checkout, check=False,
               env=env)


def commit_and_push(checkout: Path, message: str, *options: str, branch: str = "master",
                    env: dict[str, str] | None = None,
                    remote: str = "origin") -> subprocess.CompletedProcess:
    """Commit everything in the checkout and push it."""
    commit(checkout, message)
    return push(checkout, *options, branch=branch, env=env, remote=remote)


def reported_live_version(result: subprocess.CompletedProcess) -> str:
    """The version a push reports as live (`remote: live: VERSION (was ...)`)."""
    lines = [line for line in result.stderr.splitlines() if "remote: live: " in line]
    assert lines, result.stderr
    return lines[0].split("remote: live: ")[1].split()[0]


def registry_state(home: Path) -> tuple[str | None, list[str], int]:
    """Active version, stored versions and history length: what a refusal must not change."""
    registry = Registry(home / "registry")
    return (registry.active_version(), sorted(v.version for v in registry.list_versions()),
            len(registry.history()))


class Load:
    """Requests sent throughout a push; which versions answered, and any failure."""

    def __init__(self, url: str):
        self.url, self.versions, self.failures = url, Counter(), []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        """Send predictions until stopped."""
        while not self._stop.is_set():
            answer = post_json(f"{self.url}/api/v1/predict", {"rows": [ROW]})
            if answer.status == 200:
                self.versions[answer.json()["model_version"]] += 1
            else:
                self.failures.append(f"{answer.status} {answer.body[:120]!r}")

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)
