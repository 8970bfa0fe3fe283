"""Hostile Keras 2 HDF5 files: each refused in one line before any weight is read.

A model.h5 can make its bytes come from another file of the server (external storage, a
virtual dataset, an external link), from elsewhere in itself (a soft link), or declare a
kernel far larger than its file. The legacy reader must refuse them all, naming the layer
and weight and never a server path, and the secret a file points at must reach no bundle,
no registry and no output.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_helpers import run_cli
from measured_run import run_modelserve_measured

from modelserve.model.bundle import BundleError
from modelserve.model.legacy import (
    LIMITS,
    DenseSpec,
    LegacyLimits,
    check_size,
    read_architecture,
    read_weights,
)

BIAS = "dense_1/dense_1/bias:0"
KERNEL = "dense_1/dense_1/kernel:0"
BOMB_SIDE = 16384
# import-legacy refusing a file imports no TensorFlow: the CLI and its CSV stay under this.
BOMB_MEMORY_BOUND_MIB = 256


@pytest.fixture
def seed(shared_data: Path) -> Path:
    """The production seed model's directory (model.json, model.h5)."""
    return shared_data / "seed-model" / "production"


@pytest.fixture
def secret(tmp_path: Path) -> bytes:
    """A secret file's bytes, as the broker credentials would be: ASCII, so finite as floats."""
    text = json.dumps({"password": secrets.token_hex(16), "user": "modelserve"})
    data = text.encode()[:48].ljust(48, b" ")
    (tmp_path / "credentials.json").write_bytes(data)
    return data


def spoiled(seed: Path, tmp_path: Path, spoil: Callable[[h5py.File, Path], None]) -> Path:
    """A copy of the seed model.h5 changed in place by `spoil(h5, scratch)`."""
    path = tmp_path / "model.h5"
    shutil.copyfile(seed / "model.h5", path)
    path.chmod(0o644)
    with h5py.File(path, "r+") as h5:
        spoil(h5, tmp_path)
    return path


def _replace(h5: h5py.File, name: str) -> h5py.Group:
    """Delete one weight, returning its group so a test can put something else there."""
    group_name, weight = name.rsplit("/", 1)
    del h5[name]
    return h5[group_name], weight


def external_storage(h5: h5py.File, scratch: Path) -> None:
    """The bias's 12 floats are 'stored' in the secret file, at offset 0."""
    group, weight = _replace(h5, BIAS)
    group.create_dataset(weight, shape=(12,), dtype="<f4",
                         external=[(str(scratch / "credentials.json"), 0, 48)])


def virtual_dataset(h5: h5py.File, scratch: Path) -> None:
    """The bias is a virtual dataset mapping another HDF5 file's data."""
    source = scratch / "other.h5"
    with h5py.File(source, "w") as other:
        other.create_dataset("data", data=np.arange(12, dtype="<f4"))
    layout = h5py.VirtualLayout(shape=(12,), dtype="<f4")
    layout[:] = h5py.VirtualSource(str(source), "data", shape=(12,))
    group, weight = _replace(h5, BIAS)
    group.create_virtual_dataset(weight, layout)


def soft_link(h5: h5py.File, _scratch: Path) -> None:
    """The bias is a soft link to another dataset of the same file."""
    h5.create_dataset("elsewhere/values", data=np.ones(12, dtype="<f4"))
    group, weight = _replace(h5, BIAS)
    group[weight] = h5py.SoftLink("/elsewhere/values")


def external_link(h5: h5py.File, scratch: Path) -> None:
    """The bias is a link into another HDF5 file."""
    with h5py.File(scratch / "other.h5", "w") as other:
        other.create_dataset("data", data=np.ones(12, dtype="<f4"))
    group, weight = _replace(h5, BIAS)
    group[weight] = h5py.ExternalLink(str(scratch / "other.h5"), "/data")


