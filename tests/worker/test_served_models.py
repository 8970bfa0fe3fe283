"""A worker's models by name: loaded on first use, at most `capacity`, least recently used out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelserve.errors import UserError
from modelserve.model.check import check_bundle
from modelserve.registry.catalog import Catalog
from modelserve.worker.active import NoActiveModel, ServedModels


def check_here(staged: Path) -> None:
    """The sandbox's check and plan, in this process (the seed model is our test data)."""
    check_bundle(staged, plan_out=staged / "plan.npz")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory, legacy_bundle: Path,
            development_bundle: Path) -> Catalog:
    """Three models (the seed model under three names), each with its version active; the
    default model also stores the development seed, not active."""
    catalog = Catalog(tmp_path_factory.mktemp("served") / "registry", "diabetes", check_here)
    for name in ("diabetes", "iris", "wine"):
        registry = catalog.registry_for_new(name)
        registry.activate(registry.add(legacy_bundle, source="test").version, source="test")
    catalog.registry("diabetes").add(development_bundle, source="test")
    return catalog


def test_models_load_on_first_use_and_the_least_recently_used_goes(catalog: Catalog) -> None:
    served = ServedModels(catalog, capacity=2)
    assert served.loaded() == []
    rows = np.zeros((2, 8), np.float32)
    first = served.current("iris")
    assert first.score(rows).outputs.shape == (2, 1)
    served.current("wine")
    served.current("iris")  # iris is now the most recently used
    served.current("diabetes")
    assert served.loaded() == ["iris", "diabetes"]  # wine went, not iris
    assert served.current("iris") is first  # still the loaded runtime, not a reload
    assert served.current("") is served.current("diabetes")  # "" is the default model


def test_an_unknown_model_is_refused_naming_the_models(catalog: Catalog) -> None:
    served = ServedModels(catalog, capacity=2)
    with pytest.raises(NoActiveModel, match="no model named 'cancer'; the models here: "
                                            "diabetes, iris, wine"):
        served.current("cancer")
    assert served.loaded() == []


def test_a_named_version_is_served_beside_the_active_one(catalog: Catalog) -> None:
    """A rollout's candidate: loaded apart, its own answers; the active one is untouched."""
    served = ServedModels(catalog, capacity=1)
    registry = catalog.registry("diabetes")
    active = registry.active_version()
    other = next(info.version for info in registry.list_versions() if info.version != active)
    rows = np.random.default_rng(3).uniform(0, 100, (16, 8)).astype(np.float32)
    live = served.current("diabetes")
    candidate = served.current("diabetes", other)
    assert (live.version, candidate.version) == (active, other)
    assert not np.array_equal(live.score(rows).outputs, candidate.score(rows).outputs)
    assert served.current("diabetes", other) is candidate  # loaded once
    assert served.current("diabetes", active) is live  # the active one by name: the same
    assert served.loaded() == ["diabetes"]  # a candidate takes no live model's place
    with pytest.raises(UserError, match="unknown model version 'abcdef'"):
        served.current("diabetes", "abcdef")
    with pytest.raises(NoActiveModel, match="only a longer one"):
        served.current("diabetes", other[:8])
