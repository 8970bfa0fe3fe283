"""Model files deployed before: a push that brings them back is a revert, not a new model."""

from __future__ import annotations

import json
from pathlib import Path

from modelserve.config import Settings
from modelserve.delivery.config import delivery_dir
from modelserve.fsutil import atomic_write_text


def _failed_path(settings: Settings) -> Path:
    """The model files whose activation failed: the next push deploys them again."""
    return delivery_dir(settings) / "failed.json"


def _path(settings: Settings) -> Path:
    """The map from an id of pushed model files (their git blob ids) to the version it became."""
    return delivery_dir(settings) / "deployed.json"


def _key(settings: Settings, name: str, files_id: str) -> str:
    """A model's files in the map: the default model's as a one-model home wrote them."""
    return files_id if name == settings.model_name else f"{name}/{files_id}"


def _read(settings: Settings) -> dict[str, str]:
    """The whole map; empty before the first deployment."""
    path = _path(settings)
    return json.loads(path.read_text()) if path.is_file() else {}


def _write(settings: Settings, known: dict[str, str]) -> None:
    """Replace the map atomically."""
    atomic_write_text(_path(settings), json.dumps(known, indent=1, sort_keys=True) + "\n")


def version_deployed_from(settings: Settings, name: str, files_id: str) -> str | None:
    """The version these model files became for this model, if they were deployed before."""
    return _read(settings).get(_key(settings, name, files_id))


def remember(settings: Settings, name: str, files_id: str, version: str) -> None:
    """Record that these model files went live as this version (under the activation lock)."""
    known, key = _read(settings), _key(settings, name, files_id)
    if known.get(key) != version:
        known[key] = version
        _write(settings, known)
    _clear_failed(settings, key)


def mark_failed(settings: Settings, name: str, files_id: str) -> None:
    """Record that these model files were accepted but did not go live (tried again next push)."""
    failed = set(_failed(settings)) | {_key(settings, name, files_id)}
    atomic_write_text(_failed_path(settings), json.dumps(sorted(failed)) + "\n")


def failed_before(settings: Settings, name: str, files_id: str) -> bool:
    """Tell whether these model files were accepted once and did not go live."""
    return _key(settings, name, files_id) in _failed(settings)


def _clear_failed(settings: Settings, key: str) -> None:
    """Drop a failure record once the files went live."""
    failed = _failed(settings)
    if key in failed:
        failed.remove(key)
        atomic_write_text(_failed_path(settings), json.dumps(sorted(failed)) + "\n")


def _failed(settings: Settings) -> list[str]:
    """Every failure record."""
    path = _failed_path(settings)
    return json.loads(path.read_text()) if path.is_file() else []
