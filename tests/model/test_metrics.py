"""Held-out metrics checked against scikit-learn as the independent computation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import sklearn.metrics as skm
from hypothesis import given, settings
from hypothesis import strategies as st

from modelserve.model.metrics import (
    LOG_LOSS_EPSILON,
    accuracy,
    confusion_matrix,
    evaluate,
    log_loss,
    roc_auc,
)

# Few distinct values, so ties between positives and negatives are the rule, not the exception.
TIED_PROBABILITIES = st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
ANY_PROBABILITY = st.floats(min_value=0.0, max_value=1.0)
EXAMPLES = settings(max_examples=100, deadline=None)


@st.composite
def scored(
    draw: st.DrawFn, probability: st.SearchStrategy[float] = ANY_PROBABILITY
) -> tuple[np.ndarray, np.ndarray]:
    """Draw 0/1 labels holding both classes and a probability for each."""
    labels = draw(st.lists(st.integers(0, 1), min_size=2, max_size=80))
    labels[:2] = [0, 1]
    labels = draw(st.permutations(labels))
    probabilities = draw(st.lists(probability, min_size=len(labels), max_size=len(labels)))
    return np.asarray(labels, dtype=np.int64), np.asarray(probabilities, dtype=np.float64)


@EXAMPLES
@given(scored())
def test_accuracy_matches_sklearn(data: tuple[np.ndarray, np.ndarray]) -> None:
    """Agree with sklearn's accuracy_score on thresholded predictions."""
    labels, probabilities = data
    predicted = (probabilities >= 0.5).astype(np.int64)
    assert accuracy(labels, predicted) == pytest.approx(skm.accuracy_score(labels, predicted))


@EXAMPLES
@given(scored())
def test_roc_auc_matches_sklearn(data: tuple[np.ndarray, np.ndarray]) -> None:
    """Agree with sklearn's roc_auc_score on continuous probabilities."""
    labels, probabilities = data
    assert roc_auc(labels, probabilities) == pytest.approx(
        skm.roc_auc_score(labels, probabilities), abs=1e-12
    )


@EXAMPLES
@given(scored(TIED_PROBABILITIES))
def test_roc_auc_with_heavy_ties_matches_sklearn(data: tuple[np.ndarray, np.ndarray]) -> None:
    """Agree with sklearn when most probabilities are tied (ties count half)."""
    labels, probabilities = data
    assert roc_auc(labels, probabilities) == pytest.approx(
        skm.roc_auc_score(labels, probabilities), abs=1e-12
    )


def test_roc_auc_float32_ties_stay_ties() -> None:
    """Keep float32 model outputs that are equal tied, as sklearn does."""
    labels = np.asarray([0, 1, 0, 1, 1, 0])
    probabilities = np.asarray([0.3, 0.3, 0.7, 0.7, 0.1, 0.9], dtype=np.float32)
    assert roc_auc(labels, probabilities) == pytest.approx(
        skm.roc_auc_score(labels, probabilities), abs=1e-12
    )


@pytest.mark.parametrize(
    ("labels", "probabilities", "expected"),
    [
        ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 1.0),
        ([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1], 0.0),
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5),
        ([0, 1, 1], [0.5, 0.5, 0.9], 0.75),
    ],
)
def test_roc_auc_known_values(
    labels: list[int], probabilities: list[float], expected: float
) -> None:
    """Give 1 for a perfect ranking, 0 for a reversed one, 0.5 for all ties."""
    assert roc_auc(np.asarray(labels), np.asarray(probabilities)) == pytest.approx(expected)


@pytest.mark.parametrize("only", [0, 1])
def test_roc_auc_with_one_class_is_nan(only: int) -> None:
    """Return NaN when the held-out labels have a single class."""
    assert math.isnan(roc_auc(np.full(5, only), np.linspace(0, 1, 5)))


@EXAMPLES
@given(scored())
def test_log_loss_matches_sklearn(data: tuple[np.ndarray, np.ndarray]) -> None:
    """Agree with sklearn's log_loss away from our 1e-7 clip."""
    labels, probabilities = data
    probabilities = np.clip(probabilities, 1e-6, 1 - 1e-6)
    assert log_loss(labels, probabilities) == pytest.approx(
        skm.log_loss(labels, probabilities, labels=[0, 1]), rel=1e-9
    )


def test_log_loss_clips_certain_mistakes() -> None:
    """Keep log loss finite for a confident wrong answer: -log(1e-7) per row."""
    labels, probabilities = np.asarray([1, 0]), np.asarray([0.0, 1.0])
    assert log_loss(labels, probabilities) == pytest.approx(-math.log(LOG_LOSS_EPSILON), rel=1e-6)
    assert log_loss(np.asarray([1, 0]), np.asarray([1.0, 0.0])) == pytest.approx(0.0, abs=1e-6)


@EXAMPLES
@given(scored())
def test_confusion_matrix_matches_sklearn(data: tuple[np.ndarray, np.ndarray]) -> None:
    """Lay out [[tn, fp], [fn, tp]] exactly as sklearn's confusion_matrix."""
    labels, probabilities = data
    predicted = (probabilities >= 0.5).astype(np.int64)
    expected = skm.confusion_matrix(labels, predicted, labels=[0, 1]).tolist()
    assert confusion_matrix(labels, predicted) == expected


def test_confusion_matrix_layout() -> None:
    """Put each outcome in its documented cell."""
    labels = np.asarray([0, 0, 0, 1, 1, 1, 1])
    predicted = np.asarray([0, 0, 1, 0, 1, 1, 1])
    assert confusion_matrix(labels, predicted) == [[2, 1], [1, 3]]


@EXAMPLES
@given(scored(), st.sampled_from([0.25, 0.5, 0.75]))
def test_evaluate_fields(data: tuple[np.ndarray, np.ndarray], threshold: float) -> None:
    """Report every metric, consistent with sklearn, as plain JSON-ready numbers."""
    labels, probabilities = data
    result = evaluate(labels, probabilities.reshape(-1, 1).astype(np.float32), threshold)
    float32 = probabilities.astype(np.float32).astype(np.float64)
    predicted = (float32 >= threshold).astype(np.int64)
    assert set(result) == {
        "accuracy",
        "roc_auc",
        "log_loss",
        "confusion_matrix",
        "rows",
        "threshold",
    }
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted))
    assert result["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, float32), abs=1e-12)
    assert result["log_loss"] == pytest.approx(log_loss(labels, float32))
    assert (
        result["confusion_matrix"]
        == skm.confusion_matrix(labels, predicted, labels=[0, 1]).tolist()
    )
    assert result["rows"] == len(labels)
    assert result["threshold"] == threshold
    assert json.loads(json.dumps(result)) == result


def test_evaluate_threshold_is_inclusive() -> None:
    """Predict positive for a probability equal to the threshold."""
    result = evaluate(np.asarray([0, 1, 1]), np.asarray([0.2, 0.5, 0.7]))
    assert result["confusion_matrix"] == [[1, 0], [0, 2]]
    assert result["accuracy"] == 1.0
