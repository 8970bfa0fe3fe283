"""The model spec: a bundle's manifest as one typed object that every layer reads.

A manifest is JSON on disk (its canonical form, hashed, is the version id); everything else
reads a ModelSpec: the features and their ranges, the task and its outputs, the classes, the
threshold, the held-out metrics and the example rows. Two formats are read: modelserve.bundle/1
(today's bundles and registries: a binary classifier, one probability) and modelserve.bundle/2
(any task). This module never imports Keras.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

FORMAT_V1 = "modelserve.bundle/1"
FORMAT_V2 = "modelserve.bundle/2"
FORMATS = (FORMAT_V1, FORMAT_V2)
# Names end up in pages, forms, CSV headers, JSON keys and terminal messages: plain
# identifiers only, so that no name can carry markup, a template or a control character.
PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# Class names are shown and sent back as labels: printable, short, no markup characters.
CLASS_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_ .+-]{0,63}")
MAX_CLASSES = 100
SHOWN_CHARS = 40


class SpecError(ValueError):
    """A manifest that does not describe a model; the message is one line for the user."""


class Task(StrEnum):
    """What a model predicts."""

    BINARY = "binary"  # one probability of the positive class, a label by threshold
    MULTICLASS = "multiclass"  # one probability per class (softmax), the likeliest class
    REGRESSION = "regression"  # one number


# The metrics each task records, and the one that judges a model (higher or lower is better).
TASK_METRICS: dict[Task, tuple[str, ...]] = {
    Task.BINARY: ("accuracy", "roc_auc", "log_loss"),
    Task.MULTICLASS: ("accuracy", "macro_f1", "log_loss"),
    Task.REGRESSION: ("rmse", "mae", "r2"),
}
HEADLINE: dict[Task, tuple[str, bool]] = {
    Task.BINARY: ("accuracy", True),
    Task.MULTICLASS: ("accuracy", True),
    Task.REGRESSION: ("rmse", False),
}
METRIC_LABELS = {"accuracy": "accuracy", "roc_auc": "ROC AUC", "log_loss": "log loss",
                 "macro_f1": "macro F1", "rmse": "RMSE", "mae": "MAE", "r2": "R²"}
# A metric that may be undefined on some held-out rows (one class only; constant labels).
MAY_BE_UNDEFINED = frozenset({"roc_auc", "r2"})


@dataclass(frozen=True)
class Feature:
    """One input column: its name, dtype and the range seen in the training data."""

    name: str
    dtype: str = "float32"
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class Output:
    """What the model gives for a row, and how an answer is read from it."""

    name: str
    task: Task
    classes: tuple[str, ...] = ()  # binary: (negative, positive); multiclass: k; regression: ()
    threshold: float | None = None  # binary only: probability from which the answer is 1
    meaning: str = ""

    @property
    def width(self) -> int:
        """How many numbers the model gives per row."""
        return len(self.classes) if self.task is Task.MULTICLASS else 1


@dataclass(frozen=True)
class Example:
    """A held-out row and what the model gave for it when the bundle was made."""

    values: tuple[float, ...]
    outputs: tuple[float, ...]  # output.width numbers


@dataclass(frozen=True)
class Metrics:
    """The task's metrics on the held-out rows (a value is None where undefined)."""

    task: Task
    rows: int
    values: Mapping[str, float | None]
    confusion: tuple[tuple[int, ...], ...] = ()  # classification: k x k, truth by row

    @property
    def headline(self) -> tuple[str, float | None]:
        """The metric that judges a model of this task, and its value."""
        name, _higher = HEADLINE[self.task]
        return name, self.values.get(name)

    def shortfall(self, other: Metrics) -> float | None:
        """How much worse than `other` this is on the headline metric (positive: worse)."""
        name, higher_is_better = HEADLINE[self.task]
        mine, theirs = self.values.get(name), other.values.get(name)
        if mine is None or theirs is None or other.task is not self.task:
            return None
        return theirs - mine if higher_is_better else mine - theirs


@dataclass(frozen=True)
class ModelSpec:
    """A bundle's manifest, read and checked: the contract every layer serves by."""

    format: str
    version: str
    created_at: str
    features: tuple[Feature, ...]
    output: Output
    metrics: Metrics
    examples: tuple[Example, ...]
    files: Mapping[str, str]  # file name -> sha256
    document: Mapping[str, Any]  # the manifest as read: its canonical JSON is the version

    @property
    def task(self) -> Task:
        """What the model predicts."""
        return self.output.task

    @property
    def feature_names(self) -> list[str]:
        """The input columns, in the order the model takes them."""
        return [feature.name for feature in self.features]

    @property
    def width(self) -> int:
        """How many values a row holds."""
        return len(self.features)

    @property
    def threshold(self) -> float:
        """The binary threshold (0.5 unless the manifest says otherwise)."""
        return 0.5 if self.output.threshold is None else self.output.threshold

    def example_rows(self) -> np.ndarray:
        """The example rows as a float32 (n, width) array."""
        return np.asarray([e.values for e in self.examples], np.float32).reshape(-1, self.width)

    def example_outputs(self) -> np.ndarray:
        """What the model gave for them, as a float32 (n, output width) array."""
        width = self.output.width
        return np.asarray([e.outputs for e in self.examples], np.float32).reshape(-1, width)


