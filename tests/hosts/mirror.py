"""A wheel and data mirror for hosts that cannot reach PyPI: an HTTP server on the engine's network.

Containers here reach the Debian mirror but not PyPI (TLS to it is intercepted with a
certificate they do not trust), as in an air-gapped cloud with a wheel mirror: the user-data
installs with `--find-links http://MIRROR/wheels/ --no-index` and fetches the dataset from it.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import sys
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

from containers.engine import REPO, ensure_wheelhouse, run
from serving.stack_helpers import http_server


def source_hash() -> str:
    """A hash of everything that goes into our own wheel."""
    digest = hashlib.sha256()
    files = [REPO / "pyproject.toml", *sorted((REPO / "src").rglob("*"))]
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def own_wheel(cache: Path) -> Path:
    """Build modelserve's wheel from the checkout (once per source hash); return its path."""
    target = cache / "own-wheel" / source_hash()
    wheels = sorted(target.glob("modelserve-*.whl"))
    if wheels:
        return wheels[0]
    shutil.rmtree(target.parent, ignore_errors=True)  # wheels of older sources
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(target), str(REPO)],
        timeout=600)
    return next(target.glob("modelserve-*.whl"))


def stage_mirror(cache: Path, into: Path, files: dict[str, Path]) -> Path:
    """Lay out the mirror: wheels/ (dependencies and ours) and the named files; return it."""
    wheels = into / "wheels"
    wheels.mkdir(parents=True)
    for wheel in [*ensure_wheelhouse(cache).glob("*.whl"), own_wheel(cache)]:
        (wheels / wheel.name).symlink_to(wheel)
    for name, source in files.items():
        (into / name).symlink_to(source)
    return into


class QuietHandler(SimpleHTTPRequestHandler):
    """Serve files without a log line per request (pip asks for hundreds)."""

    def log_message(self, format: str, *args: object) -> None:
        """Say nothing."""


def serve(folder: Path, address: str):
    """Serve a folder over HTTP on address (a free port) while in the block; yield its URL."""
    return http_server(functools.partial(QuietHandler, directory=str(folder)), address)
