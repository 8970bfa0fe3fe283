"""What a model's raw outputs mean, per task: labels, tensors, JSON answers and CSV columns.

Pure numpy, no Keras: the runtime, the worker, the web API, the pages and `modelserve
predict` read outputs here, so that a binary, a multiclass and a regression model are told
apart in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from modelserve.model.spec import Output, Task


@dataclass(frozen=True)
class Tensor:
    """One output tensor as the Open Inference Protocol names it: [rows, width] of a datatype."""

    name: str
    datatype: str
    width: int


def labels_for(output: Output, outputs: np.ndarray) -> np.ndarray:
    """The answer per row as a class index (binary: by threshold; multiclass: the likeliest).

    A regression model has no classes: its labels are empty.
    """
    if output.task is Task.REGRESSION or len(outputs) == 0:
        return np.zeros(0, np.int8)
    if output.task is Task.BINARY:
        threshold = 0.5 if output.threshold is None else output.threshold
        return (outputs[:, 0] >= threshold).astype(np.int8)
    return outputs.argmax(axis=1).astype(np.int8)  # at most MAX_CLASSES (100) classes


def tensors(output: Output) -> tuple[Tensor, ...]:
    """The output tensors a model of this task answers with."""
    if output.task is Task.BINARY:
        return (Tensor("probability", "FP32", 1), Tensor("label", "INT8", 1))
    if output.task is Task.MULTICLASS:
        return (Tensor("probabilities", "FP32", output.width), Tensor("label", "INT32", 1))
    return (Tensor("value", "FP32", 1),)


def tensor_data(output: Output, outputs: np.ndarray, labels: np.ndarray) -> dict[str, list]:
    """Each tensor's values, flattened in row-major order as the protocol sends them."""
    if output.task is Task.BINARY:
        return {"probability": outputs[:, 0].tolist(), "label": labels.tolist()}
    if output.task is Task.MULTICLASS:
        return {"probabilities": outputs.ravel().tolist(), "label": labels.tolist()}
    return {"value": outputs[:, 0].tolist()}


def v1_answer(output: Output, outputs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The /api/v1/predict fields of an answer.

    binary: probabilities and 0/1 labels (as before), with the class names; multiclass: one
    list of per-class probabilities per row and the likeliest class's name; regression: the
    values.
    """
    if output.task is Task.BINARY:
        return {"task": output.task.value, "probabilities": outputs[:, 0].tolist(),
                "labels": labels.tolist(), "classes": list(output.classes)}
    if output.task is Task.MULTICLASS:
        return {"task": output.task.value, "probabilities": outputs.tolist(),
                "labels": [output.classes[i] for i in labels.tolist()],
                "classes": list(output.classes)}
    return {"task": output.task.value, "values": outputs[:, 0].tolist()}


def csv_columns(output: Output) -> tuple[str, ...]:
    """The answer's columns in a scored CSV (model_version follows them)."""
    if output.task is Task.BINARY:
        return ("probability", "label")
    if output.task is Task.MULTICLASS:
        return (*(f"p_{name}" for name in output.classes), "label")
    return ("value",)


def csv_arrays(output: Output, outputs: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    """Each csv_columns column of a batch as one array (no loop per value: files are large)."""
    if output.task is Task.BINARY:
        return [outputs[:, 0], labels]
    if output.task is Task.MULTICLASS:
        names = np.asarray(output.classes, dtype=str)
        return [*(np.ascontiguousarray(outputs[:, i]) for i in range(output.width)),
                names[labels]]
    return [outputs[:, 0]]


def shown_answer(output: Output, outputs: np.ndarray, labels: np.ndarray) -> str:
    """One row's answer in words, for the page and the terminal."""
    if output.task is Task.BINARY:
        return f"{output.classes[int(labels[0])]} (probability {float(outputs[0, 0]):.3f})"
    if output.task is Task.MULTICLASS:
        index = int(labels[0])
        return f"{output.classes[index]} (probability {float(outputs[0, index]):.3f})"
    return f"{float(outputs[0, 0]):.6g}"
