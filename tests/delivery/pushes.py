"""Model files to push: the seed models, and one broken copy per refusal the gate must make."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np

LAST_KERNEL = "dense_3/dense_3/kernel:0"
LAST_BIAS = "dense_3/dense_3/bias:0"


def copy_seed(shared_data: Path, name: str, into: Path) -> None:
    """Put a seed model's model.json and model.h5 into a checkout (in place of a bundle)."""
    for file in ("model.keras", "manifest.json"):
        (into / file).unlink(missing_ok=True)
    for file in ("model.json", "model.h5"):
        shutil.copyfile(shared_data / "seed-model" / name / file, into / file)


def corrupt_h5(into: Path) -> None:
    """Garbage in place of the weights file."""
    (into / "model.h5").write_bytes(b"this is not HDF5" * 100)


def wrong_input_size(into: Path) -> None:
    """An architecture that takes 7 features, with weights cut to match."""
    spec = json.loads((into / "model.json").read_text())
    spec["config"]["layers"][0]["config"]["batch_input_shape"] = [None, 7]
    (into / "model.json").write_text(json.dumps(spec))
    with h5py.File(into / "model.h5", "r+") as weights:
        kernel = weights["dense_1/dense_1/kernel:0"][...]
        del weights["dense_1/dense_1/kernel:0"]
        weights["dense_1/dense_1"].create_dataset("kernel:0", data=kernel[:7])


def nan_weights(into: Path) -> None:
    """NaN in the output layer: every output is NaN."""
    with h5py.File(into / "model.h5", "r+") as weights:
        weights[LAST_KERNEL][...] = np.nan


def much_worse(into: Path) -> None:
    """An output layer that says 'diabetes' for everybody: accuracy falls to ~0.35."""
    with h5py.File(into / "model.h5", "r+") as weights:
        weights[LAST_KERNEL][...] = 0.0
        weights[LAST_BIAS][...] = 5.0


def nudged(into: Path, amount: float) -> None:
    """The same model with its output bias moved a hair: new files, the same answers nearly."""
    with h5py.File(into / "model.h5", "r+") as weights:
        weights[LAST_BIAS][...] += amount


def too_large(into: Path) -> None:
    """A good model with 1.5 MB of ballast beside it: over --max-mb 1, under git's pack limit."""
    (into / "ballast.bin").write_bytes(np.random.default_rng(0).bytes(3 << 19))


def no_model(into: Path) -> None:
    """Only a README: nothing to deploy."""
    for file in ("model.json", "model.h5"):
        (into / file).unlink(missing_ok=True)
    (into / "README").write_text("no model here\n")


def both_kinds(into: Path) -> None:
    """A bundle's two files beside the legacy pair: which one is meant is anybody's guess."""
    (into / "model.keras").write_bytes(b"PK")
    (into / "manifest.json").write_text("{}")


def copy_bundle(bundle: Path, into: Path) -> None:
    """Put a Keras 3 bundle (model.keras + manifest.json) into a checkout."""
    for file in ("model.json", "model.h5"):
        (into / file).unlink(missing_ok=True)
    for file in ("model.keras", "manifest.json"):
        shutil.copyfile(bundle / file, into / file)


def renamed_feature(into: Path) -> None:
    """A consistent bundle whose contract calls `age` `years`: not production's contract."""
    from modelserve.model.bundle import read_manifest, write_manifest

    manifest = read_manifest(into)
    manifest["input"]["features"][-1]["name"] = "years"
    manifest.pop("version", None)
    write_manifest(into, manifest)


# Each kind of push the gate must refuse, and words its `remote:` line must hold.
REFUSED_KINDS = [
    (corrupt_h5, "cannot be converted"),
    (wrong_input_size, "cannot be converted"),
    (nan_weights, "NaN"),
    (much_worse, "below the live model's"),
    (no_model, "no model in the push"),
    (both_kinds, "both a bundle"),
]


def functional_bundle(dataset, out: Path) -> dict:
    """A Functional-API model (two branches merged) as a bundle: no plan expresses it."""
    from modelserve.model import contract
    from modelserve.model.backend import import_keras
    from modelserve.model.bundle import write_bundle
    from modelserve.model.dataset import stratified_split

    keras = import_keras()
    keras.utils.set_random_seed(5)
    train_idx, test_idx = stratified_split(dataset.labels, 0.2, 7)
    normalization = keras.layers.Normalization()
    normalization.adapt(dataset.features[train_idx])
    inputs = keras.Input((dataset.features.shape[1],), name="features")
    scaled = normalization(inputs)
    wide = keras.layers.Dense(12, activation="relu")(scaled)
    narrow = keras.layers.Dense(4, activation="tanh")(scaled)
    merged = keras.layers.Concatenate()([wide, narrow])
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(merged))
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.fit(dataset.features[train_idx], dataset.labels[train_idx], epochs=15,
              batch_size=16, verbose=0)
    split = contract.split_record(7, 0.2, len(train_idx), len(test_idx))
    manifest = contract.evaluated_manifest(model, dataset, test_idx, split)
    manifest.update(source={"kind": "trained", "note": "Functional API, built by a test"})
    return write_bundle(out, model, manifest)
