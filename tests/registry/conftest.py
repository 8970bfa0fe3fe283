"""Fixtures for the registry tests: small bundles without TensorFlow, and subprocesses.

Test modules use these through fixtures only: importing `conftest` by name would pick up
whichever conftest.py pytest loaded last.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelserve.fsutil import sha256_file
from modelserve.model.bundle import (
    FORMAT,
    MODEL_FILE,
    compute_version,
    verify_integrity,
    write_manifest,
)
from modelserve.registry import Registry

FEATURES = [{"name": f"f{index}"} for index in range(8)]


def bundle_manifest(model_bytes: bytes, number: int, **extra: Any) -> dict[str, Any]:
    """Return a manifest for a bundle whose model file holds model_bytes."""
    return {
        "format": FORMAT,
        "created_at": f"2026-01-01T00:00:{number % 60:02d}+00:00",
        "input": {"features": FEATURES},
        "output": {"name": "diabetic", "labels": ["no", "yes"]},
        "metrics": {
            "accuracy": 0.70 + number / 1000,
            "roc_auc": 0.80,
            "log_loss": 0.5,
            "confusion_matrix": [[50, 10], [12, 28]],
        },
        "files": {
            MODEL_FILE: {
                "sha256": hashlib.sha256(model_bytes).hexdigest(),
                "bytes": len(model_bytes),
            }
        },
        "source": {"kind": "test"},
        **extra,
    }


def make_bundle(directory: Path, number: int, **extra: Any) -> str:
    """Write a TensorFlow-free bundle (arbitrary model bytes) and return its version."""
    directory.mkdir(parents=True)
    model_bytes = f"model number {number}\n".encode() * 100
    (directory / MODEL_FILE).write_bytes(model_bytes)
    manifest = bundle_manifest(model_bytes, number, **extra)
    assert manifest["files"][MODEL_FILE]["sha256"] == sha256_file(directory / MODEL_FILE)
    return write_manifest(directory, manifest)["version"]


def integrity_checker(staged: Path) -> None:
    """Refuse what verify_integrity refuses; stands in for the (slow) TensorFlow load check."""
    verify_integrity(staged)


class Bundles:
    """Make numbered bundles under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def make(self, number: int, **extra: Any) -> tuple[Path, str]:
        """Write bundle `number` and return its path and version."""
        path = self.root / f"bundle-{number}"
        return path, make_bundle(path, number, **extra)

    def make_at(self, path: Path, number: int, **extra: Any) -> str:
        """Write bundle `number` at a given path and return its version."""
        return make_bundle(path, number, **extra)

    def colliding_pair(self) -> tuple[tuple[Path, str], tuple[Path, str]]:
        """Write two bundles whose versions share their first four characters."""
        extra_a, extra_b = colliding_extras()
        path_a, path_b = self.root / "collide-a", self.root / "collide-b"
        return (path_a, make_bundle(path_a, 0, **extra_a)), (
            path_b,
            make_bundle(path_b, 0, **extra_b),
        )


@pytest.fixture
def bundles(tmp_path: Path) -> Bundles:
    return Bundles(tmp_path / "bundles")


@pytest.fixture
def registry_root(tmp_path: Path) -> Path:
    return tmp_path / "home" / "registry"


@pytest.fixture
def checker() -> Callable[[Path], None]:
    return integrity_checker


@pytest.fixture
def registry(registry_root: Path) -> Registry:
    return Registry(registry_root, checker=integrity_checker)


@pytest.fixture
def spawn() -> Callable[..., subprocess.Popen[str]]:
    return start_python


def colliding_extras(prefix_length: int = 4) -> tuple[dict[str, Any], dict[str, Any]]:
    """Find two manifest variants whose versions share their first prefix_length characters."""
    model_bytes = f"model number {0}\n".encode() * 100
    seen: dict[str, dict[str, Any]] = {}
    for nonce in range(200_000):
        extra = {"notes": f"nonce {nonce}"}
        prefix = compute_version(bundle_manifest(model_bytes, 0, **extra))[:prefix_length]
        if prefix in seen:
            return seen[prefix], extra
        seen[prefix] = extra
    raise AssertionError("no collision found")


# Python code a subprocess runs before its own: a Registry on argv[1] with the test checker.
SUBPROCESS_PRELUDE = """
import sys, time
from collections.abc import Callable
from pathlib import Path
from modelserve.model.bundle import verify_integrity
from modelserve.registry import Registry

def integrity_checker(staged):
    verify_integrity(staged)

root = Path(sys.argv[1])
"""


def start_python(code: str, *args: str) -> subprocess.Popen[str]:
    """Start `python -c PRELUDE+code root args...` with the venv's interpreter."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-c", SUBPROCESS_PRELUDE + code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
