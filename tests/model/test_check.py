"""`model check`: a bundle is refused, with one clear message, unless it is safe to serve."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_user_error, run_cli

from modelserve.fsutil import sha256_file
from modelserve.model.backend import import_keras
from modelserve.model.bundle import BundleError, read_manifest, write_bundle, write_manifest
from modelserve.model.check import check_bundle
from modelserve.model.runtime import load_keras_model

pytestmark = pytest.mark.slow


def _copy(bundle: Path, tmp_path: Path) -> Path:
    """Copy a shared bundle so a test may damage it."""
    return Path(shutil.copytree(bundle, tmp_path / "bundle"))


def _rehash(bundle: Path) -> None:
    """Record the current model file's hash, so only the deeper checks can catch a fault."""
    manifest = read_manifest(bundle)
    path = bundle / "model.keras"
    manifest["files"]["model.keras"] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    write_manifest(bundle, manifest)


def _rebuilt(trained_bundle: Path, tmp_path: Path, model) -> Path:
    """Write `model` under the trained bundle's manifest (contract, examples, metrics)."""
    manifest = read_manifest(trained_bundle)
    out = tmp_path / "rebuilt"
    write_bundle(out, model, {k: v for k, v in manifest.items() if k not in ("version", "files")})
    return out


def _dense_model(inputs: int, outputs: int, activation: str = "sigmoid"):
    """A small model of the given input and output width."""
    keras = import_keras()
    return keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(outputs, activation)])


def test_cli_accepts_a_good_bundle(trained_bundle: Path, tmp_path: Path) -> None:
    """A freshly trained bundle passes in a clean process."""
    result = run_cli("model", "check", trained_bundle, home=tmp_path)
    assert result.returncode == 0, result.stderr
    version = read_manifest(trained_bundle)["version"]
    assert f"ok: {version}" in result.stdout
    assert "reproduces its 8 example rows" in result.stdout


def test_cli_refuses_a_corrupt_model_file(trained_bundle: Path, tmp_path: Path) -> None:
    """Flipped bytes in model.keras are caught by the recorded hash."""
    bundle = _copy(trained_bundle, tmp_path)
    data = bytearray((bundle / "model.keras").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / "model.keras").write_bytes(bytes(data))
    assert_user_error(
        run_cli("model", "check", bundle, home=tmp_path), "model.keras does not match"
    )


def test_cli_refuses_nan_weights(trained_bundle: Path, tmp_path: Path) -> None:
    """A model whose weights are NaN is refused by the clean-process check."""
    model = load_keras_model(trained_bundle / "model.keras")
    kernel, bias = model.layers[-1].get_weights()
    model.layers[-1].set_weights([np.full_like(kernel, np.nan), bias])
    bundle = _rebuilt(trained_bundle, tmp_path, model)
    assert_user_error(run_cli("model", "check", bundle, home=tmp_path), "NaN or infinite")


def _truncate_and_rehash(bundle: Path) -> None:
    """Cut model.keras in half but record its new hash."""
    path = bundle / "model.keras"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _rehash(bundle)


def _edit_metrics(bundle: Path) -> None:
    """Change a metric without re-stamping the version."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["metrics"]["accuracy"] = 0.99
    (bundle / "manifest.json").write_text(json.dumps(manifest))


DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing model": (lambda b: (b / "model.keras").unlink(), "model.keras is missing"),
    "missing manifest": (lambda b: (b / "manifest.json").unlink(), "manifest.json is missing"),
    "manifest not JSON": (
        lambda b: (b / "manifest.json").write_text("{not json"),
        "manifest.json: not valid JSON",
    ),
    "manifest edited": (_edit_metrics, "the manifest was edited"),
    "truncated model": (_truncate_and_rehash, "cannot be loaded as a Keras model"),
    "not a zip": (
        lambda b: ((b / "model.keras").write_bytes(b"\0garbage" * 100), _rehash(b)),
        "cannot be loaded as a Keras model",
    ),
}


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_damaged_bundles_are_refused(damage: str, trained_bundle: Path, tmp_path: Path) -> None:
    """Each kind of damage gets its own message."""
    bundle = _copy(trained_bundle, tmp_path)
    apply, message = DAMAGES[damage]
    apply(bundle)
    with pytest.raises(BundleError, match=message):
        check_bundle(bundle)


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    """A path that is not a bundle directory is named as such."""
    with pytest.raises(BundleError, match="not a bundle directory"):
        check_bundle(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("inputs", "outputs", "activation", "message"),
    [
        (7, 1, "sigmoid", r"input of shape \(None, 7\); the contract says \(None, 8\)"),
        (8, 2, "sigmoid", r"output of shape \(2,\)"),
        (8, 1, "linear", "outputs outside"),
    ],
    ids=["seven inputs", "two outputs", "not probabilities"],
)
def test_models_that_break_the_contract_are_refused(
    inputs: int, outputs: int, activation: str, message: str, trained_bundle: Path, tmp_path: Path
) -> None:
    """Wrong input width, wrong output width and non-probabilities are refused."""
    model = _dense_model(inputs, outputs, activation)
    if activation == "linear":
        model.layers[-1].set_weights([np.full((8, 1), 10.0), np.zeros(1)])
    with pytest.raises(BundleError, match=message):
        check_bundle(_rebuilt(trained_bundle, tmp_path, model))


def test_manifest_of_another_model_is_refused(
    trained_bundle: Path, legacy_bundle: Path, tmp_path: Path
) -> None:
    """The example rows expose a manifest that belongs to a different model."""
    bundle = _copy(trained_bundle, tmp_path)
    shutil.copyfile(legacy_bundle / "model.keras", bundle / "model.keras")
    _rehash(bundle)
    with pytest.raises(BundleError, match="does not belong to this model"):
        check_bundle(bundle)


def test_check_writes_a_plan_only_for_a_good_bundle(trained_bundle: Path, tmp_path: Path) -> None:
    """The compiled plan is written beside the check's report."""
    report = check_bundle(trained_bundle, plan_out=tmp_path / "plan.npz")
    assert report["runtime"] == "plan"
    assert (tmp_path / "plan.npz").is_file()


def test_registry_refuses_what_the_check_refuses(trained_bundle: Path, tmp_path: Path) -> None:
    """`models add` runs the real clean-process check: a NaN model never becomes visible."""
    model = load_keras_model(trained_bundle / "model.keras")
    kernel, bias = model.layers[-1].get_weights()
    model.layers[-1].set_weights([np.full_like(kernel, np.nan), bias])
    bundle = _rebuilt(trained_bundle, tmp_path, model)
    home = tmp_path / "home"
    assert_user_error(run_cli("models", "add", bundle, "--activate", home=home), "NaN or infinite")
    assert "no models registered yet" in run_cli("models", "list", home=home).stdout
