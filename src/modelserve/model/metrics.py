"""Held-out metrics of a binary classifier, in plain numpy."""

from __future__ import annotations

import math

import numpy as np

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
