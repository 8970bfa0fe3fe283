"""Import a Keras 2 model (architecture JSON + HDF5 weights) as a Keras 3 bundle.

Keras 3 cannot read Keras 2.x JSON reliably, and the original system only ever produced a
Sequential stack of Dense layers, so we read that format ourselves: the JSON for the layer
list and activations, the HDF5 (h5py) for the weights, then rebuild the same stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from modelserve.model import contract
from modelserve.model.backend import import_keras
from modelserve.model.bundle import BundleError, read_json, write_bundle
from modelserve.model.dataset import FEATURES, Dataset, stratified_split
from modelserve.model.plan import ACTIVATIONS

MAX_JSON_BYTES = 1 << 20
SHOWN_CHARS = 40
# Layer names become HDF5 group names and Keras layer names: plain identifiers only.
LAYER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,127}")
KERAS_VERSION = re.compile(r"[0-9A-Za-z.+\-]{1,32}")
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


@dataclass(frozen=True)
class LegacyLimits:
    """How large a legacy model may be: checked before any weight is read."""

    max_layers: int = 64
    max_units: int = 4096  # per layer, and the input width
    max_parameters: int = 16_000_000  # 64 MiB as float32
    max_h5_bytes: int = 256 << 20
    max_weight_names: int = 2  # a Dense layer has a kernel and perhaps a bias
    max_weight_name_bytes: int = 256


LIMITS = LegacyLimits()


def read_architecture(
    path: Path, limits: LegacyLimits = LIMITS
) -> tuple[int, list[DenseSpec]]:
    """Parse a Keras 2 Sequential JSON into its input width and Dense layers, within limits."""
    config = _load_json(path)
    where = Path(path).name
    if config.get("class_name") != "Sequential":
        raise BundleError(
            f"{where}: a {_shown(config.get('class_name'))} model; only Sequential is supported"
        )
    raw_layers = config.get("config")
    if isinstance(raw_layers, dict):  # Keras >= 2.2 nests the list under "layers"
        raw_layers = raw_layers.get("layers")
    if not isinstance(raw_layers, list) or not raw_layers:
        raise BundleError(f"{where}: no layers found")
    if len(raw_layers) > limits.max_layers + 1:  # + 1: an InputLayer may come first
        raise BundleError(f"{where}: {len(raw_layers)} layers; at most {limits.max_layers}")
    layers = [
        _dense_spec(layer, where, limits)
        for layer in raw_layers
        if not (isinstance(layer, dict) and layer.get("class_name") == "InputLayer")
    ]
    width = _input_width(raw_layers, where, limits)
    check_size(width, layers, limits, where)
    return width, layers


def check_size(width: int, layers: list[DenseSpec], limits: LegacyLimits, where: str) -> None:
    """Refuse an architecture with too many layers or parameters in all."""
    if not layers:
        raise BundleError(f"{where}: no Dense layers")
    if len(layers) > limits.max_layers:
        raise BundleError(f"{where}: {len(layers)} layers; at most {limits.max_layers}")
    parameters = sum(
        fan_in * spec.units + (spec.units if spec.use_bias else 0)
        for spec, fan_in in _fan_ins(layers, width)
    )
    if parameters > limits.max_parameters:
        raise BundleError(
            f"{where}: {parameters:,} weights in all; at most {limits.max_parameters:,}"
        )


def _load_json(path: Path) -> dict:
    """Read the architecture file, refusing oversized or malformed JSON."""
    path = Path(path)
    config = read_json(path, MAX_JSON_BYTES)
    if not isinstance(config, dict):
        raise BundleError(f"{path.name}: not a Keras model description")
    return config


def _dense_spec(layer: Any, where: str, limits: LegacyLimits) -> DenseSpec:
    """Read one layer entry, refusing anything but Dense with a known activation and size."""
    if not isinstance(layer, dict) or layer.get("class_name") != "Dense":
        kind = layer.get("class_name") if isinstance(layer, dict) else type(layer).__name__
        raise BundleError(f"{where}: layer type {_shown(kind)} is not supported (only Dense)")
    config = layer.get("config")
    config = config if isinstance(config, dict) else {}
    name = config.get("name")
    if not isinstance(name, str) or not LAYER_NAME.fullmatch(name):
        raise BundleError(f"{where}: layer name {_shown(name)} is not a plain name")
    activation = config.get("activation", "linear")
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise BundleError(f"{where}: activation {_shown(activation)} is not supported")
    units = config.get("units")
    if not _is_int(units) or units < 1:
        raise BundleError(f"{where}: layer {name!r} has no valid units")
    if units > limits.max_units:
        raise BundleError(
            f"{where}: layer {name!r} has {units} units; at most {limits.max_units}"
        )
    return DenseSpec(name, units, activation, bool(config.get("use_bias", True)))


def _input_width(raw_layers: list, where: str, limits: LegacyLimits) -> int:
    """Find the declared input width (batch_input_shape of the first layer)."""
    first = raw_layers[0] if isinstance(raw_layers[0], dict) else {}
    config = first.get("config")
    config = config if isinstance(config, dict) else {}
    shape = config.get("batch_input_shape") or config.get("batch_shape")
    if not isinstance(shape, list) or len(shape) != 2 or not _is_int(shape[1]) or shape[1] < 1:
        raise BundleError(f"{where}: the first layer declares no input shape [null, n]")
    if shape[1] > limits.max_units:
        raise BundleError(f"{where}: {shape[1]} inputs; at most {limits.max_units}")
    return shape[1]


def _is_int(value: Any) -> TypeGuard[int]:
    """Tell whether a JSON value is an integer (not a boolean)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    """Show a value from a model file in a message: one line, cut short."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def read_weights(
    path: Path, layers: list[DenseSpec], width: int, limits: LegacyLimits = LIMITS
) -> list[list[np.ndarray]]:
    """Read each Dense layer's kernel and bias from a Keras 2 HDF5 file, checked before read."""
    from modelserve.model import h5safe  # deferred: h5py only where weights are read

    path = Path(path)
    where = path.name
    if not path.is_file():
        raise BundleError(f"{where}: no such file")
    if path.stat().st_size > limits.max_h5_bytes:
        raise BundleError(f"{where}: larger than {limits.max_h5_bytes} bytes")
    try:
        with h5safe.open_file(path, where, "Keras HDF5 weights file") as h5:
            root = _weights_root(h5, where)
            weights = [
                _layer_weights(root, spec, fan_in, where, limits)
                for spec, fan_in in _fan_ins(layers, width)
            ]
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as error:
        # h5py raises these for damaged structures found while walking; all mean the same.
        reason = h5safe.reason(error, path)
        raise BundleError(f"{where}: not a readable Keras HDF5 weights file ({reason})") from None
    for spec, arrays in zip(layers, weights, strict=True):
        if not all(np.isfinite(array).all() for array in arrays):
            raise BundleError(f"{where}: layer {spec.name} has NaN or infinite weights")
    return weights


