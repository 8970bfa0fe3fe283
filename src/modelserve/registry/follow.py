"""Follow production's registry from a worker host: serve the version production serves.

A worker host has a registry of its own (its workers follow its `active` link, batch by batch).
`modelserve models follow SOURCE` copies production's versions and active link into a mirror
with rsync (over SSH: a read-only key, see the Ansible worker role), registers the active one
here (checked like any `models add`) and activates it.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from modelserve.errors import UserError
from modelserve.registry.store import Registry

Say = Callable[[str], None]
# What a follower copies: the stored versions and the link naming the live one. Staging areas,
# the lock and the history stay production's own.
COPIED = ("--include=/active", "--include=/versions/***", "--exclude=*")


def mirror_registry(source: str, mirror: Path, ssh_key: Path | None = None) -> None:
    """Copy production's versions and active link into the mirror (rsync, deletions included)."""
    mirror.mkdir(parents=True, exist_ok=True)
    argv = ["rsync", "--archive", "--delete", "--timeout=30", *COPIED]
    if ssh_key:
        argv += ["--rsh", f"ssh -i {ssh_key} -o IdentitiesOnly=yes -o BatchMode=yes"]
    done = subprocess.run([*argv, source, f"{mirror}/"], capture_output=True, text=True,  # noqa: S603
                          timeout=600, check=False)
    if done.returncode != 0:
        last_line = (done.stderr.strip().splitlines() or [f"rsync exited {done.returncode}"])[-1]
        raise UserError(f"cannot copy {source}: {last_line}")


def follow_once(source: str, mirror: Path, registry: Registry, say: Say,
                ssh_key: Path | None = None) -> str | None:
    """One round: copy, then register and activate production's active version if it moved."""
    mirror_registry(source, mirror, ssh_key)
    version = Registry(mirror).active_version()  # the copied link, read as any registry's
    if version is None or version == registry.active_version():
        return version
    registry.add(mirror / "versions" / version, source=f"follow {source}",
                 reason="production serves it")
    registry.activate(version, source=f"follow {source}", reason="production serves it")
    say(f"now serving {version}, as production does")
    return version


def follow(source: str, mirror: Path, registry: Registry, say: Say, every: float,
           ssh_key: Path | None = None) -> None:
    """Follow forever; a failed round is reported and retried, never fatal."""
    while True:
        try:
            follow_once(source, mirror, registry, say, ssh_key)
        except UserError as error:
            say(f"follow: {error}; retrying in {every:g} s")
        time.sleep(every)
