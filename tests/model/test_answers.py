"""What a model's outputs mean per task (model/answers.py): labels, tensors, v1, CSV columns.

Pure numpy: the web API, the Open Inference Protocol and `modelserve predict` all read
outputs through these functions, so each task's answer is pinned here once.
"""

from __future__ import annotations

import numpy as np
import pytest

from modelserve.model import answers
from modelserve.model.answers import Tensor
from modelserve.model.spec import Output, Task

BINARY = Output("output", Task.BINARY, ("no diabetes", "diabetes"), 0.4)
IRIS = Output("species", Task.MULTICLASS, ("setosa", "versicolor", "virginica"))
VALUE = Output("progression", Task.REGRESSION)
PROBABILITIES = np.array([[0.3], [0.4], [0.9]], np.float32)
PER_CLASS = np.array([[0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.1, 0.6, 0.3]], np.float32)
VALUES = np.array([[151.25], [-3.5], [0.0]], np.float32)


def test_labels_follow_the_threshold_the_likeliest_class_or_are_none():
    """Binary: >= threshold; multiclass: argmax; regression: no labels at all."""
    assert answers.labels_for(BINARY, PROBABILITIES).tolist() == [0, 1, 1]
    assert answers.labels_for(IRIS, PER_CLASS).tolist() == [0, 2, 1]
    assert answers.labels_for(VALUE, VALUES).size == 0
    assert answers.labels_for(IRIS, np.zeros((0, 3), np.float32)).size == 0


def test_tensors_per_task():
    """The output tensors with their datatypes and widths."""
    assert answers.tensors(BINARY) == (Tensor("probability", "FP32", 1),
                                       Tensor("label", "INT8", 1))
    assert answers.tensors(IRIS) == (Tensor("probabilities", "FP32", 3),
                                     Tensor("label", "INT32", 1))
    assert answers.tensors(VALUE) == (Tensor("value", "FP32", 1),)


def test_tensor_data_is_row_major_and_has_each_tensors_width():
    """Every tensor holds rows x width values."""
    for output, outputs in ((BINARY, PROBABILITIES), (IRIS, PER_CLASS), (VALUE, VALUES)):
        data = answers.tensor_data(output, outputs, answers.labels_for(output, outputs))
        assert list(data) == [tensor.name for tensor in answers.tensors(output)]
        for tensor in answers.tensors(output):
            assert len(data[tensor.name]) == len(outputs) * tensor.width
    data = answers.tensor_data(IRIS, PER_CLASS, answers.labels_for(IRIS, PER_CLASS))
    np.testing.assert_allclose(data["probabilities"], PER_CLASS.ravel())
    assert data["label"] == [0, 2, 1]


def test_v1_answers_per_task():
    """Binary keeps probabilities and 0/1 labels; multiclass names classes; regression values."""
    binary = answers.v1_answer(BINARY, PROBABILITIES, answers.labels_for(BINARY, PROBABILITIES))
    assert binary == {"task": "binary", "probabilities": pytest.approx([0.3, 0.4, 0.9]),
                      "labels": [0, 1, 1], "classes": ["no diabetes", "diabetes"]}
    multiclass = answers.v1_answer(IRIS, PER_CLASS, answers.labels_for(IRIS, PER_CLASS))
    assert multiclass["labels"] == ["setosa", "virginica", "versicolor"]
    assert np.allclose(multiclass["probabilities"], PER_CLASS)
    assert multiclass["classes"] == list(IRIS.classes) and multiclass["task"] == "multiclass"
    assert answers.v1_answer(VALUE, VALUES, np.zeros(0, np.int8)) == {
        "task": "regression", "values": [151.25, -3.5, 0.0]}


def test_csv_columns_and_their_arrays_per_task():
    """Each task's columns, and one array per column holding that column's answers."""
    assert answers.csv_columns(BINARY) == ("probability", "label")
    assert answers.csv_columns(IRIS) == ("p_setosa", "p_versicolor", "p_virginica", "label")
    assert answers.csv_columns(VALUE) == ("value",)
    probability, label = answers.csv_arrays(BINARY, PROBABILITIES,
                                            answers.labels_for(BINARY, PROBABILITIES))
    np.testing.assert_array_equal(probability, PROBABILITIES[:, 0])
    assert label.tolist() == [0, 1, 1]
    *per_class, _names = answers.csv_arrays(IRIS, PER_CLASS, answers.labels_for(IRIS, PER_CLASS))
    np.testing.assert_array_equal(np.stack(per_class, axis=1), PER_CLASS)
    (value,) = answers.csv_arrays(VALUE, VALUES, np.zeros(0, np.int8))
    np.testing.assert_array_equal(value, VALUES[:, 0])
    iris_labels = answers.csv_arrays(IRIS, PER_CLASS, answers.labels_for(IRIS, PER_CLASS))[-1]
    assert iris_labels.tolist() == ["setosa", "virginica", "versicolor"]


def test_shown_answer_per_task():
    """One row in words."""
    assert answers.shown_answer(BINARY, PROBABILITIES[2:], np.array([1])) == (
        "diabetes (probability 0.900)")
    assert answers.shown_answer(IRIS, PER_CLASS[1:], np.array([2])) == (
        "virginica (probability 0.500)")
    assert answers.shown_answer(VALUE, VALUES, np.zeros(0, np.int8)) == "151.25"
