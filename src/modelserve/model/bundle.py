"""The bundle format: a directory holding model.keras and manifest.json.

The manifest names the input contract, the output, held-out metrics, provenance and the
sha256 of every file; its canonical JSON, hashed, is the bundle's version id. This module
never imports Keras, so the registry and the delivery gate can read bundles cheaply.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelserve.errors import UserError
from modelserve.fsutil import atomic_write_text, sha256_file
from modelserve.model.spec import SHOWN_CHARS, ModelSpec, SpecError, read_spec

FORMAT = "modelserve.bundle/1"
MODEL_FILE = "model.keras"
MANIFEST_FILE = "manifest.json"
VERSION_LENGTH = 12
MAX_MANIFEST_BYTES = 1 << 20
REQUIRED_KEYS = ("format", "version", "created_at", "input", "output", "metrics", "files")


class BundleError(UserError):
    """A bundle that cannot be used; the message is one line meant for the user."""


def canonical_json(value: Any) -> bytes:
    """Serialize deterministically, so that equal manifests hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def compute_version(manifest: Mapping[str, Any]) -> str:
    """Return the content hash of a manifest (which itself holds every file's sha256)."""
    body = {key: value for key, value in manifest.items() if key != "version"}
    return hashlib.sha256(canonical_json(body)).hexdigest()[:VERSION_LENGTH]


def read_manifest(bundle: Path) -> dict[str, Any]:
    """Load and validate a bundle's manifest: the document itself."""
    return dict(read_bundle_spec(bundle).document)


def read_bundle_spec(bundle: Path) -> ModelSpec:
    """Load a bundle's manifest and read it, validated, into its spec."""
    path = Path(bundle) / MANIFEST_FILE
    if not Path(bundle).is_dir():
        why = "it is a file" if Path(bundle).exists() else "it does not exist"
        raise BundleError(f"{bundle}: not a bundle directory ({why})")
    if path.is_symlink():
        raise BundleError(f"{bundle}: {MANIFEST_FILE} is a symbolic link; a bundle holds its files")
    if not path.is_file():
        raise BundleError(f"{bundle}: {MANIFEST_FILE} is missing")
    return validate_manifest(read_json(path, MAX_MANIFEST_BYTES), path)


def read_json(path: Path, max_bytes: int) -> Any:
    """Read a JSON file, refusing a missing, oversized or malformed one with one line."""
    if not path.is_file():
        raise BundleError(f"{path}: no such file")
    if path.stat().st_size > max_bytes:
        raise BundleError(f"{path}: larger than {max_bytes} bytes")
    try:
        # NaN, Infinity and 1e999 are not JSON, and no version could be computed over them.
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=_not_a_number,
                          parse_float=_finite_float)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:  # JSONDecodeError too
        reason = str(error) if not isinstance(error, RecursionError) else "nested too deeply"
        raise BundleError(f"{path}: not valid JSON ({reason})") from None


def _not_a_number(name: str) -> float:
    """Refuse NaN and Infinity, which Python's json reads but JSON does not have."""
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    """Read a JSON number, refusing one too large for a float."""
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text[:SHOWN_CHARS]} is too large a number")
    return number


def validate_manifest(manifest: Any, where: Path | str = MANIFEST_FILE) -> ModelSpec:
    """Check the manifest (keys, format, features, task, examples, metrics, files): its spec."""
    if not isinstance(manifest, dict):
        raise BundleError(f"{where}: must be a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise BundleError(f"{where}: missing {', '.join(missing)}")
    try:
        spec = read_spec(manifest, str(where))
    except SpecError as error:
        raise BundleError(str(error)) from None
    if MODEL_FILE not in spec.files:
        raise BundleError(f"{where}: files must list {MODEL_FILE}")
    return spec


def verify_integrity(bundle: Path) -> ModelSpec:
    """Check every file against its recorded sha256 and the version against the content."""
    bundle = Path(bundle)
    spec = read_bundle_spec(bundle)
    manifest = spec.document
    for name, recorded in manifest["files"].items():
        _verify_file(bundle, name, recorded)
    expected = compute_version(manifest)
    if manifest["version"] != expected:
        raise BundleError(
            f"{bundle}: manifest version {manifest['version']!r} does not match its content "
            f"({expected}); the manifest was edited after the bundle was written"
        )
    return spec


def _verify_file(bundle: Path, name: str, recorded: Any) -> None:
    """Check one listed file: a plain name, present, with the recorded hash."""
    if Path(name).name != name or name.startswith("."):
        raise BundleError(f"{bundle}: file name {name!r} in the manifest is not a plain name")
    path = bundle / name
    if path.is_symlink():  # it may point anywhere: at another bundle's model, or /etc/shadow
        raise BundleError(f"{bundle}: {name} is a symbolic link; a bundle holds its files")
    if not path.is_file():
        raise BundleError(f"{bundle}: {name} is missing")
    if not isinstance(recorded, dict) or sha256_file(path) != recorded.get("sha256"):
        raise BundleError(f"{bundle}: {name} does not match its sha256 in the manifest (corrupt?)")


def write_bundle(out_dir: Path, model: Any, manifest: dict[str, Any]) -> dict[str, Any]:
    """Save a Keras model and its manifest into out_dir; return the completed manifest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / MODEL_FILE
    _save_model_atomically(model, model_path)
    manifest = dict(manifest, format=manifest.get("format", FORMAT))
    manifest["files"] = {
        MODEL_FILE: {"sha256": sha256_file(model_path), "bytes": model_path.stat().st_size}
    }
    return write_manifest(out_dir, manifest)


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Stamp the content version on a manifest and write it atomically."""
    manifest = dict(manifest)
    manifest["version"] = compute_version(manifest)
    validate_manifest(manifest)
    text = json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n"
    atomic_write_text(Path(out_dir) / MANIFEST_FILE, text)
    return manifest


def _save_model_atomically(model: Any, path: Path) -> None:
    """Save through a temporary file so a crash never leaves a half-written model."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".model.", suffix=".keras")
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
