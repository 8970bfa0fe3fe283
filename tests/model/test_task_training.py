"""Training fits each task: the head and loss it needs, seeded, and metrics that beat a baseline."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import datasets
from tabular import as_csv, iris_csv

from modelserve.model.metrics import evaluate_multiclass, regression_metrics
from modelserve.model.plan import compile_plan
from modelserve.model.runtime import plan_matches
from modelserve.model.spec import Task
from modelserve.model.table import parse_table
from modelserve.model.training import TrainingConfig, fit_table

pytestmark = pytest.mark.slow  # TensorFlow training


def test_iris_trains_a_softmax_head_that_classifies():
    """Three classes: a 3-unit softmax, sparse cross-entropy, held-out accuracy over 0.9."""
    table = parse_table(iris_csv(), "species")
    config = TrainingConfig(hidden_layers=(8,), epochs=60, batch_size=8, learning_rate=0.01)
    model, _train, test = fit_table(table, config)
    assert model.layers[-1].units == 3 and model.loss == "sparse_categorical_crossentropy"
    probabilities = np.asarray(model(table.features[test], training=False))
    assert probabilities.shape == (len(test), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    found = evaluate_multiclass(table.target[test], probabilities)
    assert found["accuracy"] > 0.9, found


def test_diabetes_progression_trains_a_linear_head_in_the_targets_units():
    """Regression: MSE, output rescaled to the target; RMSE well under predicting the mean."""
    data = datasets.load_diabetes()
    table = parse_table(as_csv(["progression", *data.feature_names], [data.target, *data.data.T]),
                        "progression")
    assert table.task is Task.REGRESSION
    config = TrainingConfig(hidden_layers=(16,), epochs=40, batch_size=16, learning_rate=0.01)
    model, train, test = fit_table(table, config)
    assert model.loss == "mean_squared_error"
    predicted = np.asarray(model(table.features[test], training=False)).ravel()
    found = regression_metrics(table.target[test], predicted)
    baseline = regression_metrics(table.target[test],
                                  np.full(len(test), table.target[train].mean()))
    assert found["rmse"] < 0.85 * baseline["rmse"] and found["r2"] > 0.3, (found, baseline)
    plan = compile_plan(model, "00" * 32)  # Normalization, Dense, Rescaling: numpy serves it
    assert plan is not None and plan_matches(plan, model, table.features)


def test_the_same_seed_and_data_give_the_same_model():
    """Reproducible per task, as the binary training is."""
    table = parse_table(iris_csv(), "species")
    config = TrainingConfig(hidden_layers=(4,), epochs=3)
    first, _, test = fit_table(table, config)
    second, _, _ = fit_table(table, config)
    rows = table.features[test]
    assert np.array_equal(np.asarray(first(rows)), np.asarray(second(rows)))
