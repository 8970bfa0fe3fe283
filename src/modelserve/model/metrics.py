"""Held-out metrics of each task (binary, multiclass, regression), in plain numpy."""

from __future__ import annotations

import math

import numpy as np

from modelserve.model.spec import Task

LOG_LOSS_EPSILON = 1e-7


def format_value(value: object, digits: int, undefined: str = "-") -> str:
    """A metric as text: a finite number with `digits` decimals, anything else `undefined`."""
    # roc_auc is null when the held-out rows hold one class only.
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.{digits}f}"
    return undefined


def accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Share of predicted labels equal to the truth."""
    return float(np.mean(np.asarray(labels) == np.asarray(predicted)))


def roc_auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Area under the ROC curve: the chance a positive outranks a negative (ties count half)."""
    labels = np.asarray(labels).astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = _average_ranks(np.asarray(probabilities, dtype=np.float64))
    rank_sum = ranks[labels].sum()
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Return 1-based ranks, tied values sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    average = (starts + ends + 1) / 2.0
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(average, ends - starts)
    return ranks


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean binary cross-entropy, probabilities clipped away from 0 and 1."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), LOG_LOSS_EPSILON, 1 - LOG_LOSS_EPSILON)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray) -> list[list[int]]:
    """Return [[true negatives, false positives], [false negatives, true positives]]."""
    y, p = np.asarray(labels).astype(bool), np.asarray(predicted).astype(bool)
    return [
        [int(np.sum(~y & ~p)), int(np.sum(~y & p))],
        [int(np.sum(y & ~p)), int(np.sum(y & p))],
    ]


def evaluate(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> dict:
    """Compute every held-out metric the manifest records."""
    probabilities = np.asarray(probabilities, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    auc = roc_auc(labels, probabilities)
    predicted = (probabilities >= threshold).astype(np.int64)
    return {
        "accuracy": accuracy(labels, predicted),
        "roc_auc": None if np.isnan(auc) else auc,  # one class held out: undefined, JSON null
        "log_loss": log_loss(labels, probabilities),
        "confusion_matrix": confusion_matrix(labels, predicted),
        "rows": int(len(probabilities)),
        "threshold": threshold,
    }


def macro_f1(labels: np.ndarray, predicted: np.ndarray, classes: int) -> float:
    """Mean over classes of F1 (a class never predicted nor present scores 0, as sklearn)."""
    y, p = np.asarray(labels), np.asarray(predicted)
    scores = []
    for k in range(classes):
        true_positive = np.sum((y == k) & (p == k))
        denominator = np.sum(y == k) + np.sum(p == k)
        scores.append(2 * true_positive / denominator if denominator else 0.0)
    return float(np.mean(scores))


def multiclass_log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean cross-entropy of the true class, probabilities clipped and renormalized."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), LOG_LOSS_EPSILON, 1)
    p /= p.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(p[np.arange(len(p)), np.asarray(labels)])))


def multiclass_confusion(labels: np.ndarray, predicted: np.ndarray,
                         classes: int) -> list[list[int]]:
    """A k x k matrix of counts: row = the true class, column = the predicted one."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predicted)), 1)
    return matrix.tolist()


def regression_metrics(values: np.ndarray, predicted: np.ndarray) -> dict:
    """RMSE, MAE and R² (None when the true values are constant: R² is undefined)."""
    y = np.asarray(values, dtype=np.float64).ravel()
    error = np.asarray(predicted, dtype=np.float64).ravel() - y
    total = float(np.sum((y - y.mean()) ** 2))
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "r2": None if total == 0 else 1 - float(np.sum(error**2)) / total,
        "rows": int(len(y)),
    }


def evaluate_multiclass(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """Every held-out metric of a k-class model, from its (rows, k) probabilities."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    classes = probabilities.shape[1]
    predicted = probabilities.argmax(axis=1)
    return {
        "accuracy": accuracy(labels, predicted),
        "macro_f1": macro_f1(labels, predicted, classes),
        "log_loss": multiclass_log_loss(labels, probabilities),
        "confusion_matrix": multiclass_confusion(labels, predicted, classes),
        "rows": int(len(probabilities)),
    }


def evaluate_task(task: Task, target: np.ndarray, outputs: np.ndarray,
                  threshold: float = 0.5) -> dict:
    """The held-out metrics of a model of any task, from its (rows, width) outputs."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if task is Task.BINARY:
        return evaluate(target, outputs[:, 0], threshold)
    if task is Task.MULTICLASS:
        return evaluate_multiclass(target, outputs)
    return regression_metrics(target, outputs[:, 0])
