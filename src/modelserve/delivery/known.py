"""Model files deployed before: a push that brings them back is a revert, not a new model."""

from __future__ import annotations

import json
from pathlib import Path

from modelserve.config import Settings
from modelserve.delivery.config import delivery_dir
from modelserve.fsutil import atomic_write_text


def _path(settings: Settings) -> Path:
    """The map from an id of pushed model files (their git blob ids) to the version it became."""
    return delivery_dir(settings) / "deployed.json"


def _read(settings: Settings) -> dict[str, str]:
    """The whole map; empty before the first deployment."""
    path = _path(settings)
    return json.loads(path.read_text()) if path.is_file() else {}


def version_deployed_from(settings: Settings, files_id: str) -> str | None:
    """The version these model files became, if they were deployed before."""
    return _read(settings).get(files_id)


def remember(settings: Settings, files_id: str, version: str) -> None:
    """Record that these model files went live as this version (under the activation lock)."""
    known = _read(settings)
    if known.get(files_id) != version:
        known[files_id] = version
        atomic_write_text(_path(settings), json.dumps(known, indent=1, sort_keys=True) + "\n")
