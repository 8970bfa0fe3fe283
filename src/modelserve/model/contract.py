"""Manifest sections shared by trained and imported models: input contract, output, provenance."""

from __future__ import annotations

import platform
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import numpy as np

from modelserve.model.dataset import FEATURES, LABEL, Dataset
from modelserve.model.metrics import evaluate, evaluate_task
from modelserve.model.spec import FORMAT_V2, Task
from modelserve.model.table import Table

EXAMPLE_COUNT = 8
THRESHOLD = 0.5


def input_contract(dataset: Dataset, example_rows: np.ndarray, example_outputs: np.ndarray) -> dict:
    """Describe the input: feature names and order, dtype, observed ranges, example rows."""
    low, high = dataset.features.min(axis=0), dataset.features.max(axis=0)
    features = [
        {"name": name, "dtype": "float32", "min": float(low[i]), "max": float(high[i])}
        for i, name in enumerate(FEATURES)
    ]
    examples = [
        {"values": [float(v) for v in row], "probability": float(p)}
        for row, p in zip(example_rows, np.ravel(example_outputs), strict=True)
    ]
    return {"features": features, "shape": [None, len(FEATURES)], "examples": examples}


def output_contract() -> dict:
    """Describe the output: one probability of the positive class, and the labels' meaning."""
    return {
        "name": LABEL,
        "shape": [None, 1],
        "meaning": "probability that the patient develops diabetes within five years",
        "threshold": THRESHOLD,
        "labels": {"0": "no diabetes", "1": "diabetes"},
    }


def data_record(dataset: Dataset, split: dict) -> dict:
    """Describe the data a model was trained or evaluated on."""
    return {
        "sha256": dataset.sha256,
        "rows": dataset.rows,
        "positives": int(dataset.labels.sum()),
        "split": split,
    }


def libraries() -> dict:
    """Record the versions that produced a bundle."""
    names = ("keras", "tensorflow-cpu", "tensorflow", "numpy", "h5py")
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def now() -> str:
    """Current UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def pick_examples(indices: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Choose example rows from held-out indices, both classes represented."""
    positives = indices[labels[indices] == 1][: EXAMPLE_COUNT // 2]
    negatives = indices[labels[indices] == 0][: EXAMPLE_COUNT - len(positives)]
    return np.sort(np.concatenate([positives, negatives]))


def evaluated_manifest(model: Any, dataset: Dataset, test_idx: np.ndarray, split: dict) -> dict:
    """Build the manifest sections that come from running a model on the held-out rows."""
    probabilities = np.asarray(model(dataset.features[test_idx], training=False)).ravel()
    examples = pick_examples(test_idx, dataset.labels)
    example_outputs = model(dataset.features[examples], training=False)
    return {
        "created_at": now(),
        "input": input_contract(dataset, dataset.features[examples], np.asarray(example_outputs)),
        "output": output_contract(),
        "metrics": evaluate(dataset.labels[test_idx], probabilities, THRESHOLD),
        "data": data_record(dataset, split),
        "libraries": libraries(),
    }


def split_record(seed: int, test_fraction: float, train_rows: int, test_rows: int) -> dict:
    """Describe the held-out split so that it can be recomputed."""
    return {
        "method": "stratified",
        "seed": seed,
        "test_fraction": test_fraction,
        "train_rows": train_rows,
        "test_rows": test_rows,
    }


Predict = Callable[[np.ndarray], np.ndarray]


def table_manifest(predict: Predict, table: Table, test_idx: np.ndarray, split: dict) -> dict:
    """The format-2 manifest sections of a model of any task, from its held-out outputs."""
    outputs = np.asarray(predict(table.features[test_idx]), dtype=np.float32)
    examples = pick_table_examples(test_idx, table)
    example_outputs = np.asarray(predict(table.features[examples]), dtype=np.float32)
    low, high = table.features.min(axis=0), table.features.max(axis=0)
    features = [{"name": name, "dtype": "float32", "min": float(low[i]), "max": float(high[i])}
                for i, name in enumerate(table.feature_names)]
    output: dict[str, Any] = {"name": table.label, "classes": list(table.classes),
                              "shape": [None, outputs.shape[1]], "meaning": _meaning(table)}
    if table.task is Task.BINARY:
        output["threshold"] = THRESHOLD
    data = {"sha256": table.sha256, "rows": table.rows, "label": table.label,
            "features": list(table.feature_names), "split": split}
    return {
        "format": FORMAT_V2,
        "task": table.task.value,
        "created_at": now(),
        "input": {"features": features, "shape": [None, len(features)], "examples": [
            {"values": [float(v) for v in table.features[i]], "outputs": [float(v) for v in out]}
            for i, out in zip(examples, example_outputs, strict=True)]},
        "output": output,
        "metrics": evaluate_task(table.task, table.target[test_idx], outputs, THRESHOLD),
        "data": data,
        "libraries": libraries(),
    }


def _meaning(table: Table) -> str:
    """What the output says, in words."""
    if table.task is Task.BINARY:
        return f"probability that {table.label} is {table.classes[1]}"
    if table.task is Task.MULTICLASS:
        return f"probability of each {table.label} class"
    return f"predicted {table.label}"


def pick_table_examples(indices: np.ndarray, table: Table) -> np.ndarray:
    """Example rows from held-out indices: every class represented where there are classes."""
    if table.task is Task.REGRESSION or not len(indices):
        return np.sort(indices[:EXAMPLE_COUNT])
    per_class = max(1, EXAMPLE_COUNT // len(table.classes))
    chosen = [indices[table.target[indices] == k][:per_class] for k in range(len(table.classes))]
    return np.sort(np.concatenate(chosen))[: max(EXAMPLE_COUNT, len(table.classes))]


def table_split_record(table: Table, seed: int, test_fraction: float, train_rows: int,
                       test_rows: int) -> dict:
    """The held-out split of a table, so that it can be recomputed."""
    record = split_record(seed, test_fraction, train_rows, test_rows)
    record["method"] = "random" if table.task is Task.REGRESSION else "stratified"
    return record