def read_spec(manifest: Any, where: str = "manifest.json") -> ModelSpec:
    """Read a manifest of either format into a ModelSpec, or raise SpecError saying why."""
    if not isinstance(manifest, dict):
        raise SpecError(f"{where}: must be a JSON object")
    fmt = manifest.get("format")
    if fmt not in FORMATS:
        raise SpecError(f"{where}: format {_shown(fmt)} is not one of {', '.join(FORMATS)}")
    section = {key: _section(manifest, key, where) for key in ("input", "output", "metrics")}
    features = _features(section["input"].get("features"), where)
    output = (_output_v1 if fmt == FORMAT_V1 else _output_v2)(manifest, section["output"], where)
    examples = _examples(section["input"].get("examples", []), len(features), output, where)
    return ModelSpec(
        format=fmt, version=_text(manifest, "version", where),
        created_at=_text(manifest, "created_at", where), features=features, output=output,
        metrics=_metrics(section["metrics"], output, where), examples=examples,
        files=_files(manifest.get("files"), where), document=manifest)


def _section(manifest: dict, key: str, where: str) -> dict:
    """One object-valued top-level section."""
    value = manifest.get(key)
    if not isinstance(value, dict):
        raise SpecError(f"{where}: {key} must be an object")
    return value


def _text(manifest: dict, key: str, where: str) -> str:
    """One string-valued top-level field."""
    value = manifest.get(key)
    if not isinstance(value, str):
        raise SpecError(f"{where}: {key} must be a string")
    return value


def _features(features: Any, where: str) -> tuple[Feature, ...]:
    """The input columns: distinct plain names, numeric dtypes, ranges that are numbers."""
    if not isinstance(features, list) or not features:
        raise SpecError(f"{where}: input.features must be a non-empty list")
    found = []
    for item in features:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise SpecError(f"{where}: every input feature needs a name")
        name = item["name"]
        if not PLAIN_NAME.fullmatch(name):
            raise SpecError(f"{where}: feature name {_shown(name)} is not a plain name "
                            "(letters, digits and _, at most 64, not starting with a digit)")
        low, high = item.get("min"), item.get("max")
        if not all(value is None or _is_number(value) for value in (low, high)):
            raise SpecError(f"{where}: feature {name}: min and max must be numbers")
        found.append(Feature(name, str(item.get("dtype", "float32")), low, high))
    names = [feature.name for feature in found]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise SpecError(f"{where}: feature {', '.join(repeated[:3])} is named more than once")
    return tuple(found)


def _output_v1(manifest: dict, output: dict, where: str) -> Output:
    """Format 1: a binary classifier; labels {"0": ..., "1": ...} name its two answers."""
    labels = output.get("labels") or {}
    classes = (str(labels.get("0", "0")), str(labels.get("1", "1"))) if isinstance(
        labels, dict) else ("0", "1")
    return Output(name=str(output.get("name", "output")), task=Task.BINARY, classes=classes,
                  threshold=_threshold(output.get("threshold", 0.5), where),
                  meaning=str(output.get("meaning", "")))


def _output_v2(manifest: dict, output: dict, where: str) -> Output:
    """Format 2: the task says what the output is; classification names its classes."""
    try:
        task = Task(str(manifest.get("task")))
    except ValueError:
        raise SpecError(f"{where}: task {_shown(manifest.get('task'))} is not one of "
                        f"{', '.join(t.value for t in Task)}") from None
    name = output.get("name", "output")
    if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name):
        raise SpecError(f"{where}: output.name {_shown(name)} is not a plain name")
    classes = _classes(output.get("classes", []), task, where)
    threshold = _threshold(output.get("threshold", 0.5), where) if task is Task.BINARY else None
    meaning = output.get("meaning", "")
    return Output(name, task, classes, threshold, meaning if isinstance(meaning, str) else "")