def integer_bias(h5: h5py.File, _scratch: Path) -> None:
    """The bias holds int32 numbers."""
    group, weight = _replace(h5, BIAS)
    group.create_dataset(weight, data=np.arange(12, dtype="<i4"))


def compound_bias(h5: h5py.File, _scratch: Path) -> None:
    """The bias holds records of two fields."""
    group, weight = _replace(h5, BIAS)
    group.create_dataset(weight, data=np.zeros(12, dtype=[("a", "<f4"), ("b", "<f4")]))


def vlen_bias(h5: h5py.File, _scratch: Path) -> None:
    """The bias holds variable-length sequences."""
    group, weight = _replace(h5, BIAS)
    dataset = group.create_dataset(weight, shape=(12,), dtype=h5py.vlen_dtype("<f4"))
    dataset[0] = np.ones(3, dtype="<f4")


def huge_weight_names(h5: h5py.File, _scratch: Path) -> None:
    """weight_names lists 1,000 weights (a Dense layer has two)."""
    h5["dense_1"].attrs["weight_names"] = np.array([b"dense_1/kernel:0"] * 1000)


def shape_bomb(h5: h5py.File, _scratch: Path) -> None:
    """The first kernel declares 16384 x 16384 floats (1 GiB) and stores none of them."""
    group, weight = _replace(h5, KERNEL)
    group.create_dataset(weight, shape=(BOMB_SIDE, BOMB_SIDE), dtype="<f4",
                         chunks=(1024, 1024), compression="gzip")


HOSTILE: dict[str, tuple[Callable[[h5py.File, Path], None], str]] = {
    "external storage": (external_storage, "uses external storage"),
    "virtual dataset": (virtual_dataset, "is a virtual dataset"),
    "soft link": (soft_link, "is a soft link"),
    "external link": (external_link, "is an external link"),
    "int32 weights": (integer_bias, "not float16, float32 or float64"),
    "compound weights": (compound_bias, "has element type compound"),
    "variable-length weights": (vlen_bias, "has element type variable-length"),
    "1,000 weight names": (huge_weight_names, "weight_names lists 1000 weights"),
    "declared-shape bomb": (shape_bomb, "has weights of shape [(16384, 16384), (12,)]"),
}


@pytest.mark.parametrize("kind", HOSTILE)
def test_a_hostile_weights_file_is_refused_naming_the_weight(
    kind: str, seed: Path, tmp_path: Path, secret: bytes
) -> None:
    """Each kind: one BundleError naming the file and layer, no server path in it."""
    spoil, words = HOSTILE[kind]
    path = spoiled(seed, tmp_path, spoil)
    width, layers = read_architecture(seed / "model.json")
    with pytest.raises(BundleError) as refused:
        read_weights(path, layers, width)
    message = str(refused.value)
    assert words in message, message
    assert message.startswith("model.h5: layer 'dense_1'"), message
    assert str(tmp_path) not in message and "\n" not in message


def test_the_seed_weights_still_read_exactly(seed: Path) -> None:
    """The hardened reader returns the seed model's weights bit for bit."""
    width, layers = read_architecture(seed / "model.json")
    weights = read_weights(seed / "model.h5", layers, width)
    with h5py.File(seed / "model.h5", "r") as h5:
        for spec, (kernel, bias) in zip(layers, weights, strict=True):
            assert np.array_equal(kernel, h5[spec.name][spec.name]["kernel:0"][()])
            assert np.array_equal(bias, h5[spec.name][spec.name]["bias:0"][()])


def _architecture(layers: int, units: int) -> dict:
    """A Keras 2 Sequential of Dense layers, 8 inputs."""
    entries = [{"class_name": "Dense", "config": {"name": f"d{index}", "units": units,
                                                   "activation": "relu"}}
               for index in range(layers)]
    entries[0]["config"]["batch_input_shape"] = [None, 8]
    return {"class_name": "Sequential", "config": {"layers": entries}}


