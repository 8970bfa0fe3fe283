"""A forged plan.npz is never served: the plan is derived from the checked model.keras only.

The plan answers requests without Keras, so a bundle that brings its own (with the model's
sha256 as its source, which anybody can compute) would be served by numbers nobody checked.
The model here has a Dropout layer, which the plan compiler does not translate: no plan is
derived for it, so a forged one would stay in place if the registry or the runtime took it.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli

from modelserve.fsutil import sha256_file
from modelserve.model.backend import import_keras
from modelserve.model.bundle import (
    MANIFEST_FILE,
    MODEL_FILE,
    compute_version,
    read_manifest,
    write_bundle,
)
from modelserve.model.dataset import Dataset
from modelserve.model.plan import Plan, Step
from modelserve.model.runtime import ModelRuntime, load_keras_model
from modelserve.registry import Registry

pytestmark = pytest.mark.slow
PLAN_FILE = "plan.npz"
ROWS = 40


@pytest.fixture(scope="module")
def dropout_bundle(trained_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained model with a Dropout before its output: same answers, no plan derivable."""
    keras = import_keras()
    trained = load_keras_model(trained_bundle / MODEL_FILE)
    model = keras.Sequential([keras.Input((8,)), *trained.layers[:-1],
                              keras.layers.Dropout(0.5), trained.layers[-1]])
    manifest = read_manifest(trained_bundle)
    out = tmp_path_factory.mktemp("dropout") / "bundle"
    write_bundle(out, model, {k: v for k, v in manifest.items() if k not in ("version", "files")})
    return out


def forge_plan(bundle: Path) -> Path:
    """Write a plan.npz claiming to come from this model.keras that answers ~1 for every row."""
    sha = sha256_file(bundle / MODEL_FILE)
    step = Step("dense", (np.zeros((8, 1), np.float32), np.full(1, 40.0, np.float32)), "sigmoid")
    Plan((step,), sha).save(bundle / PLAN_FILE)
    return bundle / PLAN_FILE


def keras_answers(bundle: Path, rows: np.ndarray) -> np.ndarray:
    """What the model itself says."""
    return np.asarray(load_keras_model(bundle / MODEL_FILE)(rows, training=False)).ravel()


def _copy(bundle: Path, where: Path) -> Path:
    return Path(shutil.copytree(bundle, where))


def test_a_manifest_listing_a_forged_plan_is_refused_by_models_add(
    dropout_bundle: Path, tmp_path: Path, reliability
) -> None:
    """models add: one line naming plan.npz, and nothing stored."""
    bundle = _copy(dropout_bundle, tmp_path / "bundle")
    plan = forge_plan(bundle)
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    manifest["files"][PLAN_FILE] = {"sha256": sha256_file(plan), "bytes": plan.stat().st_size}
    manifest["version"] = compute_version(manifest)
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest))
    home = tmp_path / "home"
    result = run_cli("models", "add", bundle, home=home)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "the manifest lists plan.npz" in lines[0], lines[0]
    assert Registry(home / "registry").list_versions() == []
    reliability.record(
        "Security", "forged plan.npz listed in a bundle's manifest, into `models add`",
        "refused in one line; nothing stored (the plan is derived from the checked model only)",
        refused=True, versions_stored=0)


def test_an_unlisted_forged_plan_is_neither_copied_nor_served(
    dropout_bundle: Path, dataset: Dataset, tmp_path: Path, reliability
) -> None:
    """models add of a bundle with a plan.npz beside it: the stored version answers as Keras."""
    bundle = _copy(dropout_bundle, tmp_path / "bundle")
    forge_plan(bundle)
    home = tmp_path / "home"
    result = run_cli("models", "add", bundle, home=home)
    assert result.returncode == 0, result.stderr
    info = Registry(home / "registry").list_versions()[0]
    assert not (info.path / PLAN_FILE).exists()  # Dropout: nothing derived, nothing copied
    rows = dataset.features[:ROWS]
    served = ModelRuntime.load(info.path, trust_cached_plan=True).score(rows).probabilities
    expected = keras_answers(bundle, rows)
    difference = float(np.abs(served - expected).max())
    reliability.record(
        "Security", "forged plan.npz beside model.keras (unlisted), into `models add`",
        "not copied; the stored version answers as Keras does",
        max_difference_from_keras=f"{difference:.1e}", forged_answer=1.0)
    assert difference <= 1e-5


def test_predict_with_a_bundle_directory_ignores_its_plan(
    dropout_bundle: Path, dataset: Dataset, tmp_path: Path
) -> None:
    """`modelserve predict --model DIR` scores with the checked model, not DIR/plan.npz."""
    bundle = _copy(dropout_bundle, tmp_path / "bundle")
    forge_plan(bundle)
    rows = dataset.features[:ROWS]
    source = tmp_path / "in.csv"
    with open(source, "w", newline="") as stream:
        csv.writer(stream).writerows(rows.tolist())
    result = run_cli("predict", source, "-o", tmp_path / "out.csv", "--model", bundle,
                     home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "out.csv", newline="") as stream:
        answered = np.asarray([float(r["probability"]) for r in csv.DictReader(stream)])
    assert np.abs(answered - keras_answers(bundle, rows)).max() <= 1e-5


def test_the_runtime_uses_a_cached_plan_only_when_told_to_trust_it(
    dropout_bundle: Path, dataset: Dataset, tmp_path: Path
) -> None:
    """ModelRuntime.load ignores plan.npz by default; trust_cached_plan is for registry versions."""
    bundle = _copy(dropout_bundle, tmp_path / "bundle")
    forge_plan(bundle)
    rows = dataset.features[:ROWS]
    assert ModelRuntime.load(bundle).kind == "keras"
    trusted = ModelRuntime.load(bundle, trust_cached_plan=True)
    assert trusted.kind == "plan" and np.allclose(trusted.score(rows).probabilities, 1.0)
