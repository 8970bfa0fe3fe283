"""The images built on the engine (tests/conftest.py starts it) and one Compose project."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from containers.engine import (
    CACHE,
    IMAGE,
    Engine,
    build_image,
    ensure_base_images,
    ensure_wheelhouse,
)
from containers.project import Project
from modelserve.model.runtime import ModelRuntime


@dataclass(frozen=True)
class Images:
    """The images a test stack runs, and how long ours took to build."""

    base: str
    broker: str
    modelserve: str
    build_seconds: float


@pytest.fixture(scope="session")
def images(engine: Engine) -> Images:
    """Base and broker images (debootstrap, cached) and our image (Docker's layer cache)."""
    started = time.monotonic()
    base, broker = ensure_base_images(engine, CACHE)
    wheelhouse = ensure_wheelhouse(CACHE)
    print(f"\nbase images ready in {time.monotonic() - started:.0f} s")
    seconds = build_image(engine, base, wheelhouse)
    print(f"image {IMAGE} built in {seconds:.0f} s")
    return Images(base, broker, IMAGE, seconds)


@pytest.fixture(scope="module")
def project(engine: Engine, images: Images, shared_data: Path):
    """A Compose project of our own name with the production seed model in its volume."""
    stack = Project(engine, f"msct{secrets.token_hex(3)}", images.modelserve, images.broker)
    try:
        stack.put_model(shared_data)
        stack.create_token()
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="session")
def production_probability(legacy_bundle: Path) -> float:
    """What the production seed model answers for the test row (scored in this process)."""
    import numpy as np
    from serving.stack_helpers import ROW

    runtime = ModelRuntime.load(legacy_bundle)
    return float(runtime.score(np.asarray([ROW], dtype=np.float32)).probabilities[0])
