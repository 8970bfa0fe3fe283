"""Each task's metrics agree with scikit-learn's on random data (the reference implementation)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as reference

from modelserve.model.metrics import evaluate_multiclass, regression_metrics

RNG = np.random.default_rng(11)


@pytest.mark.parametrize("classes", [2, 3, 7])
def test_multiclass_metrics_match_sklearn(classes: int):
    """Accuracy, macro F1, log loss and the confusion matrix, a class sometimes absent."""
    labels = RNG.integers(0, classes, 300)
    labels[labels == classes - 1] = 0  # one class never occurs in the truth
    raw = RNG.random((300, classes)) + np.eye(classes)[labels]
    probabilities = raw / raw.sum(axis=1, keepdims=True)
    ours = evaluate_multiclass(labels, probabilities)
    predicted = probabilities.argmax(axis=1)
    every = list(range(classes))
    assert ours["accuracy"] == pytest.approx(reference.accuracy_score(labels, predicted))
    assert ours["macro_f1"] == pytest.approx(
        reference.f1_score(labels, predicted, average="macro", labels=every, zero_division=0))
    assert ours["log_loss"] == pytest.approx(
        reference.log_loss(labels, probabilities, labels=every), rel=1e-6)
    assert ours["confusion_matrix"] == reference.confusion_matrix(labels, predicted,
                                                                  labels=every).tolist()


def test_regression_metrics_match_sklearn():
    """RMSE, MAE and R²; R² is undefined (None) for constant truth."""
    values = RNG.normal(100, 30, 500)
    predicted = values + RNG.normal(0, 10, 500)
    ours = regression_metrics(values, predicted)
    assert ours["rmse"] == pytest.approx(np.sqrt(reference.mean_squared_error(values, predicted)))
    assert ours["mae"] == pytest.approx(reference.mean_absolute_error(values, predicted))
    assert ours["r2"] == pytest.approx(reference.r2_score(values, predicted))
    assert regression_metrics(np.ones(5), np.arange(5))["r2"] is None
