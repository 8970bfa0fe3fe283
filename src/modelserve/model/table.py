"""A user's CSV as a typed table: named numeric features, a label column, and the task.

Pure parsing, no files and no Keras: `modelserve data import FILE --label COLUMN [--task T]`
reads the header (column names become feature names), takes the label from any column, and
infers the task from the label's values when none is given. Every refusal is one line naming
the row and the column.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from modelserve.errors import UserError
from modelserve.model.spec import CLASS_NAME, MAX_CLASSES, Task

FLOAT32_MAX = float(np.finfo(np.float32).max)
# A label of at most this many distinct integers is a class, not a quantity.
MAX_INTEGER_CLASSES = 20
MIN_PER_CLASS = 2  # a stratified split puts at least one row of each class on either side
MAX_NAME = 64


class TableError(UserError, ValueError):
    """A CSV that cannot be trained on; the message is one line naming row and column."""


@dataclass(frozen=True)
class Table:
    """Validated training data: features, the target, what the task is and how it was chosen."""

    feature_names: tuple[str, ...]
    features: np.ndarray  # float32 (rows, features)
    target: np.ndarray  # classification: int64 class indices; regression: float64 values
    task: Task
    classes: tuple[str, ...]  # classification: the label's values, index order; regression: ()
    label: str
    inferred: str  # why this task, said out loud when it was not given; "" when given
    renamed: tuple[tuple[str, str], ...] = ()  # header names changed into plain names
    sha256: str = ""  # of the file's bytes, once stored
    source: str = ""
    header: bool = True  # False: the headerless Pima file (data rows start on line 1)

    @property
    def rows(self) -> int:
        """Number of examples."""
        return len(self.target)


def parse_table(text: str, label: str, task: Task | None = None,
                source: str = "data") -> Table:
    """Read CSV text with a header row; the label column may be anywhere."""
    records = _records(text, source)
    header = next(records, None)
    if header is None:
        raise TableError(f"{source}: the file is empty")
    line, names = header
    plain = _plain_names(names, source)
    if label not in names and label not in plain:
        raise TableError(f"{source}: no column {label!r} in the header (columns: "
                         f"{', '.join(names[:10])}{', ...' if len(names) > 10 else ''})")
    label_index = names.index(label) if label in names else plain.index(label)
    feature_indices = [i for i in range(len(names)) if i != label_index]
    if not feature_indices:
        raise TableError(f"{source}: the only column is the label; add feature columns")
    cells, labels = _cells(records, len(names), feature_indices, label_index, names, source)
    features = np.asarray(cells, dtype=np.float32).reshape(-1, len(feature_indices))
    chosen, reason = (task, "") if task is not None else infer_task(labels)
    target, classes = _target(labels, chosen, names[label_index], source)
    if chosen is not Task.REGRESSION:
        _check_classes(target, classes, source)
    return Table(
        feature_names=tuple(plain[i] for i in feature_indices), features=features,
        target=target, task=chosen, classes=classes, label=plain[label_index],
        inferred=reason,
        renamed=tuple((names[i], plain[i]) for i in range(len(names)) if names[i] != plain[i]))


def infer_task(labels: Sequence[str]) -> tuple[Task, str]:
    """The task a label column implies, and the sentence that says why."""
    distinct = sorted(set(labels))
    numbers = [_number(value) for value in distinct]
    if len(distinct) == 2:
        return Task.BINARY, f"two label values ({distinct[0]}, {distinct[1]}): binary"
    if any(n is None for n in numbers):
        return Task.MULTICLASS, f"{len(distinct)} text label values: multiclass"
    if all(n is not None and n.is_integer() for n in numbers) and len(
            distinct) <= MAX_INTEGER_CLASSES:
        return Task.MULTICLASS, (f"{len(distinct)} integer label values: multiclass (give "
                                 "--task regression if they are quantities)")
    return Task.REGRESSION, f"{len(distinct)} distinct numeric label values: regression"


def _records(text: str, source: str) -> Iterator[tuple[int, list[str]]]:
    """Each non-blank CSV row with its line number; csv's own errors become TableError."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            if row and any(cell.strip() for cell in row):
                yield reader.line_num, [cell.strip() for cell in row]
    except csv.Error as error:
        raise TableError(f"{source}: row {reader.line_num}: {error}") from None


def plain_name(name: str) -> str:
    """A header name as the plain identifier a model's feature is called by."""
    cleaned = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_").lower()[:MAX_NAME]
    return cleaned if cleaned and not cleaned[0].isdigit() else f"c_{cleaned}"


