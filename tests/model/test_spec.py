"""The typed model spec: today's manifests read as binary models, format 2 for every task."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from manifests import PIMA, SHA, v1_manifest, v2_manifest

from modelserve.model.spec import Metrics, SpecError, Task, read_spec


def test_todays_manifest_is_a_binary_model_with_its_labels_and_threshold():
    """Format 1 reads as it always meant: binary, two labels, one probability per example."""
    spec = read_spec(v1_manifest())
    assert spec.task is Task.BINARY and spec.output.width == 1
    assert spec.output.classes == ("no diabetes", "diabetes") and spec.threshold == 0.5
    assert spec.feature_names == PIMA and spec.width == 8
    assert spec.example_rows().shape == (1, 8) and spec.example_outputs().tolist() == [
        [pytest.approx(0.824)]]
    assert spec.metrics.headline == ("accuracy", 0.79)
    assert spec.metrics.confusion == ((93, 7), (25, 28))
    assert spec.files == {"model.keras": SHA}


def test_each_task_of_format_2():
    """Multiclass: k probabilities summing to 1; regression: one number, RMSE judges it."""
    multi = read_spec(v2_manifest("multiclass", ["setosa", "versicolor", "virginica"],
                                  [0.9, 0.05, 0.05],
                                  {"accuracy": 0.9, "macro_f1": 0.88, "log_loss": 0.3,
                                   "confusion_matrix": [[10, 0, 0], [0, 9, 1], [0, 2, 8]]}))
    assert multi.task is Task.MULTICLASS and multi.output.width == 3
    assert multi.example_outputs().shape == (1, 3) and multi.output.threshold is None
    regression = read_spec(v2_manifest("regression", [], [12.5],
                                       {"rmse": 3.2, "mae": 2.1, "r2": None}))
    assert regression.task is Task.REGRESSION and regression.output.classes == ()
    assert regression.metrics.headline == ("rmse", 3.2)


def test_the_headline_metric_says_which_way_is_better():
    """Accuracy: lower is worse; RMSE: higher is worse; other tasks do not compare."""
    live = Metrics(Task.BINARY, 100, {"accuracy": 0.80})
    assert Metrics(Task.BINARY, 100, {"accuracy": 0.75}).shortfall(live) == pytest.approx(0.05)
    worse_fit = Metrics(Task.REGRESSION, 100, {"rmse": 4.0})
    assert worse_fit.shortfall(Metrics(Task.REGRESSION, 100, {"rmse": 3.0})) == 1.0
    assert worse_fit.shortfall(live) is None


@pytest.mark.parametrize("damage, expected", [
    (lambda m: m.update(format="modelserve.bundle/9"), "format 'modelserve.bundle/9'"),
    (lambda m: m["input"]["features"].append({"name": "glucose"}), "named more than once"),
    (lambda m: m["input"]["features"][0].update(name="<script>"), "not a plain name"),
    (lambda m: m["input"]["features"][0].update(min="low"), "min and max must be numbers"),
    (lambda m: m["input"]["examples"][0].update(probability=1.5), "a probability between"),
    (lambda m: m["input"]["examples"][0]["values"].pop(), "must hold 8 numbers"),
    (lambda m: m["output"].update(threshold=0), "threshold must be a number between 0 and 1"),
    (lambda m: m["metrics"].update(accuracy=None), "metrics.accuracy must be a number"),
    (lambda m: m["metrics"].update(confusion_matrix=[[1, 2]]), "2 x 2 counts"),
    (lambda m: m["files"]["model.keras"].update(sha256="x"), "needs the file's sha256"),
    (lambda m: m.pop("version"), "version must be a string"),
])
def test_a_damaged_format_1_manifest_is_one_line(damage, expected):
    """Every refusal says what is wrong, in one line."""
    manifest = v1_manifest()
    damage(manifest)
    with pytest.raises(SpecError, match=expected) as refused:
        read_spec(manifest)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("task, classes, outputs, expected", [
    ("clustering", [], [1.0], "task 'clustering' is not one of"),
    ("multiclass", ["a"], [1.0], "list of 2 to 100 names"),
    ("multiclass", ["a", "a"], [0.5, 0.5], "more than once"),
    ("multiclass", ["a", "<b>"], [0.5, 0.5], "class name '<b>'"),
    ("multiclass", ["a", "b"], [0.7, 0.7], "2 probabilities that sum to 1"),
    ("binary", ["no", "yes", "maybe"], [0.5], "list of 2 names"),
    ("regression", ["a", "b"], [1.0], "has no output.classes"),
])
def test_a_format_2_output_that_does_not_fit_its_task_is_refused(task, classes, outputs,
                                                                 expected):
    """Classes, outputs and examples must be what the task gives."""
    metrics = {"accuracy": 1, "macro_f1": 1, "log_loss": 0, "roc_auc": 1, "rmse": 0, "mae": 0,
               "r2": 1}
    with pytest.raises(SpecError, match=expected):
        read_spec(v2_manifest(task, classes, outputs, metrics))


def test_the_spec_keeps_the_document_it_was_read_from():
    """The version is the hash of the manifest as written: the spec never rewrites it."""
    manifest = v1_manifest()
    spec = read_spec(copy.deepcopy(manifest))
    assert spec.document == manifest
    assert np.array_equal(spec.example_rows()[0], np.float32([6, 148, 72, 35, 0, 33.6, 0.627, 50]))


def test_a_bundle_of_every_task_is_a_valid_manifest():
    """Format 2 bundles of each task pass the bundle's own checks, with their task."""
    from modelserve.model.bundle import validate_manifest

    manifest = v2_manifest("multiclass", ["a", "b", "c"], [0.2, 0.3, 0.5],
                           {"accuracy": 1, "macro_f1": 1, "log_loss": 0})
    assert validate_manifest(manifest).output.width == 3
    binary = v2_manifest("binary", ["no", "yes"], [0.4], {"accuracy": 1, "roc_auc": None,
                                                          "log_loss": 0})
    assert validate_manifest(binary).threshold == 0.5
