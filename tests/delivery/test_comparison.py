"""The gate's judgement per task, as pure functions: headline metric, tolerance, fit."""

from __future__ import annotations

import numpy as np
import pytest
from manifests import v1_manifest, v2_manifest

from modelserve.delivery.activate import _metrics_line
from modelserve.delivery.comparison import (
    compare,
    contract_refusal,
    data_refusal,
    figure,
    task_metrics,
)
from modelserve.delivery.gate import Verdict, _acceptance
from modelserve.model import metrics
from modelserve.model.spec import Metrics, Task, read_spec
from modelserve.registry import Registry, VersionInfo

IRIS = ["setosa", "versicolor", "virginica"]
REGRESSION = {"rmse": 55.0, "mae": 44.0, "r2": 0.4}
MULTICLASS = {"accuracy": 0.9, "macro_f1": 0.9, "log_loss": 0.3}


def rmse(value: float, rows: int = 88) -> Metrics:
    """Regression metrics with this RMSE."""
    return Metrics(Task.REGRESSION, rows, {"rmse": value, "mae": value * 0.8, "r2": 0.4})


def accuracy(value: float, rows: int = 154) -> Metrics:
    """Binary metrics with this accuracy."""
    return Metrics(Task.BINARY, rows, {"accuracy": value, "roc_auc": 0.8, "log_loss": 0.5})


def regression_spec(features: tuple[str, ...] = ("sepal_length", "petal_width")):
    """A format 2 regression model of two features."""
    manifest = v2_manifest("regression", [], [150.0], REGRESSION)
    manifest["output"]["name"] = "progression"
    manifest["input"]["features"] = [{"name": name} for name in features]
    return read_spec(manifest)


def iris_spec(classes: list[str] = IRIS):
    """A format 2 multiclass model of two features."""
    return read_spec(v2_manifest("multiclass", classes, [0.8, 0.1, 0.1], MULTICLASS))


def test_a_regression_model_is_judged_on_rmse_with_a_relative_tolerance():
    """Lower is better; 2% tolerance is 2% of the live RMSE, whatever the target's units."""
    assert compare(rmse(56.0), rmse(55.0), 0.02).refusal == ""  # 1.8% above: within
    assert compare(rmse(50.0), rmse(55.0), 0.0).refusal == ""  # better
    worse = compare(rmse(60.0), rmse(55.0), 0.02)
    assert worse.refusal == ("RMSE 60.00 on this server's 88 evaluation rows is 9.1% above "
                             "the live model's 55.00 (tolerance: 2% of the live model's RMSE)")
    # The same shares on a target a thousand times smaller: the same verdicts.
    assert compare(rmse(0.056), rmse(0.055), 0.02).refusal == ""
    assert "9.1% above the live model's 0.05500" in compare(rmse(0.06), rmse(0.055),
                                                            0.02).refusal


def test_accuracy_keeps_its_absolute_tolerance_and_its_line():
    """Higher is better; the tolerance is in points of accuracy, as it always was."""
    assert compare(accuracy(0.76), accuracy(0.7792), 0.02).refusal == ""
    worse = compare(accuracy(0.35), accuracy(0.7792), 0.02)
    assert worse.refusal == ("accuracy 0.3500 on this server's 154 evaluation rows is 0.4292 "
                             "below the live model's 0.7792 (tolerance 0.02)")
    assert (worse.metric, worse.value, worse.live_value, worse.rows) == (
        "accuracy", 0.35, 0.7792, 154)


def test_with_nothing_live_any_model_passes_and_says_its_figure_alone():
    """No live model: no comparison, no refusal, no `(live model: ...)`."""
    judged = compare(rmse(55.123), None, 0.02)
    assert judged.refusal == "" and judged.live_value is None
    assert judged.summary() == "RMSE 55.12 on this server's 88 evaluation rows"


