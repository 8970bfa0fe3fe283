"""Shared fixtures: the real dataset and seed models, trained bundles, and the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from containers.engine import CACHE, EngineUnavailable, exclusive, start_engine, stop_engine
from tiers import needs

from modelserve.model.dataset import Dataset, load_dataset

# hosts.fixtures: the fresh hosts (tests/hosts) the sandbox's systemd test shares too.
pytest_plugins = ["reliability_report", "tiers", "hosts.fixtures"]

REPO = Path(__file__).resolve().parents[1]
DATA_FILE = "pima-indians-diabetes.csv"
TEST_EPOCHS = 15


def _find_shared_data() -> Path:
    """Locate the shared test data: MODELSERVE_TEST_DATA, else ../shared/data beside the repo."""
    configured = os.environ.get("MODELSERVE_TEST_DATA")
    return Path(configured) if configured else REPO.parent / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    """Fail the whole run, never skip, when the shared test data is missing."""
    data = _find_shared_data()
    needed = [data / DATA_FILE, data / "seed-model" / "production" / "model.h5"]
    missing = [str(path) for path in needed if not path.is_file()]
    if missing:
        raise pytest.UsageError(
            f"test data missing: {', '.join(missing)}. Put the shared data beside the repository "
            "(../shared/data) or set MODELSERVE_TEST_DATA to its directory."
        )


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The directory holding the dataset and seed-model/."""
    return _find_shared_data()


@pytest.fixture(scope="session")
def pima_csv(shared_data: Path) -> Path:
    """The real Pima Indians Diabetes CSV."""
    return shared_data / DATA_FILE


@pytest.fixture(scope="session")
def dataset(pima_csv: Path) -> Dataset:
    """The validated dataset."""
    return load_dataset(pima_csv)


@pytest.fixture(scope="session")
@needs("model training")
def trained_bundle(tmp_path_factory: pytest.TempPathFactory, dataset: Dataset) -> Path:
    """A bundle trained for a few epochs (shared: treat as read-only)."""
    from modelserve.model.training import TrainingConfig, train_bundle

    out = tmp_path_factory.mktemp("trained") / "bundle"
    train_bundle(dataset, TrainingConfig(epochs=TEST_EPOCHS), out)
    return out


def _seed_bundle(out: Path, dataset: Dataset, shared_data: Path, seed_name: str) -> Path:
    """A seed model imported as a bundle with its checked plan."""
    from modelserve.model.check import check_bundle
    from modelserve.model.legacy import import_legacy

    seed = shared_data / "seed-model" / seed_name
    import_legacy(seed / "model.json", seed / "model.h5", dataset, out)
    check_bundle(out, plan_out=out / "plan.npz")  # as the registry does: scoring needs no Keras
    return out


@pytest.fixture(scope="session")
def legacy_bundle(tmp_path_factory: pytest.TempPathFactory, dataset: Dataset, shared_data: Path):
    """The production seed model as a bundle with its checked plan (shared: read-only)."""
    return _seed_bundle(tmp_path_factory.mktemp("legacy") / "bundle", dataset, shared_data,
                        "production")


@pytest.fixture(scope="session")
def development_bundle(tmp_path_factory: pytest.TempPathFactory, dataset: Dataset,
                       shared_data: Path):
    """The development seed model (another version of the same task), checked (read-only)."""
    return _seed_bundle(tmp_path_factory.mktemp("development") / "bundle", dataset,
                        shared_data, "development")


@pytest.fixture(scope="session")
@needs("Docker (its own dockerd, as root)")
def engine():
    """Our own dockerd for the session (containers and hosts share it); skip if it cannot start."""
    with exclusive(CACHE / "lock"):
        try:
            started = start_engine(CACHE / "docker")
        except EngineUnavailable as error:
            pytest.skip(f"the Docker engine cannot start on this machine: {error}")
        try:
            yield started
        finally:
            stop_engine(started)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private MODELSERVE_HOME for one test."""
    path = tmp_path / "home"
    monkeypatch.setenv("MODELSERVE_HOME", str(path))
    return path
