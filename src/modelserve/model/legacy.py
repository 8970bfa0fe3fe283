"""Import a Keras 2 model (architecture JSON + HDF5 weights) as a Keras 3 bundle.

Keras 3 cannot read Keras 2.x JSON reliably, and the original system only ever produced a
Sequential stack of Dense layers, so we read that format ourselves: the JSON for the layer
list and activations, the HDF5 (h5py) for the weights, then rebuild the same stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelserve.model import contract
from modelserve.model.backend import import_keras
from modelserve.model.bundle import BundleError, read_json, write_bundle
from modelserve.model.dataset import FEATURES, Dataset, stratified_split
from modelserve.model.plan import ACTIVATIONS

MAX_JSON_BYTES = 1 << 20
# The split every trained model is measured on by default, so imported metrics compare.
DEFAULT_SEED = 7
DEFAULT_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class DenseSpec:
    """One Dense layer of a legacy model."""

    name: str
    units: int
    activation: str
    use_bias: bool


def read_architecture(path: Path) -> tuple[int, list[DenseSpec]]:
    """Parse a Keras 2 Sequential JSON into its input width and Dense layers."""
    config = _load_json(path)
    if config.get("class_name") != "Sequential":
        raise BundleError(
            f"{path}: a {config.get('class_name')!r} model; only Sequential is supported"
        )
    raw_layers = config.get("config")
    if isinstance(raw_layers, dict):  # Keras >= 2.2 nests the list under "layers"
        raw_layers = raw_layers.get("layers")
    if not isinstance(raw_layers, list) or not raw_layers:
        raise BundleError(f"{path}: no layers found")
    layers = [
        _dense_spec(layer, path) for layer in raw_layers if layer.get("class_name") != "InputLayer"
    ]
    return _input_width(raw_layers, path), layers


def _load_json(path: Path) -> dict:
    """Read the architecture file, refusing oversized or malformed JSON."""
    path = Path(path)
    config = read_json(path, MAX_JSON_BYTES)
    if not isinstance(config, dict):
        raise BundleError(f"{path}: not a Keras model description")
    return config


def _dense_spec(layer: Any, path: Path) -> DenseSpec:
    """Read one layer entry, refusing anything but Dense with a known activation."""
    if not isinstance(layer, dict) or layer.get("class_name") != "Dense":
        kind = layer.get("class_name") if isinstance(layer, dict) else type(layer).__name__
        raise BundleError(f"{path}: layer type {kind!r} is not supported (only Dense)")
    config = layer.get("config", {})
    activation = config.get("activation", "linear")
    if activation not in ACTIVATIONS:
        raise BundleError(f"{path}: activation {activation!r} is not supported")
    units = config.get("units")
    if not isinstance(units, int) or units < 1:
        raise BundleError(f"{path}: layer {config.get('name')!r} has no valid units")
    return DenseSpec(str(config.get("name")), units, activation, bool(config.get("use_bias", True)))


def _input_width(raw_layers: list, path: Path) -> int:
    """Find the declared input width (batch_input_shape of the first layer)."""
    config = raw_layers[0].get("config", {})
    shape = config.get("batch_input_shape") or config.get("batch_shape")
    if not isinstance(shape, list) or len(shape) != 2 or not isinstance(shape[1], int):
        raise BundleError(f"{path}: the first layer declares no input shape [null, n]")
    return shape[1]


def read_weights(path: Path, layers: list[DenseSpec], width: int) -> list[list[np.ndarray]]:
    """Read each Dense layer's kernel and bias from a Keras 2 HDF5 file, checking shapes."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            root = h5["model_weights"] if "model_weights" in h5 else h5
            weights = [
                _layer_weights(root, spec, fan_in, path) for spec, fan_in in _fan_ins(layers, width)
            ]
    except (OSError, KeyError) as error:
        raise BundleError(f"{path}: not a readable Keras HDF5 weights file ({error})") from None
    for spec, (kernel, bias) in zip(layers, weights, strict=True):
        if not (np.isfinite(kernel).all() and np.isfinite(bias).all()):
            raise BundleError(f"{path}: layer {spec.name} has NaN or infinite weights")
    return weights


def _fan_ins(layers: list[DenseSpec], width: int) -> list[tuple[DenseSpec, int]]:
    """Pair each layer with the width of its input."""
    widths = [width] + [layer.units for layer in layers[:-1]]
    return list(zip(layers, widths, strict=True))


def _layer_weights(root: Any, spec: DenseSpec, fan_in: int, path: Path) -> list[np.ndarray]:
    """Read one layer's weights in the order its weight_names attribute gives."""
    if spec.name not in root:
        raise BundleError(f"{path}: no weights for layer {spec.name!r}")
    group = root[spec.name]
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs["weight_names"]]
    arrays = [np.asarray(group[name], dtype=np.float32) for name in names]
    expected = [(fan_in, spec.units)] + ([(spec.units,)] if spec.use_bias else [])
    if [a.shape for a in arrays] != expected:
        raise BundleError(
            f"{path}: layer {spec.name!r} has weights of shape {[a.shape for a in arrays]}, "
            f"the architecture says {expected}"
        )
    return arrays


def build_keras_model(width: int, layers: list[DenseSpec], weights: list[list[np.ndarray]]) -> Any:
    """Rebuild the legacy stack in Keras 3 with the imported weights."""
    keras = import_keras()

    model = keras.Sequential(
        [keras.Input((width,), name="features")]
        + [keras.layers.Dense(s.units, s.activation, s.use_bias, name=s.name) for s in layers],
        name="legacy_import",
    )
    for layer, arrays in zip(model.layers, weights, strict=True):
        layer.set_weights(arrays)
    return model


def import_legacy(json_path: Path, h5_path: Path, dataset: Dataset, out_dir: Path) -> dict:
    """Convert a legacy pair into a bundle evaluated on the dataset's default held-out split."""
    width, layers = read_architecture(json_path)
    if width != len(FEATURES) or layers[-1].units != 1:
        raise BundleError(
            f"{json_path}: takes {width} inputs and gives {layers[-1].units} outputs; "
            f"the contract is {len(FEATURES)} inputs and 1 probability"
        )
    model = build_keras_model(width, layers, read_weights(h5_path, layers, width))
    train_idx, test_idx = stratified_split(dataset.labels, DEFAULT_TEST_FRACTION, DEFAULT_SEED)
    split = contract.split_record(
        DEFAULT_SEED, DEFAULT_TEST_FRACTION, len(train_idx), len(test_idx)
    )
    manifest = contract.evaluated_manifest(model, dataset, test_idx, split)
    manifest["training"] = None
    manifest["source"] = {
        "kind": "legacy",
        "architecture": Path(json_path).name,
        "weights": Path(h5_path).name,
        "keras_version": _load_json(json_path).get("keras_version"),
    }
    return write_bundle(out_dir, model, manifest)
