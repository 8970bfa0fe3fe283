"""Model trees deployed before: a push that brings one back is a revert, not a new model."""

from __future__ import annotations

import json
from pathlib import Path

from modelserve.config import Settings
from modelserve.delivery.config import delivery_dir
from modelserve.fsutil import atomic_write_text


def _path(settings: Settings) -> Path:
    """The map from git tree id (the pushed model folder) to the version it became."""
    return delivery_dir(settings) / "deployed.json"


def _read(settings: Settings) -> dict[str, str]:
    """The whole map; empty before the first deployment."""
    path = _path(settings)
    return json.loads(path.read_text()) if path.is_file() else {}


def version_deployed_from(settings: Settings, tree: str) -> str | None:
    """The version a model folder with this git tree id became, if it was deployed before."""
    return _read(settings).get(tree)


def remember(settings: Settings, tree: str, version: str) -> None:
    """Record that this tree went live as this version (called under the activation lock)."""
    known = _read(settings)
    if known.get(tree) != version:
        known[tree] = version
        atomic_write_text(_path(settings), json.dumps(known, indent=1, sort_keys=True) + "\n")
