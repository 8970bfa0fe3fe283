"""score_csv writes each task's columns (the upload page and `modelserve predict` use it).

Fixed numpy models stand in for Keras (this is the quick tier): binary keeps today's
probability,label,model_version file byte for byte in its layout; multiclass writes one
p_<class> column per class and the class name; regression writes the value.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from modelserve.errors import UserError
from modelserve.model.csvfile import output_columns, score_csv
from modelserve.model.runtime import InputError, ModelRuntime, Scores
from modelserve.model.spec import FORMAT_V2, Feature, Metrics, ModelSpec, Output, Task

NAMES = ["a", "b", "c"]
ROWS = np.array([[0.5, -1.0, 2.0], [3.0, 0.0, -2.0], [-1.5, 1.0, 0.25], [0.0, 0.0, 0.0]],
                np.float32)
CLASSES = ("setosa", "versicolor", "virginica")


def _softmax(rows: np.ndarray) -> np.ndarray:
    """Three class probabilities from three features."""
    shifted = np.exp(rows - rows.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


MODELS = {
    Task.BINARY: (("0", "1"), lambda rows: 1 / (1 + np.exp(-rows.sum(axis=1, keepdims=True)))),
    Task.MULTICLASS: (CLASSES, _softmax),
    Task.REGRESSION: ((), lambda rows: rows @ np.array([[10.0], [-2.0], [0.5]], np.float32)),
}


def runtime(task: Task) -> ModelRuntime:
    """A model of the task over features a, b, c."""
    classes, predict = MODELS[task]
    spec = ModelSpec(format=FORMAT_V2, version=f"{task.value[:4]}{'0' * 60}", created_at="",
                     features=tuple(Feature(name) for name in NAMES),
                     output=Output("y", task, classes, 0.5 if task is Task.BINARY else None),
                     metrics=Metrics(task, 0, {}), examples=(), files={}, document={})
    return ModelRuntime(spec, lambda rows: np.asarray(predict(rows), np.float32), "test")


def scored(model: ModelRuntime, tmp_path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Score ROWS (with a header, columns shuffled) and read the file back."""
    source = tmp_path / "in.csv"
    with open(source, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["c", "extra", "a", "b"])
        writer.writerows([[row[2], 9, row[0], row[1]] for row in ROWS.tolist()])
    out = tmp_path / "out.csv"
    assert score_csv(model, source, out) == len(ROWS)
    with open(out, newline="") as stream:
        reader = csv.DictReader(stream)
        return list(reader.fieldnames or []), list(reader)


def test_binary_keeps_probability_label_and_version(tmp_path):
    """As before issue 14: probability, 0/1 label, model_version."""
    model = runtime(Task.BINARY)
    header, records = scored(model, tmp_path)
    assert header == ["probability", "label", "model_version"]
    want = model.score(ROWS)
    np.testing.assert_allclose([float(r["probability"]) for r in records],
                               want.probabilities, atol=1e-6)
    assert [int(r["label"]) for r in records] == want.labels.tolist()
    assert {r["model_version"] for r in records} == {model.version}


def test_multiclass_writes_a_probability_per_class_and_the_class_name(tmp_path):
    """p_setosa, p_versicolor, p_virginica, then the likeliest class by name."""
    model = runtime(Task.MULTICLASS)
    header, records = scored(model, tmp_path)
    assert header == ["p_setosa", "p_versicolor", "p_virginica", "label", "model_version"]
    assert tuple(header) == output_columns(model.spec.output)
    want = model.score(ROWS)
    got = np.array([[float(r[f"p_{name}"]) for name in CLASSES] for r in records])
    np.testing.assert_allclose(got, want.outputs, atol=1e-6)
    assert [r["label"] for r in records] == [CLASSES[i] for i in want.labels]
    assert {r["model_version"] for r in records} == {model.version}


def test_regression_writes_the_value(tmp_path):
    """value, then model_version; no label column."""
    model = runtime(Task.REGRESSION)
    header, records = scored(model, tmp_path)
    assert header == ["value", "model_version"]
    want = model.score(ROWS).outputs[:, 0]
    np.testing.assert_allclose([float(r["value"]) for r in records], want, rtol=1e-6)


class Switched:
    """A scorer whose model changes task between the file's start and its first block."""

    features = NAMES
    spec = runtime(Task.BINARY).spec

    def score(self, rows: np.ndarray) -> Scores:
        """Answer as the multiclass model."""
        return runtime(Task.MULTICLASS).score(rows)


def test_a_model_that_changes_mid_file_is_one_line_not_a_bad_cell(tmp_path):
    """The answers no longer fit the columns: say so instead of blaming the file."""
    source = tmp_path / "in.csv"
    source.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(UserError, match="the model changed while the file was scored"):
        score_csv(Switched(), source, tmp_path / "out.csv")


def test_the_header_may_name_columns_as_the_imported_file_did(tmp_path):
    """`data import` made "Sepal Length (cm)" sepal_length_cm: that file scores as it is."""
    spec = runtime(Task.REGRESSION).spec
    renamed = replace(spec, features=tuple(Feature(name) for name in ("x_cm", "y", "z")))
    model = ModelRuntime(renamed, MODELS[Task.REGRESSION][1], "test")
    source = tmp_path / "in.csv"
    source.write_text("Z,X (cm),Y\n2.0,0.5,-1.0\n")
    assert score_csv(model, source, tmp_path / "out.csv") == 1
    written = list(csv.DictReader((tmp_path / "out.csv").read_text().splitlines()))
    assert [float(row["value"]) for row in written] == [8.0]
    source.write_text("Z,X (mm),Y\n2.0,0.5,-1.0\n")
    with pytest.raises(InputError, match="the header row lacks x_cm"):
        score_csv(model, source, tmp_path / "out.csv")
