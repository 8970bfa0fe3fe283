"""The development side: a deploy key, and a git remote that pushes with it."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from modelserve.errors import UserError

DEFAULT_REMOTE_REPO = ".local/share/modelserve/delivery/models.git"  # relative to the home


def ensure_key(path: Path) -> tuple[Path, bool]:
    """Create an ed25519 key pair at path unless one exists; return (public key, created)."""
    public = path.with_name(path.name + ".pub")
    if path.is_file() and public.is_file():
        return public, False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    done = subprocess.run(  # noqa: S603
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "modelserve deploy key",  # noqa: S607
         "-f", str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise UserError(f"ssh-keygen failed: {done.stderr.strip()}")
    return public, True


def add_remote(checkout: Path, name: str, destination: str, repo: str, key: Path) -> str:
    """Point remote NAME of a checkout at the production repository, pushing with KEY."""
    if "@" not in destination:
        raise UserError(f"{destination!r}: give the production account as USER@HOST")
    url = f"{destination}:{repo}"
    current = _git(checkout, "remote", "get-url", name, check=False)
    if current == url:
        change = "unchanged"
    else:
        _git(checkout, "remote", "set-url" if current else "add", name, url)
        change = "updated" if current else "added"
    ssh = f"ssh -i {shlex.quote(str(key.resolve()))} -o IdentitiesOnly=yes"
    _git(checkout, "config", "core.sshCommand", ssh)
    return f"{change}: remote {name} -> {url} (key {key})"


def _git(checkout: Path, *args: str, check: bool = True) -> str:
    """Run git in the checkout; with check=False a failure gives ''."""
    done = subprocess.run(["git", *args], cwd=checkout, capture_output=True,  # noqa: S603,S607
                          text=True, check=False)
    if done.returncode != 0:
        if check:
            raise UserError(f"git {' '.join(args)}: {done.stderr.strip()}")
        return ""
    return done.stdout.strip()
