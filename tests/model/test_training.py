"""Training: reproducible, normalization inside the model, honest held-out metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from modelserve.fsutil import sha256_file
from modelserve.model.bundle import read_manifest, verify_integrity
from modelserve.model.dataset import FEATURES, Dataset, stratified_split
from modelserve.model.runtime import load_keras_model
from modelserve.model.training import TrainingConfig, train_bundle

pytestmark = pytest.mark.slow


def test_same_seed_and_data_give_same_metrics(tmp_path: Path, dataset: Dataset) -> None:
    """Two runs with one seed agree on every metric; another seed does not."""
    config = TrainingConfig(epochs=8, seed=11)
    first = train_bundle(dataset, config, tmp_path / "a")
    second = train_bundle(dataset, config, tmp_path / "b")
    other = train_bundle(dataset, TrainingConfig(epochs=8, seed=12), tmp_path / "c")
    assert first["metrics"] == second["metrics"]
    assert other["metrics"] != first["metrics"]


def test_manifest_records_contract_data_config_and_versions(
    trained_bundle: Path, pima_csv: Path
) -> None:
    """The manifest carries the input contract, data hash, training config and libraries."""
    manifest = verify_integrity(trained_bundle).document
    assert [f["name"] for f in manifest["input"]["features"]] == list(FEATURES)
    assert all(
        f["dtype"] == "float32" and f["min"] <= f["max"] for f in manifest["input"]["features"]
    )
    assert manifest["output"]["shape"] == [None, 1]
    assert manifest["data"]["sha256"] == sha256_file(pima_csv)
    assert manifest["training"]["hidden_layers"] == [12, 8]
    assert manifest["training"]["epochs"] == 15
    assert {"keras", "numpy", "python"} <= set(manifest["libraries"])
    assert manifest["source"] == {"kind": "trained"}
    assert len(manifest["input"]["examples"]) == 8
    assert manifest["files"]["model.keras"]["sha256"] == sha256_file(trained_bundle / "model.keras")


def test_metrics_match_an_independent_evaluation(trained_bundle: Path, dataset: Dataset) -> None:
    """Recomputing the held-out split and scoring it with scikit-learn gives the same metrics."""
    manifest = read_manifest(trained_bundle)
    split = manifest["data"]["split"]
    _, test_idx = stratified_split(dataset.labels, split["test_fraction"], split["seed"])
    model = load_keras_model(trained_bundle / "model.keras")
    probabilities = np.asarray(model.predict(dataset.features[test_idx], verbose=0)).ravel()
    truth = dataset.labels[test_idx]
    recorded = manifest["metrics"]
    assert recorded["rows"] == len(test_idx) == split["test_rows"]
    assert recorded["accuracy"] == pytest.approx(skm.accuracy_score(truth, probabilities >= 0.5))
    assert recorded["roc_auc"] == pytest.approx(skm.roc_auc_score(truth, probabilities), abs=1e-6)
    assert recorded["log_loss"] == pytest.approx(skm.log_loss(truth, probabilities), abs=1e-5)
    assert (
        recorded["confusion_matrix"] == skm.confusion_matrix(truth, probabilities >= 0.5).tolist()
    )


def test_model_takes_raw_feature_values(trained_bundle: Path, dataset: Dataset) -> None:
    """Normalization is a layer of the model, adapted to the training rows' statistics."""
    model = load_keras_model(trained_bundle / "model.keras")
    assert type(model.layers[0]).__name__ == "Normalization"
    manifest = read_manifest(trained_bundle)
    split = manifest["data"]["split"]
    train_idx, _ = stratified_split(dataset.labels, split["test_fraction"], split["seed"])
    mean = np.asarray(model.layers[0].mean).ravel()
    assert np.allclose(mean, dataset.features[train_idx].mean(axis=0), rtol=1e-4)
    normalized = np.asarray(model.layers[0](dataset.features[train_idx]))
    assert np.allclose(normalized.mean(axis=0), 0, atol=1e-3)


def test_layers_and_activation_options_shape_the_model(tmp_path: Path, dataset: Dataset) -> None:
    """--layers and --activation reach the saved model."""
    config = TrainingConfig(hidden_layers=(5, 4, 3), activation="tanh", epochs=1)
    train_bundle(dataset, config, tmp_path / "b")
    model = load_keras_model(tmp_path / "b" / "model.keras")
    dense = [layer for layer in model.layers if type(layer).__name__ == "Dense"]
    assert [layer.units for layer in dense] == [5, 4, 3, 1]
    assert [layer.activation.__name__ for layer in dense] == ["tanh", "tanh", "tanh", "sigmoid"]
    saved = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert saved["training"]["activation"] == "tanh"
