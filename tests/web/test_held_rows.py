"""The rows of /predictions in each task's terms, and which stored data may judge a model."""

from __future__ import annotations

import numpy as np
import pytest
from manifests import v1_manifest, v2_manifest

from modelserve.errors import UserError
from modelserve.model.dataset import import_table
from modelserve.model.holdout import HeldOut
from modelserve.model.spec import Task, read_spec
from modelserve.web.evaluation import held_rows, rows_to_judge

FEATURES = np.array([[5.1, 0.2], [6.3, 1.8]], np.float32)


def held(task: Task, labels, classes=()) -> HeldOut:
    """Two held-out rows (lines 2 and 9) with the given truth."""
    return HeldOut(FEATURES, np.asarray(labels), np.array([2, 9]), "sha", "", task, classes)


def test_multiclass_rows_name_the_classes_and_the_chosen_ones_probability():
    """Truth and answer by class name; the probability is the predicted class's."""
    spec = read_spec(v2_manifest("multiclass", ["setosa", "versicolor", "virginica"],
                                 [0.8, 0.1, 0.1], {"accuracy": 1.0, "macro_f1": 1.0,
                                                   "log_loss": 0.1}))
    outputs = np.array([[0.8, 0.15, 0.05], [0.1, 0.6, 0.3]], np.float32)
    rows = held_rows(spec, held(Task.MULTICLASS, [0, 2], spec.output.classes), outputs,
                     np.array([0, 1]))
    assert [(r.line, r.truth, r.predicted, r.score, r.right) for r in rows] == [
        (2, "setosa", "setosa", "0.8000", True), (9, "virginica", "versicolor", "0.6000", False)]
    assert rows[0].values == pytest.approx((5.1, 0.2))


def test_regression_rows_give_the_value_and_the_residual():
    """Actual, predicted and actual - predicted; no right or wrong."""
    spec = read_spec(v2_manifest("regression", [], [151.0],
                                 {"rmse": 10.0, "mae": 8.0, "r2": 0.5}))
    outputs = np.array([[140.5], [80.0]], np.float32)
    rows = held_rows(spec, held(Task.REGRESSION, [151.0, 75.0]), outputs, np.zeros(0, np.int8))
    assert [(r.truth, r.predicted, r.score, r.right) for r in rows] == [
        ("151", "140.5", "10.5", None), ("75", "80", "-5", None)]


def test_binary_rows_stay_as_the_pima_pages_showed_them():
    """0/1 truth and answer and the probability to 4 decimals, for a format 1 model."""
    spec = read_spec(v1_manifest())
    features = np.zeros((2, 8), np.float32)
    rows = held_rows(spec, HeldOut(features, np.array([1, 0]), np.array([1, 5]), "sha", ""),
                     np.array([[0.91234], [0.7]], np.float32), np.array([1, 1]))
    assert [(r.truth, r.predicted, r.score, r.right) for r in rows] == [
        ("1", "1", "0.9123", True), ("0", "1", "0.7000", False)]


@pytest.fixture
def stored(tmp_path):
    """A stored iris-like table: species (3 classes) over sepal_length and petal_width."""
    lines = ["species,sepal_length,petal_width"]
    lines += [f"{name},{5 + i / 10},{k + i / 100}" for k, name in
              enumerate(["setosa", "versicolor", "virginica"]) for i in range(40)]
    csv = tmp_path / "iris.csv"
    csv.write_text("\n".join(lines) + "\n")
    import_table(csv, tmp_path / "data", "species")
    return tmp_path / "data"


METRICS = {"multiclass": {"accuracy": 1.0, "macro_f1": 1.0, "log_loss": 0.1},
           "regression": {"rmse": 1.0, "mae": 1.0, "r2": 0.5}}


def test_stored_data_of_the_models_columns_task_and_classes_judges_it(stored):
    """The model's own kind of data: its held-out rows."""
    spec = read_spec(v2_manifest("multiclass", ["setosa", "versicolor", "virginica"],
                                 [0.8, 0.1, 0.1], METRICS["multiclass"]))
    rows = rows_to_judge(stored, spec)
    assert rows.task is Task.MULTICLASS and len(rows.labels) == 24


@pytest.mark.parametrize(("task", "classes", "refusal"), [
    ("regression", [], "the stored data is multiclass data; this model is a regression model"),
    ("multiclass", ["red", "green", "blue"], "the stored data has classes setosa, versicolor, "
                                             "virginica; the model answers red, green, blue"),
])
def test_stored_data_of_another_task_or_classes_is_refused_in_one_line(stored, task, classes,
                                                                      refusal):
    """Same columns, but another task or other classes: one line, for the page to show."""
    outputs = [1.0 / len(classes)] * len(classes) if classes else [3.0]
    spec = read_spec(v2_manifest(task, classes, outputs, METRICS[task]))
    with pytest.raises(UserError) as refused:
        rows_to_judge(stored, spec)
    assert str(refused.value) == refusal
