"""Train the reference MLP (8 -> 12 -> 8 -> 1) reproducibly and write it as a bundle."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelserve.model import contract
from modelserve.model.backend import import_keras, import_tensorflow
from modelserve.model.bundle import write_bundle
from modelserve.model.dataset import FEATURES, Dataset, stratified_split
from modelserve.model.spec import Task
from modelserve.model.table import Table, split_table

HIDDEN_ACTIVATIONS = ("relu", "sigmoid", "tanh")


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that decides a training run; recorded in the manifest."""

    hidden_layers: tuple[int, ...] = (12, 8)
    activation: str = "relu"
    epochs: int = 150
    batch_size: int = 10
    learning_rate: float = 0.001
    seed: int = 7
    test_fraction: float = 0.2


EpochCallback = Callable[[int, dict], None]


def build_model(config: TrainingConfig, train_features: np.ndarray) -> Any:
    """Build the MLP with a Normalization layer adapted to the training rows."""
    keras = import_keras()

    normalization = keras.layers.Normalization(name="normalize")
    normalization.adapt(train_features)
    layers = [keras.Input((len(FEATURES),), name="features"), normalization]
    for index, units in enumerate(config.hidden_layers, start=1):
        layers.append(
            keras.layers.Dense(units, activation=config.activation, name=f"hidden_{index}")
        )
    layers.append(keras.layers.Dense(1, activation="sigmoid", name="diabetes"))
    model = keras.Sequential(layers, name="pima_mlp")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _seed_everything(seed: int) -> None:
    """Make a run repeatable: seeded Python, numpy and TensorFlow, deterministic kernels."""
    keras = import_keras()
    tf = import_tensorflow()

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def _epoch_callback(on_epoch: EpochCallback | None) -> list:
    """Adapt a plain function to a Keras callback list."""
    if on_epoch is None:
        return []
    keras = import_keras()
    report = on_epoch  # bound after the None check, so the method below sees a callable
    callback_base: Any = keras.callbacks.Callback  # Keras is untyped: a dynamic base class

    class _Progress(callback_base):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            report(epoch + 1, dict(logs or {}))

    return [_Progress()]


def train_bundle(
    dataset: Dataset,
    config: TrainingConfig,
    out_dir: Path,
    on_epoch: EpochCallback | None = None,
) -> dict:
    """Train on a seeded stratified split, evaluate on the held-out rows, write a bundle."""
    _seed_everything(config.seed)
    train_idx, test_idx = stratified_split(dataset.labels, config.test_fraction, config.seed)
    model = build_model(config, dataset.features[train_idx])
    model.fit(
        dataset.features[train_idx],
        dataset.labels[train_idx],
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=_epoch_callback(on_epoch),
    )
    split = contract.split_record(config.seed, config.test_fraction, len(train_idx), len(test_idx))
    manifest = contract.evaluated_manifest(model, dataset, test_idx, split)
    manifest.update(training=asdict(config), source={"kind": "trained"})
    return write_bundle(out_dir, model, manifest)


@dataclass(frozen=True)
class Head:
    """The output layer and the loss that fit a task."""

    units: int
    activation: str
    loss: str


def head_for(table: Table) -> Head:
    """Sigmoid + binary cross-entropy; softmax over k classes; linear + mean squared error."""
    if table.task is Task.BINARY:
        return Head(1, "sigmoid", "binary_crossentropy")
    if table.task is Task.MULTICLASS:
        return Head(len(table.classes), "softmax", "sparse_categorical_crossentropy")
    return Head(1, "linear", "mean_squared_error")


def build_table_model(config: TrainingConfig, table: Table, train_idx: np.ndarray) -> Any:
    """The MLP for a table's task: normalization inside, the task's head, compiled.

    A regression model ends in a Rescaling to the target's mean and spread, so that it starts
    near the right scale and answers in the target's own units.
    """
    keras = import_keras()
    head = head_for(table)
    normalization = keras.layers.Normalization(name="normalize")
    normalization.adapt(table.features[train_idx])
    layers = [keras.Input((len(table.feature_names),), name="features"), normalization]
    for index, units in enumerate(config.hidden_layers, start=1):
        layers.append(
            keras.layers.Dense(units, activation=config.activation, name=f"hidden_{index}"))
    layers.append(keras.layers.Dense(head.units, activation=head.activation, name="output"))
    if table.task is Task.REGRESSION:
        target = table.target[train_idx]
        spread = float(target.std()) or 1.0
        layers.append(keras.layers.Rescaling(spread, float(target.mean()), name="target_scale"))
    model = keras.Sequential(layers, name=f"{table.task.value}_mlp")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
                  loss=head.loss)
    return model


def fit_table(table: Table, config: TrainingConfig,
              on_epoch: EpochCallback | None = None) -> tuple[Any, np.ndarray, np.ndarray]:
    """Train a table's model on a seeded split: the model and the split's indices."""
    _seed_everything(config.seed)
    train_idx, test_idx = split_table(table, config.test_fraction, config.seed)
    model = build_table_model(config, table, train_idx)
    target = table.target[train_idx]
    model.fit(table.features[train_idx],
              target.astype(np.float32) if table.task is Task.REGRESSION else target,
              epochs=config.epochs, batch_size=config.batch_size, shuffle=True, verbose=0,
              callbacks=_epoch_callback(on_epoch))
    return model, train_idx, test_idx


def train_table_bundle(table: Table, config: TrainingConfig, out_dir: Path,
                       on_epoch: EpochCallback | None = None) -> dict:
    """Train a table's model, evaluate it on the held-out rows, write a format-2 bundle."""
    model, train_idx, test_idx = fit_table(table, config, on_epoch)
    split = contract.table_split_record(table, config.seed, config.test_fraction,
                                        len(train_idx), len(test_idx))
    manifest = contract.table_manifest(
        lambda rows: np.asarray(model(rows, training=False)), table, test_idx, split)
    manifest.update(training=asdict(config), source={"kind": "trained"})
    return write_bundle(out_dir, model, manifest)
