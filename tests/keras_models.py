"""Keras models as a user makes them in a notebook, trained on the tests' real data sets.

Functional models with layers the numpy plan does not cover (two branches joined by
Concatenate or Add, BatchNormalization, LayerNormalization, Dropout), and a Sequential one
within the plan. Each is trained briefly, saved as .keras, and returned with what the test
compares against: the Keras model object itself and the held-out rows of the default split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tabular import write_table

from modelserve.model.dataset import parse_table_file
from modelserve.model.importing import DEFAULT_SEED, DEFAULT_TEST_FRACTION
from modelserve.model.table import Table, split_table


@dataclass(frozen=True)
class Made:
    """A saved model, the data it was made on, and the rows an import holds out."""

    path: Path
    model: Any
    csv: Path
    label: str
    table: Table
    test_idx: np.ndarray

    @property
    def held_out(self) -> np.ndarray:
        """The held-out rows `model import` evaluates on by default."""
        return self.table.features[self.test_idx]

    def keras_outputs(self, rows: np.ndarray) -> np.ndarray:
        """Keras's own answer: the model called on the rows."""
        return np.asarray(self.model(rows, training=False), dtype=np.float32)


def _data(directory: Path, task: str) -> tuple[Path, str, Table, np.ndarray, np.ndarray]:
    """A data set's CSV, its table and the default split."""
    csv, label = write_table(directory, task)
    table = parse_table_file(csv, label)
    train_idx, test_idx = split_table(table, DEFAULT_TEST_FRACTION, DEFAULT_SEED)
    return csv, label, table, train_idx, test_idx


def _fit_and_save(model: Any, table: Table, train_idx: np.ndarray, loss: str, path: Path,
                  epochs: int) -> None:
    """Train briefly (a notebook's model, not a good one) and save as .keras."""
    target = table.target[train_idx]
    model.compile(optimizer="adam", loss=loss)
    model.fit(table.features[train_idx], target.astype(np.float32) if loss == "mse" else target,
              epochs=epochs, batch_size=16, verbose=0)
    model.save(path)


def functional_iris(directory: Path) -> Made:
    """Iris, multiclass: two branches (BatchNormalization; LayerNormalization) concatenated."""
    import keras

    keras.utils.set_random_seed(1)
    csv, label, table, train_idx, test_idx = _data(directory, "multiclass")
    inputs = keras.Input((len(table.feature_names),), name="measurements")
    normalize = keras.layers.Normalization()
    normalize.adapt(table.features[train_idx])
    x = normalize(inputs)
    left = keras.layers.BatchNormalization()(keras.layers.Dense(16, activation="relu")(x))
    right = keras.layers.LayerNormalization()(keras.layers.Dense(8, activation="tanh")(x))
    joined = keras.layers.Dropout(0.2)(keras.layers.Concatenate()([left, right]))
    outputs = keras.layers.Dense(len(table.classes), activation="softmax")(joined)
    model = keras.Model(inputs, outputs, name="iris_branches")
    path = directory / "iris_branches.keras"
    _fit_and_save(model, table, train_idx, "sparse_categorical_crossentropy", path, 40)
    return Made(path, model, csv, label, table, test_idx)


def functional_diabetes(directory: Path) -> Made:
    """Diabetes, regression: a residual Add, BatchNormalization, Dropout, in the target's units."""
    import keras

    keras.utils.set_random_seed(2)
    csv, label, table, train_idx, test_idx = _data(directory, "regression")
    target = table.target[train_idx]
    inputs = keras.Input((len(table.feature_names),))
    normalize = keras.layers.Normalization()
    normalize.adapt(table.features[train_idx])
    x = keras.layers.Dense(16, activation="relu")(normalize(inputs))
    branch = keras.layers.BatchNormalization()(keras.layers.Dense(16, activation="relu")(x))
    x = keras.layers.Dropout(0.1)(keras.layers.Add()([x, branch]))
    x = keras.layers.Dense(1)(x)
    outputs = keras.layers.Rescaling(float(target.std()), float(target.mean()))(x)
    model = keras.Model(inputs, outputs, name="diabetes_residual")
    path = directory / "diabetes_residual.keras"
    _fit_and_save(model, table, train_idx, "mse", path, 40)
    return Made(path, model, csv, label, table, test_idx)


def sequential_iris(directory: Path, units: int | None = None) -> Made:
    """Iris: Normalization and Dense layers only, which the plan covers (units: the output
    width, the class count unless given)."""
    import keras

    keras.utils.set_random_seed(3)
    csv, label, table, train_idx, test_idx = _data(directory, "multiclass")
    normalize = keras.layers.Normalization()
    normalize.adapt(table.features[train_idx])
    width = units or len(table.classes)
    model = keras.Sequential([keras.Input((len(table.feature_names),)), normalize,
                              keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(width, activation="softmax")])
    path = directory / f"iris_sequential_{width}.keras"
    if units is None:
        _fit_and_save(model, table, train_idx, "sparse_categorical_crossentropy", path, 20)
    else:  # a model that does not fit the data is refused before it is trained on
        model.save(path)
    return Made(path, model, csv, label, table, test_idx)
