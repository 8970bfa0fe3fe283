"""A real serving stack for the serving tests: RabbitMQ, Celery workers, gunicorn."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli
from playwright.sync_api import sync_playwright
from tiers import needs

from modelserve.model.runtime import ModelRuntime
from modelserve.registry import Registry
from serving.stack_helpers import RunningStack, running_stack, start_stack
from serving.task_stack import TaskStack

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


# Homes prepared once per session, by (data, dataset, seeds), copied into each test's home: every
# import-legacy checks its model in the sandbox (TensorFlow starts, ~20 s a seed), and a copy of a
# home whose checks ran is the same bytes those checks would write again (nothing in it names
# the home's own path). A template of n seeds is the one of n-1 plus the last seed, so a seed
# is checked once per session whatever mix of seed lists the tests ask for; one with a seed
# activated is the one without plus that `models activate`.
_PREPARED: dict[tuple[Path, Path, tuple[str, ...], str | None], Path] = {}
_PREPARED_ROOT: list[Path] = []


def prepare_home(home: Path, shared_data: Path, pima_csv: Path, seeds=("production",),
                 active: str | None = None) -> None:
    """A MODELSERVE_HOME with the dataset and the given seed models registered (and the seed
    named by active activated)."""
    template = _prepared(Path(shared_data), Path(pima_csv), tuple(seeds), active)
    shutil.copytree(template, home, symlinks=True, dirs_exist_ok=True)


def _prepared(shared_data: Path, pima_csv: Path, seeds: tuple[str, ...],
              active: str | None = None) -> Path:
    """The session's template home of the dataset and these seeds, made on first use."""
    key = (shared_data, pima_csv, seeds, active)
    if key not in _PREPARED:
        _PREPARED[key] = _make_template(shared_data, pima_csv, seeds, active)
    return _PREPARED[key]


def _make_template(shared_data: Path, pima_csv: Path, seeds: tuple[str, ...],
                   active: str | None) -> Path:
    """A template home: the one of one step less, plus that step (activate, add, data)."""
    if active is not None:
        home = _new_template(_prepared(shared_data, pima_csv, seeds))
        result = run_cli("models", "activate", version_of_seed(home, active), home=home)
    elif seeds:
        home = _new_template(_prepared(shared_data, pima_csv, seeds[:-1]))
        seed = shared_data / "seed-model" / seeds[-1]
        result = run_cli("model", "import-legacy", seed / "model.json", seed / "model.h5",
                         home=home)
    else:
        home = _new_template(None)
        result = run_cli("data", "import", pima_csv, home=home)
    assert result.returncode == 0, result.stderr
    return home


def _new_template(start: Path | None) -> Path:
    """A new template home's path: a copy of start, or not made yet (removed at exit)."""
    if not _PREPARED_ROOT:
        _PREPARED_ROOT.append(Path(tempfile.mkdtemp(prefix="modelserve-seed-homes-")))
        atexit.register(shutil.rmtree, _PREPARED_ROOT[0], ignore_errors=True)
    home = Path(tempfile.mkdtemp(dir=_PREPARED_ROOT[0])) / "home"
    if start is not None:
        shutil.copytree(start, home, symlinks=True)
    return home


@pytest.fixture(scope="session")
@needs("root (the model sandbox checks the seed models it registers)")
def serving_home(tmp_path_factory, shared_data: Path, pima_csv: Path) -> Path:
    """A home with the production and development seed models; production is active."""
    home = tmp_path_factory.mktemp("serving") / "home"
    prepare_home(home, shared_data, pima_csv, ("production", "development"), active="production")
    return home


def version_of_seed(home: Path, name: str) -> str:
    """The registry version converted from a seed model (matched by its source file)."""
    for event in Registry(home / "registry").history():
        if event["action"] == "add" and f"seed-model/{name}/" in event.get("source", ""):
            return event["version"]
    raise AssertionError(f"seed model {name} not found in the history")


@pytest.fixture(scope="session")
def versions(serving_home: Path) -> dict[str, str]:
    """Version ids of the two seed models, by seed name."""
    return {name: version_of_seed(serving_home, name)
            for name in ("production", "development")}


@pytest.fixture(scope="session")
@needs("the serving stack (RabbitMQ, Celery workers, gunicorn)")
def stack(serving_home: Path):
    """One shared stack with two workers; tests must leave production active."""
    with running_stack(serving_home, workers=2) as running:
        yield running


@pytest.fixture(scope="session")
def runtimes(serving_home: Path, versions: dict[str, str]) -> dict[str, ModelRuntime]:
    """The runtimes of both versions, loaded in the test process: the expected answers."""
    registry = Registry(serving_home / "registry")
    return {version: ModelRuntime.load(registry.get(version).path)
            for version in versions.values()}


@pytest.fixture(scope="session")
@needs("Chromium")
def browser():
    """One headless Chromium for the whole session (launch() gives it a fresh profile)."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


def expected(runtime: ModelRuntime, rows) -> np.ndarray:
    """The probabilities a version must answer for these rows."""
    return runtime.score(np.asarray(rows, dtype=np.float32)).probabilities


def as_json(response) -> dict:
    """Decode a JSON answer, showing the body when it is not JSON."""
    try:
        return json.loads(response.body)
    except ValueError:
        raise AssertionError(f"not JSON ({response.status}): {response.body[:300]!r}") from None


__all__ = ["RunningStack", "as_json", "expected", "prepare_home", "version_of_seed"]


@pytest.fixture(scope="session")
@needs("model training")
def task_models(tmp_path_factory) -> TaskStack:
    """A home with an iris and a diabetes model trained for a few epochs, iris live."""
    return TaskStack(tmp_path_factory.mktemp("tasks"))


@pytest.fixture(scope="session")
@needs("the serving stack (RabbitMQ, Celery workers, gunicorn)")
def task_stack(task_models: TaskStack) -> Iterator[TaskStack]:
    """One stack over that home for the pages' and tritonclient's task tests."""
    running = start_stack(task_models.home, "--workers", "1")
    try:
        running.wait_ready(workers=1)
        task_models.running = running
        yield task_models
    finally:
        running.stop()