def _classes(classes: Any, task: Task, where: str) -> tuple[str, ...]:
    """The class names a classifier answers with: distinct, shown safely; none for regression."""
    if task is Task.REGRESSION:
        if classes:
            raise SpecError(f"{where}: a regression model has no output.classes")
        return ()
    expected = "2" if task is Task.BINARY else f"2 to {MAX_CLASSES}"
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)
            and (len(classes) == 2 if task is Task.BINARY else 2 <= len(classes) <= MAX_CLASSES)):
        raise SpecError(f"{where}: output.classes must be a list of {expected} names")
    for name in classes:
        if not CLASS_NAME.fullmatch(name):
            raise SpecError(f"{where}: class name {_shown(name)} is not a plain name")
    if len(set(classes)) != len(classes):
        raise SpecError(f"{where}: output.classes names a class more than once")
    return tuple(classes)


def _threshold(value: Any, where: str) -> float:
    """A binary threshold: a probability strictly between 0 and 1."""
    if not _is_number(value) or not 0 < value < 1:
        raise SpecError(f"{where}: output.threshold must be a number between 0 and 1")
    return float(value)


def _examples(examples: Any, width: int, output: Output, where: str) -> tuple[Example, ...]:
    """The example rows: width numbers each, and the output the model gave (format 1: a
    probability; format 2: a list of output.width numbers)."""
    if not isinstance(examples, list):
        raise SpecError(f"{where}: input.examples must be a list")
    found = []
    for index, example in enumerate(examples):
        values = example.get("values") if isinstance(example, dict) else None
        outputs = _example_outputs(example) if isinstance(example, dict) else None
        if not (isinstance(values, list) and len(values) == width
                and all(_is_number(v) for v in values) and outputs is not None
                and _fits(outputs, output)):
            raise SpecError(f"{where}: input.examples[{index}] must hold {width} numbers as "
                            f"values and {_what_outputs(output)}")
        found.append(Example(tuple(float(v) for v in values), tuple(float(v) for v in outputs)))
    return tuple(found)


def _example_outputs(example: dict) -> list | None:
    """An example's outputs, whichever format wrote them."""
    if "probability" in example:  # format 1
        return [example["probability"]]
    outputs = example.get("outputs")
    return outputs if isinstance(outputs, list) else None


def _fits(outputs: Sequence[Any], output: Output) -> bool:
    """Tell whether recorded outputs are what this output gives."""
    if len(outputs) != output.width or not all(_is_number(v) for v in outputs):
        return False
    if output.task is Task.REGRESSION:
        return True
    if not all(0 <= v <= 1 for v in outputs):
        return False
    return output.task is Task.BINARY or math.isclose(sum(outputs), 1.0, abs_tol=1e-3)


def _what_outputs(output: Output) -> str:
    """Say what an example's outputs must be, for a refusal."""
    if output.task is Task.BINARY:
        return "a probability between 0 and 1"
    if output.task is Task.MULTICLASS:
        return f"{output.width} probabilities that sum to 1"
    return "the number the model gave"


def _metrics(metrics: dict, output: Output, where: str) -> Metrics:
    """The task's metrics: each a number (or null where it may be undefined), the row count."""
    values: dict[str, float | None] = {}
    for name in TASK_METRICS[output.task]:
        value = metrics.get(name)
        if not (_is_number(value) or (value is None and name in MAY_BE_UNDEFINED
                                      and name in metrics)):
            raise SpecError(f"{where}: metrics.{name} must be a number")
        values[name] = None if value is None else float(value)
    rows = metrics.get("rows", 0)
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
        raise SpecError(f"{where}: metrics.rows must be a count")
    return Metrics(output.task, rows, values, _confusion(metrics.get("confusion_matrix"),
                                                          output, where))


def _confusion(matrix: Any, output: Output, where: str) -> tuple[tuple[int, ...], ...]:
    """A classifier's k x k confusion matrix of counts (optional; none for regression)."""
    if matrix is None or output.task is Task.REGRESSION:
        return ()
    k = max(output.width, 2)
    if not (isinstance(matrix, list) and len(matrix) == k and all(
            isinstance(row, list) and len(row) == k and all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in row)
            for row in matrix)):
        raise SpecError(f"{where}: metrics.confusion_matrix must be {k} x {k} counts")
    return tuple(tuple(row) for row in matrix)


def _files(files: Any, where: str) -> dict[str, str]:
    """The listed files and their sha256."""
    if not isinstance(files, dict) or not files:
        raise SpecError(f"{where}: files must be an object listing the bundle's files")
    found = {}
    for name, recorded in files.items():
        sha = recorded.get("sha256") if isinstance(recorded, dict) else None
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise SpecError(f"{where}: files.{_shown(name)} needs the file's sha256")
        found[name] = sha
    return found


def _is_number(value: Any) -> bool:
    """Tell whether a JSON value is a finite number (not a boolean)."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _shown(value: Any) -> str:
    """Show a value from a manifest in a message: one line, cut short."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."
