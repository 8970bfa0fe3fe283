"""`modelserve delivery init`: the bare repository and its hooks, idempotently."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from modelserve.config import Settings
from modelserve.delivery.config import DeliveryConfig, repository, save_config
from modelserve.fsutil import atomic_write_text

HOOKS = ("pre-receive", "post-receive")
# What git adds to the model files in a pack (object headers, trees, commits, a README):
# a quarter of the limit, and at least a MiB.
PACK_HEADROOM = 0.25
MIN_HEADROOM_BYTES = 1 << 20


def max_input_bytes(max_bytes: int) -> int:
    """The largest pack git accepts in one push, derived from the model files' size limit."""
    return max_bytes + max(int(max_bytes * PACK_HEADROOM), MIN_HEADROOM_BYTES)


def git_settings(config: DeliveryConfig) -> dict[str, str]:
    """The repository's receive settings: git itself refuses what can never deploy."""
    return {
        # Lets `git push -o force-deploy -o reason=...` reach the gate.
        "receive.advertisePushOptions": "true",
        # Deleting the deployed branch would make history disappear without a deployment.
        "receive.denyDeletes": "true",
        # History that production served is never rewritten (the gate says so first).
        "receive.denyNonFastForwards": "true",
        # Malformed objects (bad trees, paths like `.git` or `../`) never enter the repository.
        "receive.fsckObjects": "true",
        # git stops reading a pack past this size, before the gate runs and before any disk
        # fills: an oversized push never reaches the quarantine's full size.
        "receive.maxInputSize": str(max_input_bytes(config.max_bytes)),
    }


def hook_script(settings: Settings, name: str) -> str:
    """A one-line shim: the hook's logic lives in the package, tested like any other code."""
    home = shlex.quote(str(settings.home.resolve()))
    python = shlex.quote(sys.executable)
    # The default model's name decides which model the repository's root files are, so the
    # hooks keep the one the server was set up with, whatever environment git gives them.
    model = shlex.quote(settings.model_name)
    return (f"#!/bin/sh\n# Installed by `modelserve delivery init`; do not edit.\n"
            f"MODELSERVE_HOME={home} MODELSERVE_MODEL_NAME={model} TF_CPP_MIN_LOG_LEVEL=3 "
            f"exec {python} -m modelserve delivery {name}\n")


def _git(*args: str, cwd: Path) -> str:
    """Run git and return its output."""
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,  # noqa: S603,S607
                          check=True)
    return done.stdout.strip()


def init_delivery(settings: Settings, config: DeliveryConfig) -> list[str]:
    """Create or bring up to date the repository, its settings and hooks; say what changed."""
    repo = repository(settings)
    changes = []
    if not (repo / "HEAD").is_file():
        repo.mkdir(parents=True, exist_ok=True)
        _git("init", "--quiet", "--bare", f"--initial-branch={config.branch}", str(repo),
             cwd=repo)
        changes.append(f"created the bare repository {repo}")
    for key, value in git_settings(config).items():
        current = subprocess.run(["git", "config", "--get", key], cwd=repo,  # noqa: S603,S607
                                 capture_output=True, text=True, check=False).stdout.strip()
        if current != value:
            _git("config", key, value, cwd=repo)
            changes.append(f"set {key} = {value}")
    for name in HOOKS:
        if _install_hook(repo / "hooks" / name, hook_script(settings, name)):
            changes.append(f"installed the {name} hook")
    if save_config(settings, config):
        changes.append("saved the gate's settings")
    return changes


def _install_hook(path: Path, script: str) -> bool:
    """Write an executable hook if its content differs; return whether it changed."""
    if path.is_file() and path.read_text() == script and path.stat().st_mode & 0o111:
        return False
    atomic_write_text(path, script)
    path.chmod(0o755)
    return True
