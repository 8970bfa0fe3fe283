"""Legacy import: a Keras 2 JSON + HDF5 pair becomes a bundle that computes the same outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_helpers import assert_user_error, run_cli

from modelserve.model.bundle import BundleError
from modelserve.model.check import check_bundle
from modelserve.model.dataset import Dataset
from modelserve.model.legacy import import_legacy
from modelserve.model.runtime import ModelRuntime, load_keras_model

pytestmark = pytest.mark.slow

NUMPY_ACTIVATIONS = {
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "relu": lambda x: np.maximum(x, 0.0),
    "linear": lambda x: x,
}


def reference_outputs(json_path: Path, h5_path: Path, rows: np.ndarray) -> np.ndarray:
    """Compute the legacy model's outputs in float64 straight from its files."""
    layers = json.loads(json_path.read_text())["config"]["layers"]
    x = rows.astype(np.float64)
    with h5py.File(h5_path, "r") as h5:
        for layer in layers:
            name = layer["config"]["name"]
            kernel = h5[name][name]["kernel:0"][()].astype(np.float64)
            bias = h5[name][name]["bias:0"][()].astype(np.float64)
            x = NUMPY_ACTIVATIONS[layer["config"]["activation"]](x @ kernel + bias)
    return x.ravel()


@pytest.mark.parametrize("role", ["production", "development"])
def test_converted_model_matches_the_original_on_every_row(
    role: str, shared_data: Path, dataset: Dataset, tmp_path: Path
) -> None:
    """Keras 3 model, compiled plan and the original agree within 1e-5 on all rows."""
    seed = shared_data / "seed-model" / role
    import_legacy(seed / "model.json", seed / "model.h5", dataset, tmp_path / "b")
    expected = reference_outputs(seed / "model.json", seed / "model.h5", dataset.features)
    keras_model = load_keras_model(tmp_path / "b" / "model.keras")
    from_keras = np.asarray(keras_model(dataset.features, training=False)).ravel()
    assert np.abs(from_keras - expected).max() <= 1e-5
    check_bundle(tmp_path / "b", plan_out=tmp_path / "b" / "plan.npz")
    runtime = ModelRuntime.load(tmp_path / "b")
    assert runtime.kind == "plan"
    assert np.abs(runtime.score(dataset.features).probabilities - expected).max() <= 1e-5


def test_import_records_provenance_and_metrics(legacy_bundle: Path) -> None:
    """The manifest says where the model came from and how it scores on held-out rows."""
    manifest = json.loads((legacy_bundle / "manifest.json").read_text())
    assert manifest["source"]["kind"] == "legacy"
    assert manifest["source"]["keras_version"] == "2.3.1"
    assert manifest["training"] is None
    assert 0.5 < manifest["metrics"]["accuracy"] <= 1.0
    assert manifest["data"]["split"]["test_rows"] == manifest["metrics"]["rows"]


def _write_json(path: Path, config: dict) -> Path:
    """Write a model description."""
    path.write_text(json.dumps(config))
    return path


def _seed_json(shared_data: Path) -> dict:
    """The production seed model's architecture."""
    return json.loads((shared_data / "seed-model" / "production" / "model.json").read_text())


def test_bad_architectures_are_refused(shared_data: Path, dataset: Dataset, tmp_path: Path) -> None:
    """Unsupported layers, activations, functional models and wrong widths each get a message."""
    h5 = shared_data / "seed-model" / "production" / "model.h5"
    cases = []
    conv = _seed_json(shared_data)
    conv["config"]["layers"][1]["class_name"] = "Conv1D"
    cases.append((conv, "layer type 'Conv1D' is not supported"))
    swish = _seed_json(shared_data)
    swish["config"]["layers"][0]["config"]["activation"] = "swish"
    cases.append((swish, "activation 'swish' is not supported"))
    functional = dict(_seed_json(shared_data), class_name="Model")
    cases.append((functional, "only Sequential is supported"))
    seven = _seed_json(shared_data)
    seven["config"]["layers"][0]["config"]["batch_input_shape"] = [None, 7]
    cases.append((seven, "takes 7 inputs"))
    for index, (config, message) in enumerate(cases):
        path = _write_json(tmp_path / f"m{index}.json", config)
        with pytest.raises(BundleError, match=message):
            import_legacy(path, h5, dataset, tmp_path / f"out{index}")


def test_weights_that_do_not_fit_are_refused(
    shared_data: Path, dataset: Dataset, tmp_path: Path
) -> None:
    """An architecture whose layer sizes differ from the HDF5 weights is named."""
    config = _seed_json(shared_data)
    config["config"]["layers"][0]["config"]["units"] = 10
    path = _write_json(tmp_path / "m.json", config)
    h5 = shared_data / "seed-model" / "production" / "model.h5"
    with pytest.raises(BundleError, match="layer 'dense_1' has weights of shape"):
        import_legacy(path, h5, dataset, tmp_path / "out")


def test_cli_refuses_corrupt_hdf5_and_json(
    shared_data: Path, pima_csv: Path, tmp_path: Path
) -> None:
    """Broken files give one line each, and nothing is registered."""
    seed = shared_data / "seed-model" / "production"
    corrupt_h5 = tmp_path / "model.h5"
    corrupt_h5.write_bytes(seed.joinpath("model.h5").read_bytes()[:2000])
    bad_json = tmp_path / "model.json"
    bad_json.write_text('{"class_name": "Sequential", "config": ')
    home = tmp_path / "home"
    args = ("model", "import-legacy")
    result = run_cli(*args, seed / "model.json", corrupt_h5, "--data", pima_csv, home=home)
    assert_user_error(result, "not a readable Keras HDF5 weights file")
    result = run_cli(*args, bad_json, seed / "model.h5", "--data", pima_csv, home=home)
    assert_user_error(result, "model.json: not valid JSON")
    result = run_cli(
        *args, tmp_path / "none.json", seed / "model.h5", "--data", pima_csv, home=home
    )
    assert_user_error(result, "none.json: no such file")
    assert not (home / "registry" / "versions").exists() or not any(
        (home / "registry" / "versions").iterdir()
    )


def test_cli_imports_and_activates_the_seed_model(
    shared_data: Path, pima_csv: Path, tmp_path: Path
) -> None:
    """The documented command turns the seed model into the active version."""
    seed = shared_data / "seed-model" / "production"
    shutil.copytree(seed, tmp_path / "seed")
    home = tmp_path / "home"
    result = run_cli(
        "model",
        "import-legacy",
        tmp_path / "seed" / "model.json",
        tmp_path / "seed" / "model.h5",
        "--data",
        pima_csv,
        "--activate",
        home=home,
    )
    assert result.returncode == 0, result.stderr
    assert "activated" in result.stdout
    listing = run_cli("models", "list", home=home)
    assert "legacy" in listing.stdout
