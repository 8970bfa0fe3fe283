"""A switch to a model that runs through Keras loads in the background; plan models at once."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from keras_models import functional_iris, sequential_iris

from modelserve.model.check import check_bundle
from modelserve.model.dataset import parse_table_file
from modelserve.model.importing import import_model
from modelserve.registry import Registry
from modelserve.worker.active import ActiveModel

pytestmark = pytest.mark.slow  # Keras training


def check_here(staged: Path) -> None:
    """The sandbox's check and plan, run in this process (we made the models ourselves)."""
    check_bundle(staged, plan_out=staged / "plan.npz")


def bundle_of(made, out: Path) -> Path:
    """A bundle of a saved Keras model, as `model import` makes it."""
    table = parse_table_file(made.csv, made.label)
    import_model(made.path, table, out, model_shown="model.keras", data_shown="iris.csv")
    return out


def test_the_old_version_answers_until_a_keras_version_has_loaded(tmp_path: Path):
    """No batch waits for TensorFlow: the plan model answers, then the Keras one takes over."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    plan_made = sequential_iris(tmp_path / "a")
    keras_made = functional_iris(tmp_path / "b")
    registry = Registry(tmp_path / "registry", checker=check_here)
    plan_version = registry.add(bundle_of(plan_made, tmp_path / "plan"), source="test").version
    keras_version = registry.add(bundle_of(keras_made, tmp_path / "keras"), source="test").version
    assert registry.get(plan_version).runtime == "plan"
    assert registry.get(keras_version).runtime == "keras"
    registry.activate(plan_version, source="test")
    active = ActiveModel(tmp_path / "registry")
    assert active.current().version == plan_version
    registry.activate(keras_version, source="test")
    rows = keras_made.held_out
    served = [active.current().version]  # the switch is seen: the load starts, the old answers
    deadline = time.monotonic() + 120
    while served[-1] != keras_version and time.monotonic() < deadline:
        served.append(active.current().score(rows).version)
        time.sleep(0.01)
    assert served[0] == plan_version and served[-1] == keras_version, served[-3:]
    got = active.current().score(rows).outputs
    assert np.max(np.abs(got - keras_made.keras_outputs(rows))) <= 1e-5
    registry.activate(plan_version, source="test")
    assert active.current().version == plan_version  # back to a plan model: in this very call