def _plain_names(names: list[str], source: str) -> list[str]:
    """Header names as plain identifiers (what a manifest, a form and a JSON key can hold)."""
    plain = []
    for index, name in enumerate(names):
        if not name:
            raise TableError(f"{source}: column {index + 1} has no name in the header")
        if _number(name) is not None:
            raise TableError(f"{source}: the first row is data ({name!r} in column "
                             f"{index + 1}); the file needs a header row naming its columns")
        plain.append(plain_name(name))
    seen: dict[str, str] = {}
    for name, cleaned in zip(names, plain, strict=True):
        if cleaned in seen:
            same = f"{seen[cleaned]!r} and {name!r}" if seen[cleaned] != name else repr(name)
            raise TableError(f"{source}: duplicate column name {same} in the header")
        seen[cleaned] = name
    return plain


def _cells(records: Iterator[tuple[int, list[str]]], width: int, feature_indices: list[int],
           label_index: int, names: list[str], source: str) -> tuple[list[float], list[str]]:
    """Every feature cell as a finite float32 number, and every label as text."""
    cells: list[float] = []
    labels: list[str] = []
    for line, row in records:
        if len(row) != width:
            raise TableError(f"{source}: row {line}: {len(row)} columns; the header has {width}")
        for index in feature_indices:
            cells.append(_feature(row[index], line, names[index], source))
        if not row[label_index]:
            raise TableError(f"{source}: row {line}, column {names[label_index]!r}: the label "
                             "is missing")
        labels.append(row[label_index])
    if not labels:
        raise TableError(f"{source}: the file has a header and no data rows")
    return cells, labels


def _feature(cell: str, line: int, column: str, source: str) -> float:
    """One feature value: a finite number within float32, or a refusal naming where."""
    where = f"{source}: row {line}, column {column!r}"
    if not cell:
        raise TableError(f"{where}: a missing value; fill it in or drop the row")
    value = _number(cell)
    if value is None:
        raise TableError(f"{where}: {cell[:40]!r} is text; this column needs encoding as "
                         "numbers (e.g. one 0/1 column per value)")
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise TableError(f"{where}: {cell[:40]!r} is not a finite number within float32")
    return value


def _number(text: str) -> float | None:
    """A CSV cell as a number, or None if it is text ("1_000" is text: CSV has no such)."""
    if "_" in text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _target(labels: list[str], task: Task, column: str,
            source: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """The label column as the task needs it: class indices and names, or values."""
    if task is Task.REGRESSION:
        values = [_number(label) for label in labels]
        bad = next((i for i, v in enumerate(values) if v is None or not math.isfinite(v)), None)
        if bad is not None:
            raise TableError(f"{source}: data row {bad + 1}, column {column!r}: "
                             f"{labels[bad][:40]!r} is not a number; regression needs numbers")
        return np.asarray(values, dtype=np.float64), ()
    classes = _class_order(sorted(set(labels)))
    unfit = next((name for name in classes if not CLASS_NAME.fullmatch(name)), None)
    if unfit is not None:
        raise TableError(f"{source}: column {column!r}: label {unfit[:40]!r} is not a plain class "
                         "name (letters, digits, space, _ . + -, at most 64)")
    if task is Task.BINARY and len(classes) != 2:
        raise TableError(f"{source}: column {column!r} has {len(classes)} label values; "
                         "binary needs exactly 2")
    if not 2 <= len(classes) <= MAX_CLASSES:
        raise TableError(f"{source}: column {column!r} has {len(classes)} label values; "
                         f"multiclass needs 2 to {MAX_CLASSES}")
    index = {name: i for i, name in enumerate(classes)}
    return np.asarray([index[label] for label in labels], dtype=np.int64), tuple(classes)


def _class_order(values: list[str]) -> list[str]:
    """Classes in numeric order when they are numbers (2 before 10), else as text."""
    if all(_number(value) is not None for value in values):
        return sorted(values, key=float)
    return values


def _check_classes(target: np.ndarray, classes: tuple[str, ...], source: str) -> None:
    """Every class needs rows on both sides of a stratified split."""
    counts = Counter(target.tolist())
    rare = [(classes[i], counts.get(i, 0)) for i in range(len(classes))
            if counts.get(i, 0) < MIN_PER_CLASS]
    if rare:
        name, count = rare[0]
        raise TableError(f"{source}: class {name!r} has {count} row(s); a stratified split needs "
                         f"at least {MIN_PER_CLASS} of each class")


def split_table(table: Table, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out indices: stratified by class for classification, a seeded random
    split for regression."""
    if not 0.0 < test_fraction < 1.0:
        raise TableError(f"test fraction {test_fraction} must be between 0 and 1")
    rng = np.random.default_rng(seed)
    if table.task is Task.REGRESSION:
        order = rng.permutation(table.rows)
        held = int(round(table.rows * test_fraction))
        return np.sort(order[held:]), np.sort(order[:held])
    train_parts, test_parts = [], []
    for value in np.unique(table.target):  # the same draws as dataset.stratified_split
        members = rng.permutation(np.flatnonzero(table.target == value))
        held = int(round(len(members) * test_fraction))
        test_parts.append(members[:held])
        train_parts.append(members[held:])
    return np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(test_parts))