def test_the_acceptance_line_names_the_tasks_metric():
    """A regression model's line speaks RMSE; a Pima model's line is as before."""
    line = _acceptance("abc123" * 7, Verdict(compare(rmse(55.1), rmse(56.9), 0.02), seconds=2.1))
    assert line == ("accepted abc123abc123 in 2.1 s: RMSE 55.10 on this server's 88 evaluation "
                    "rows (live model: 56.90)")
    pima = _acceptance("f" * 40, Verdict(compare(accuracy(0.7792), accuracy(0.75), 0.02)))
    assert pima == ("accepted ffffffffffff in 0.0 s: accuracy 0.7792 on this server's 154 "
                    "evaluation rows (live model: 0.7500)")


def test_figures_keep_four_significant_digits_for_quantities():
    """RMSE in any units stays readable; shares keep four decimals."""
    assert [figure("rmse", v) for v in (55.123, 0.0031416, 12345.6, 0.0)] == [
        "55.12", "0.003142", "12346", "0.0000"]
    assert figure("accuracy", 0.5) == "0.5000"


def test_evaluated_metrics_of_each_task_become_typed_metrics():
    """evaluate_task's dict -> Metrics of the task; its headline is the task's metric."""
    values = np.array([[100.0], [200.0]])
    judged = task_metrics(Task.REGRESSION, metrics.evaluate_task(
        Task.REGRESSION, np.array([110.0, 190.0]), values))
    assert judged.rows == 2 and judged.headline == ("rmse", pytest.approx(10.0))
    probabilities = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])
    multi = task_metrics(Task.MULTICLASS, metrics.evaluate_task(
        Task.MULTICLASS, np.array([0, 1]), probabilities))
    assert multi.headline == ("accuracy", 0.5) and set(multi.values) == set(MULTICLASS)


def test_a_model_of_another_task_cannot_replace_the_live_one():
    """One line naming both: the task, then the features, then the classes."""
    refusal = contract_refusal(iris_spec(), regression_spec())
    assert refusal == ("refused: the model is a multiclass model of species (3 classes: setosa, "
                       "versicolor, virginica); production's live model is a regression model "
                       "of progression, and a model of another task cannot replace it")
    other_input = contract_refusal(regression_spec(("age", "bmi")), regression_spec())
    assert other_input == ("refused: the model takes ['age', 'bmi']; production's input "
                           "contract is ['sepal_length', 'petal_width']")
    other_classes = contract_refusal(iris_spec(["a", "b", "c"]), iris_spec(), "v2")
    assert other_classes == ("refused: v2 answers with classes a, b, c; production's live model "
                             "with setosa, versicolor, virginica")
    assert contract_refusal(iris_spec(), iris_spec()) == ""
    pima = read_spec(v1_manifest())
    assert contract_refusal(pima, pima) == ""


def test_stored_data_of_another_task_or_classes_cannot_judge_a_model():
    """A regression model on binary data, classes in another order: one line each."""
    assert data_refusal(regression_spec(), Task.BINARY, ("0", "1")) == (
        "refused: the model is a regression model of progression, but this server's stored "
        "data has a binary label (classes 0, 1): it cannot judge a model of another task")
    assert "stored data has classes versicolor, setosa, virginica" in data_refusal(
        iris_spec(), Task.MULTICLASS, ("versicolor", "setosa", "virginica"))
    assert data_refusal(iris_spec(), Task.MULTICLASS, tuple(IRIS)) == ""
    assert data_refusal(regression_spec(), Task.REGRESSION, ()) == ""
    # Format 1 names its answers for display only: Pima data is labelled 0 and 1.
    assert data_refusal(read_spec(v1_manifest()), Task.BINARY, ("0", "1")) == ""


def test_the_live_line_of_a_regression_model_shows_its_metrics(tmp_path):
    """post-receive's `live:` line: RMSE and MAE, not accuracy."""
    manifest = v2_manifest("regression", [], [150.0], REGRESSION)
    info = VersionInfo("v2", tmp_path, manifest, active=True)
    assert _metrics_line(Registry(tmp_path / "registry"), info, None) == (
        "; RMSE 55.0000, MAE 44.0000")
