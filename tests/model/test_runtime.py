"""The inference runtime: the compiled plan computes what Keras does; bad rows are refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelserve.model.backend import import_keras
from modelserve.model.bundle import read_manifest, write_bundle
from modelserve.model.check import check_bundle
from modelserve.model.dataset import Dataset
from modelserve.model.runtime import InputError, ModelRuntime, load_keras_model

pytestmark = pytest.mark.slow


def _keras_outputs(bundle: Path, rows: np.ndarray) -> np.ndarray:
    """Outputs of the saved Keras model itself."""
    return np.asarray(load_keras_model(bundle / "model.keras")(rows, training=False)).ravel()


def test_compiled_plan_equals_keras_on_every_row(trained_bundle: Path, dataset: Dataset) -> None:
    """Without a cached plan the runtime compiles one, and it agrees with Keras."""
    runtime = ModelRuntime.load(trained_bundle)
    assert runtime.kind == "plan"
    scores = runtime.score(dataset.features)
    expected = _keras_outputs(trained_bundle, dataset.features)
    assert np.abs(scores.probabilities - expected).max() <= 1e-5
    assert np.array_equal(scores.labels, (scores.probabilities >= 0.5).astype(np.int8))
    assert scores.version == read_manifest(trained_bundle)["version"]


def test_cached_plan_loads_without_tensorflow(
    trained_bundle: Path, dataset: Dataset, tmp_path: Path
) -> None:
    """A bundle with a checked plan.npz, trusted as a registry version's, is served by numpy."""
    bundle = Path(shutil.copytree(trained_bundle, tmp_path / "bundle"))
    check_bundle(bundle, plan_out=bundle / "plan.npz")
    rows = dataset.features[:50]
    script = (
        "import sys, json, numpy as np\n"
        "from modelserve.model.runtime import ModelRuntime\n"
        f"r = ModelRuntime.load({str(bundle)!r}, trust_cached_plan=True)\n"
        f"p = r.score(np.array({rows.tolist()!r}, dtype=np.float32)).probabilities\n"
        "print(json.dumps([r.kind, 'tensorflow' in sys.modules, p.tolist()]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    kind, imported_tensorflow, probabilities = json.loads(done.stdout)
    assert (kind, imported_tensorflow) == ("plan", False)
    assert np.abs(np.asarray(probabilities) - _keras_outputs(bundle, rows)).max() <= 1e-5


def test_plan_of_another_model_is_ignored(
    trained_bundle: Path, legacy_bundle: Path, dataset: Dataset, tmp_path: Path
) -> None:
    """A stale plan.npz (made from other weights) never answers for this model."""
    bundle = Path(shutil.copytree(trained_bundle, tmp_path / "bundle"))
    check_bundle(legacy_bundle, plan_out=bundle / "plan.npz")
    scores = ModelRuntime.load(bundle, trust_cached_plan=True).score(dataset.features[:20])
    expected = _keras_outputs(bundle, dataset.features[:20])
    assert np.abs(scores.probabilities - expected).max() <= 1e-5


@pytest.mark.parametrize("offset", [100, 2000, 3500])
def test_a_damaged_plan_is_ignored_and_the_model_loaded_instead(
    legacy_bundle: Path, dataset: Dataset, tmp_path: Path, offset: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Bytes overwritten in plan.npz (a bad CRC, a broken zip) mean Keras, not a crash."""
    bundle = Path(shutil.copytree(legacy_bundle, tmp_path / "bundle"))
    plan = bytearray((bundle / "plan.npz").read_bytes())
    plan[offset : offset + 16] = b"\xff" * 16
    (bundle / "plan.npz").write_bytes(plan)
    runtime = ModelRuntime.load(bundle, trust_cached_plan=True)
    assert runtime.kind in ("plan", "keras")  # compiled afresh from model.keras
    expected = _keras_outputs(bundle, dataset.features[:20])
    assert np.abs(runtime.score(dataset.features[:20]).probabilities - expected).max() <= 1e-5
    assert "plan.npz is damaged" in caplog.text


def test_layers_without_a_plan_run_as_a_traced_keras_function(
    trained_bundle: Path, dataset: Dataset, tmp_path: Path
) -> None:
    """A model the plan cannot express is still served, through one traced function."""
    keras = import_keras()
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(4, "relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(1, "sigmoid"),
        ]
    )
    manifest = read_manifest(trained_bundle)
    fields = {k: v for k, v in manifest.items() if k not in ("version", "files")}
    write_bundle(tmp_path / "b", model, fields)
    runtime = ModelRuntime.load(tmp_path / "b")
    assert runtime.kind == "keras"
    expected = np.asarray(model(dataset.features, training=False)).ravel()
    assert np.abs(runtime.score(dataset.features).probabilities - expected).max() <= 1e-6


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([[1.0] * 7], r"8 values each .*got shape \(1, 7\)"),
        ([1.0] * 8, r"got shape \(8,\)"),
        ([[1.0] * 7 + [float("nan")]], "row 1, age: nan is not a finite number"),
        ([[0.0] * 8, [float("inf")] + [0.0] * 7], "row 2, pregnancies: inf is not a finite number"),
        ([["a"] * 8], "numbers only"),
        ([[1.0] * 8, [1.0] * 5], "numbers only"),
    ],
    ids=["seven values", "flat row", "nan", "inf", "strings", "ragged"],
)
def test_bad_rows_are_refused(legacy_bundle: Path, rows: list, message: str) -> None:
    """Wrong shapes and non-finite or non-numeric values get a message naming the problem."""
    with pytest.raises(InputError, match=message):
        ModelRuntime.load(legacy_bundle).score(rows)


def test_an_empty_batch_gives_empty_scores(legacy_bundle: Path) -> None:
    """Zero rows in, zero scores out."""
    scores = ModelRuntime.load(legacy_bundle).score(np.zeros((0, 8), np.float32))
    assert scores.probabilities.shape == (0,) and scores.labels.shape == (0,)
