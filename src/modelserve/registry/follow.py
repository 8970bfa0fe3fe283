"""Follow production's registry from a worker host: serve every model production serves.

A worker host has a registry root of its own (its workers follow each model's `active` link,
batch by batch). `modelserve models follow SOURCE` copies production's whole root into a
mirror with rsync (over SSH: a read-only key, see the Ansible worker role): the default
model's versions/ and active link at the root, every other model's under models/<name>/.
Then, model by model, it registers here the version production serves (checked like any
`models add`, creating a model that is new here) and activates it, and retires here a model
production has retired. A model that fails is reported and does not stop the others.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from modelserve.errors import UserError
from modelserve.registry.catalog import Catalog

Say = Callable[[str], None]
# What a follower copies: each model's stored versions and the link naming its live one, for
# the default model at the root and for every model under models/. Staging areas, locks and
# histories stay production's own (`*` never matches a `/`, so nothing deeper slips through).
COPIED = (
    "--include=/active", "--include=/versions/***",
    "--include=/models/", "--include=/models/*/",
    "--include=/models/*/active", "--include=/models/*/versions/***",
    "--exclude=*",
)
REASON = "production serves it"


@dataclass(frozen=True)
class FollowRound:
    """What one round left: the version served here per model, and the models that failed."""

    serving: dict[str, str]
    failed: dict[str, str] = field(default_factory=dict)  # model -> why, in one line


def mirror_registry(source: str, mirror: Path, ssh_key: Path | None = None) -> None:
    """Copy production's versions and active links into the mirror (rsync, deletions included)."""
    mirror.mkdir(parents=True, exist_ok=True)
    argv = ["rsync", "--archive", "--delete", "--timeout=30", *COPIED]
    if ssh_key:
        argv += ["--rsh", f"ssh -i {ssh_key} -o IdentitiesOnly=yes -o BatchMode=yes"]
    done = subprocess.run([*argv, source, f"{mirror}/"], capture_output=True, text=True,  # noqa: S603
                          timeout=600, check=False)
    if done.returncode != 0:
        last_line = (done.stderr.strip().splitlines() or [f"rsync exited {done.returncode}"])[-1]
        raise UserError(f"cannot copy {source}: {last_line}")


def follow_once(source: str, mirror: Path, catalog: Catalog, say: Say,
                ssh_key: Path | None = None) -> FollowRound:
    """One round: copy, then bring each of production's models here in line with it."""
    mirror_registry(source, mirror, ssh_key)
    # The mirror has production's layout, read with this home's default name: a follower is
    # configured with production's MODELSERVE_MODEL_NAME (the deploy passes the same one).
    production = Catalog(mirror, catalog.default_name)
    wanted = production.served()
    failed: dict[str, str] = {}
    for name in production.names():
        try:
            _follow_model(name, wanted.get(name), production, catalog, source, say)
        except UserError as error:
            failed[name] = str(error)
    return FollowRound(catalog.served(), failed)


def _follow_model(name: str, version: str | None, production: Catalog, catalog: Catalog,
                  source: str, say: Say) -> None:
    """Serve here the version production serves of one model, or retire it as production did."""
    if version is None:
        # Only a model production has and does not serve is retired: a model production does
        # not have at all is left alone, so a wrong (empty) SOURCE retires nothing.
        if catalog.exists(name) and catalog.registry(name).active_version():
            was = catalog.registry(name).retire(source=f"follow {source}",
                                                reason="production retired it")
            say(f"{name}: retired (was serving {was}), as production did")
        return
    registry = catalog.registry_for_new(name)
    if registry.active_version() == version:
        return
    registry.add(production.path_of(name) / "versions" / version, source=f"follow {source}",
                 reason=REASON)
    registry.activate(version, source=f"follow {source}", reason=REASON)
    say(f"{name}: now serving {version}, as production does")


def follow(source: str, mirror: Path, catalog: Catalog, say: Say, every: float,
           ssh_key: Path | None = None) -> None:
    """Follow forever; a failed round or model is reported and retried, never fatal."""
    reported: dict[str, str] = {}
    while True:
        try:
            failed = follow_once(source, mirror, catalog, say, ssh_key).failed
        except UserError as error:
            failed = {"": str(error)}
        # Say a failure when it starts or changes, not every few seconds while it lasts.
        for name, why in failed.items():
            if reported.get(name) != why:
                say(f"follow: {name + ': ' if name else ''}{why}; retrying every {every:g} s")
        reported = failed
        time.sleep(every)
