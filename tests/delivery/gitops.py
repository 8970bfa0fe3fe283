"""Git and load helpers for the delivery tests: push like a developer, watch like a user."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

from serving.stack_helpers import BoundedLoad

from modelserve.registry import Registry

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


class Load(BoundedLoad):
    """One client sending predictions throughout a push: which versions answered, what failed."""

    def __init__(self, url: str, headers: dict[str, str] | None = None):
        super().__init__(url, threads=1, seconds=300, headers=headers)

    @property
    def versions(self) -> Counter:
        """How many answers each model version gave."""
        return Counter(a.body["model_version"] for a in self.answers if a.status == 200)

    @property
    def failures(self) -> list[str]:
        """Every answer that was not a 200."""
        return [f"{a.status} {str(a.body)[:120]!r}" for a in self.answers if a.status != 200]
