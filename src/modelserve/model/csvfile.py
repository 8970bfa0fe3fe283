"""Score CSV files in a stream: parse with Arrow, score in batches, write the task's answers.

The fast path never looks at a value in Python. When Arrow refuses a file (or finds an
empty or non-finite cell), a slow line-by-line scan finds the first bad cell so that the
message can name its row and column.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from modelserve.errors import UserError
from modelserve.model.answers import csv_arrays, csv_columns
from modelserve.model.dataset import FLOAT32_MAX
from modelserve.model.runtime import InputError, Scores
from modelserve.model.spec import ModelSpec, Output
from modelserve.model.table import plain_name

BLOCK_BYTES = 4 << 20
SHOWN_CHARS = 40  # of a bad cell, in a message
VERSION_COLUMN = "model_version"

Progress = Callable[[int], None]


class RowScorer(Protocol):
    """What score_csv needs of a model: a ModelRuntime, or the web app's queue-backed scorer."""

    features: list[str]
    spec: ModelSpec  # its output says which columns the answers fill

    def score(self, rows: np.ndarray) -> Scores:
        """Score a (n, features) float32 batch."""
        ...


def read_header(path: Path, features: list[str]) -> list[str] | None:
    """Return the file's header row (names as the model calls them), or None when its first
    row is all numbers."""
    with open(path, encoding="utf-8-sig", newline="") as stream:
        reader = csv.reader(stream)
        try:
            first = next(reader, None)
        except UnicodeDecodeError:
            raise InputError(f"{path}: the file is not UTF-8 text") from None
        except csv.Error as error:  # a cell over csv.field_size_limit(), for one
            raise InputError(f"{path}: line {reader.line_num} is not valid CSV ({error})") from None
    if first is None:
        raise InputError(f"{path}: the file is empty")
    if all(_is_number(cell) for cell in first):
        return None
    # The file the model was trained on names its columns as the user wrote them
    # ("sepal length (cm)"); the model knows them by their plain names (sepal_length_cm).
    first = [cell if cell in features else plain_name(cell) for cell in first]
    missing = [name for name in features if name not in first]
    if missing:
        raise InputError(f"{path}: the header row lacks {', '.join(missing)}")
    repeated = [name for name in features if first.count(name) > 1]
    if repeated:  # which of the columns would be scored?
        raise InputError(f"{path}: the header row names {', '.join(repeated)} more than once")
    return first


def _is_number(cell: str) -> bool:
    """Tell whether a cell reads as a number (finite or not)."""
    try:
        float(cell)
    except ValueError:
        return False
    return "_" not in cell


def _open_reader(
    path: Path, features: list[str], header: list[str] | None
) -> pacsv.CSVStreamingReader:
    """Open a streaming reader that yields the contract's columns as float32."""
    names = header if header is not None else features
    read = pacsv.ReadOptions(
        block_size=BLOCK_BYTES,
        column_names=names,
        skip_rows=1 if header is not None else 0,
        encoding="utf8",
    )
    convert = pacsv.ConvertOptions(
        column_types={name: pa.float32() for name in features},
        include_columns=features,
        null_values=[""],
        strings_can_be_null=False,
    )
    return pacsv.open_csv(path, read_options=read, convert_options=convert)


def output_columns(output: Output) -> tuple[str, ...]:
    """The columns a scored file has: the task's answer, then the model version."""
    return (*csv_columns(output), VERSION_COLUMN)


def output_schema(output: Output) -> pa.Schema:
    """The scored file's columns and their Arrow types (what csv_arrays gives, then a string)."""
    empty = csv_arrays(output, np.zeros((0, output.width), np.float32), np.zeros(0, np.int8))
    types = [pa.from_numpy_dtype(column.dtype) for column in empty]
    return pa.schema(list(zip(output_columns(output), [*types, pa.string()], strict=True)))


def score_csv(
    runtime: RowScorer, in_path: Path, out_path: Path, progress: Progress | None = None
) -> int:
    """Score every row of in_path into out_path; return the number of rows scored."""
    header = read_header(in_path, runtime.features)
    output = runtime.spec.output
    schema = output_schema(output)
    rows = 0
    try:
        reader = _open_reader(in_path, runtime.features, header)
        with pacsv.CSVWriter(out_path, schema) as writer:
            for batch in reader:
                matrix = _batch_matrix(batch, runtime.features)
                scores = runtime.score(matrix)
                if scores.outputs.shape != (len(matrix), output.width):
                    raise UserError(f"{in_path}: the model changed while the file was scored "
                                    f"(now {scores.version}); score it again")
                columns = csv_arrays(output, scores.outputs, scores.labels)
                version = pa.repeat(pa.scalar(scores.version, pa.string()), len(matrix))
                writer.write_table(pa.table([*columns, version], schema=schema))
                rows += len(matrix)
                if progress is not None:
                    progress(len(matrix))
    except (pa.ArrowInvalid, InputError):
        raise InputError(first_bad_cell(in_path, runtime.features, header)) from None
    if rows == 0:
        raise InputError(f"{in_path}: no rows to score")
    return rows


def _batch_matrix(batch: pa.RecordBatch, features: list[str]) -> np.ndarray:
    """Turn a record batch into a (n, features) float32 matrix, refusing empty cells."""
    columns = [batch.column(name) for name in features]
    if any(column.null_count for column in columns):
        raise InputError("empty cell")  # replaced by first_bad_cell's precise message
    matrix = np.column_stack([column.to_numpy(zero_copy_only=False) for column in columns])
    # Arrow reads "nan", "inf" and 1e39 (beyond float32) as numbers. The scorer may be the
    # workers, which refuse a whole batch, other requests' rows too, for one such value.
    if not np.isfinite(matrix).all():
        raise InputError("not a finite number")  # replaced by first_bad_cell's message too
    return matrix


def first_bad_cell(path: Path, features: list[str], header: list[str] | None) -> str:
    """Scan the file line by line and describe its first unusable cell."""
    positions = [header.index(name) for name in features] if header else list(range(len(features)))
    width = len(header) if header else len(features)
    with open(path, encoding="utf-8-sig", newline="", errors="replace") as stream:
        reader = csv.reader(stream)
        try:
            for number, row in enumerate(reader, start=1):
                is_header = header is not None and number == 1
                problem = None if is_header else _row_problem(row, width, features, positions)
                if problem:
                    return f"{path}: row {number}{problem}"
        except csv.Error as error:  # a cell over csv.field_size_limit(), for one
            return f"{path}: line {reader.line_num} is not valid CSV ({error})"
    return f"{path}: the file is not valid CSV"


def _row_problem(row: list[str], width: int, features: list[str], positions: list[int]) -> str:
    """Describe what is wrong with a row (after its number in a message), or ''."""
    if len(row) != width:
        return f": expected {width} columns, found {len(row)}"
    for name, position in zip(features, positions, strict=True):
        problem = _cell_problem(row[position])
        if problem:
            return f", column {position + 1} ({name}): {problem}"
    return ""


def _cell_problem(cell: str) -> str | None:
    """Say what is wrong with a cell, or None if it is a finite number."""
    shown = repr(cell.strip()[:SHOWN_CHARS])
    if not cell.strip():
        return "empty"
    if not _is_number(cell):
        return f"{shown} is not a number"
    if not math.isfinite(float(cell)):
        return f"{shown} is not a finite number"
    if abs(float(cell)) > FLOAT32_MAX:
        return f"{shown} is too large for float32"
    return None