def _weights_root(h5: Any, where: str) -> Any:
    """Return the group holding one group per layer (model_weights/ in a whole-model file)."""
    from modelserve.model import h5safe

    if h5.id.links.exists(b"model_weights"):
        return h5safe.child_group(h5, "model_weights", f"{where}: model_weights")
    return h5


def _fan_ins(layers: list[DenseSpec], width: int) -> list[tuple[DenseSpec, int]]:
    """Pair each layer with the width of its input."""
    widths = [width] + [layer.units for layer in layers[:-1]]
    return list(zip(layers, widths, strict=True))


def _layer_weights(
    root: Any, spec: DenseSpec, fan_in: int, where: str, limits: LegacyLimits
) -> list[np.ndarray]:
    """Read one layer's weights in the order its weight_names attribute gives, shapes first."""
    from modelserve.model import h5safe

    label = f"{where}: layer {spec.name!r}"
    if not root.id.links.exists(spec.name.encode()):
        raise BundleError(f"{where}: no weights for layer {spec.name!r}")
    group = h5safe.child_group(root, spec.name, label)
    names = weight_names(group, label, limits)
    expected = [(fan_in, spec.units)] + ([(spec.units,)] if spec.use_bias else [])
    datasets = [_weight_dataset(group, name, f"{label} weight {name!r}") for name in names]
    shapes = [shape for _dataset, shape in datasets]
    if shapes != expected:
        raise BundleError(
            f"{label} has weights of shape {shapes}, the architecture says {expected}"
        )
    return [
        h5safe.read_float32(dataset, shape, f"{label} weight {name!r}")
        for name, (dataset, shape) in zip(names, datasets, strict=True)
    ]


def _weight_dataset(group: Any, name: str, label: str) -> tuple[Any, tuple[int, ...]]:
    """Walk a weight name ('dense_1/kernel:0') through hard links; check, do not read, it."""
    from modelserve.model import h5safe

    *parents, last = name.split("/")
    for part in parents:
        group = h5safe.child_group(group, part, label)
    dataset = h5safe.child_dataset(group, last, label)
    return dataset, h5safe.check_dataset(dataset, label)


def weight_names(group: Any, label: str, limits: LegacyLimits = LIMITS) -> list[str]:
    """Read a layer's weight_names attribute, checking its type and size before reading it."""
    from h5py import h5a, h5t

    if not h5a.exists(group.id, b"weight_names"):
        raise BundleError(f"{label}: no weight_names attribute")
    attribute = h5a.open(group.id, b"weight_names")
    kind, shape = attribute.get_type(), attribute.shape
    if kind.get_class() != h5t.STRING or kind.is_variable_str() or len(shape) != 1:
        raise BundleError(f"{label}: weight_names is not a list of fixed-length strings")
    if not 1 <= shape[0] <= limits.max_weight_names:
        raise BundleError(
            f"{label}: weight_names lists {shape[0]} weights; 1 to {limits.max_weight_names}"
        )
    if kind.get_size() > limits.max_weight_name_bytes:
        raise BundleError(f"{label}: weight_names are over {limits.max_weight_name_bytes} bytes")
    raw = np.empty(shape, dtype=f"S{kind.get_size()}")
    attribute.read(raw)
    try:
        return [name.decode() for name in raw]
    except UnicodeDecodeError:
        raise BundleError(f"{label}: weight_names are not UTF-8") from None


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


def _keras_version(config: dict) -> str | None:
    """Return the Keras version a model file says made it, if it is a short plain string."""
    version = config.get("keras_version")
    return version if isinstance(version, str) and KERAS_VERSION.fullmatch(version) else None


def import_legacy(json_path: Path, h5_path: Path, dataset: Dataset, out_dir: Path) -> dict:
    """Convert a legacy pair into a bundle evaluated on the dataset's default held-out split."""
    width, layers = read_architecture(json_path)
    if width != len(FEATURES) or layers[-1].units != 1:
        raise BundleError(
            f"{Path(json_path).name}: takes {width} inputs and gives {layers[-1].units} outputs; "
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
        "keras_version": _keras_version(_load_json(json_path)),
    }
    return write_bundle(out_dir, model, manifest)