@pytest.mark.parametrize(("layers", "units", "words"), [
    (LIMITS.max_layers + 1, 4, f"layers; at most {LIMITS.max_layers}"),
    (2, LIMITS.max_units + 1, f"units; at most {LIMITS.max_units}"),
    (LIMITS.max_layers, LIMITS.max_units, "weights in all; at most"),
])
def test_too_many_layers_units_or_weights_are_refused(
    layers: int, units: int, words: str, tmp_path: Path
) -> None:
    """The caps hold before any HDF5 is opened."""
    path = tmp_path / "model.json"
    path.write_text(json.dumps(_architecture(layers, units)))
    with pytest.raises(BundleError, match=words):
        read_architecture(path)


def test_size_check_counts_every_kernel_and_bias() -> None:
    """The parameter count is the sum of fan-in x units (+ units for a bias)."""
    limits = LegacyLimits(max_parameters=8 * 12 + 12)
    check_size(8, [DenseSpec("a", 12, "relu", True)], limits, "m.json")
    with pytest.raises(BundleError, match="120 weights in all"):
        check_size(8, [DenseSpec("a", 12, "relu", True), DenseSpec("b", 1, "relu", False)],
                   limits, "m.json")


def _files_holding(root: Path, data: bytes) -> list[str]:
    """Every file under root whose bytes contain `data`."""
    return [str(path) for path in root.rglob("*") if path.is_file() and data in path.read_bytes()]


@pytest.mark.slow
def test_external_storage_cannot_exfiltrate_a_secret_file(
    seed: Path, tmp_path: Path, secret: bytes, pima_csv: Path, reliability
) -> None:
    """import-legacy of a model.h5 whose bias is 'stored' in a secret file: refused, no leak."""
    weights = spoiled(seed, tmp_path, external_storage)
    home = tmp_path / "home"
    result = run_cli("model", "import-legacy", seed / "model.json", weights, "--data", pima_csv,
                     "--out", tmp_path / "bundle", "--activate", home=home)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "layer 'dense_1' weight 'dense_1/bias:0': uses external storage" in lines[0]
    assert "credentials.json" not in lines[0]
    for chunk in (secret[:16], secret[16:32], secret[32:]):
        assert chunk.decode() not in result.stdout + result.stderr
        for written in (tmp_path / "bundle", home):  # what import-legacy writes, if anything
            assert not _files_holding(written, chunk)
    reliability.record(
        "Security", "legacy model.h5 whose bias is external storage in a secret file",
        "`model import-legacy` refuses it before reading; the secret's bytes reach no bundle, "
        "registry or output", refused=True, secret_bytes_leaked=0)


@pytest.mark.slow
def test_the_declared_shape_bomb_is_refused_within_a_memory_bound(
    seed: Path, tmp_path: Path, pima_csv: Path, reliability
) -> None:
    """A small model.h5 declaring a 1 GiB kernel: refused by import-legacy, memory measured."""
    bomb = spoiled(seed, tmp_path, shape_bomb)
    size = bomb.stat().st_size
    assert size < 64 << 10
    result = run_modelserve_measured("model", "import-legacy", seed / "model.json", bomb,
                                     "--data", pima_csv, home=tmp_path / "home", timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "has weights of shape [(16384, 16384), (12,)]" in lines[0]
    reliability.record(
        "Security", "declared-shape bomb: model.h5 declaring a 16384 x 16384 kernel",
        f"`model import-legacy` in a subprocess refuses it before reading; "
        f"bound {BOMB_MEMORY_BOUND_MIB} MiB peak RSS",
        file_kib=round(size / 1024, 1), declared_mib=BOMB_SIDE * BOMB_SIDE * 4 >> 20,
        peak_rss_mib=round(result.peak_mib), seconds=round(result.seconds, 2))
    assert result.peak_mib < BOMB_MEMORY_BOUND_MIB, result.peak_mib
