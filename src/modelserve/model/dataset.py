"""The training data: validation, import, download, the built-in example, the seeded split."""

from __future__ import annotations

import csv
import hashlib
import http.client
import io
import json
import math
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from modelserve.errors import UserError
from modelserve.fsutil import atomic_write_bytes, atomic_write_text
from modelserve.model.examples import EXAMPLE_SHA256, EXAMPLE_SOURCE, example_bytes
from modelserve.model.spec import Task
from modelserve.model.table import Table, parse_table

PIMA_URL = (
    "https://raw.githubusercontent.com/jbrownlee/Datasets/master/pima-indians-diabetes.data.csv"
)
FEATURES = (
    "pregnancies",
    "glucose",
    "blood_pressure",
    "skin_thickness",
    "insulin",
    "bmi",
    "diabetes_pedigree",
    "age",
)
LABEL = "diabetes"
DATA_FILE = "pima-indians-diabetes.csv"
TABLE_FILE = "table.csv"  # a user's CSV with a header row (only one dataset is stored)
RECORD_FILE = "dataset.json"
MIN_ROWS = 100
MAX_ROWS = 1_000_000
MAX_DOWNLOAD_BYTES = 64 << 20
FLOAT32_MAX = float(np.finfo(np.float32).max)


class DatasetError(UserError):
    """A data file that must not be trained on."""


@dataclass(frozen=True)
class Dataset:
    """Validated training data: features, 0/1 labels, and the file's sha256."""

    features: np.ndarray
    labels: np.ndarray
    sha256: str
    source: str

    @property
    def rows(self) -> int:
        """Number of examples."""
        return len(self.labels)


def parse_rows(text: str, source: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """Parse and validate CSV text: 9 numeric columns, finite values, last column 0/1."""
    columns = len(FEATURES) + 1
    values: list[list[float]] = []
    for line_number, row in _records(text, source):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != columns:
            raise DatasetError(
                f"{source}: row {line_number}: expected {columns} columns "
                f"(8 features and a 0/1 label), found {len(row)}"
            )
        values.append(
            [_parse_cell(cell, line_number, index, source) for index, cell in enumerate(row)]
        )
    _check_row_count(len(values), source)
    table = np.asarray(values, dtype=np.float64)
    labels = table[:, -1].astype(np.int64)
    if len(np.unique(labels)) < 2:
        raise DatasetError(
            f"{source}: every label is {labels[0]}; both classes (0 and 1) are needed"
        )
    return table[:, :-1].astype(np.float32), labels


def _records(text: str, source: str) -> Iterator[tuple[int, list[str]]]:
    """Yield each CSV row with its line number, turning csv's own errors into DatasetError."""
    reader = csv.reader(io.StringIO(text, newline=""))  # newline="": a lone \r ends a row too
    try:
        yield from ((reader.line_num, row) for row in reader)
    except csv.Error as error:
        raise DatasetError(f"{source}: row {reader.line_num}: {error}") from None


def _column_name(index: int) -> str:
    """Name column `index` (0-based) for messages."""
    return FEATURES[index] if index < len(FEATURES) else f"{LABEL} label"


def _parse_cell(cell: str, line_number: int, index: int, source: str) -> float:
    """Parse one cell, raising a message that names its row and column."""
    where = f"{source}: row {line_number}, column {index + 1} ({_column_name(index)})"
    try:
        if "_" in cell:  # float() accepts "1_000"; a CSV number never has one
            raise ValueError(cell)
        value = float(cell)
    except ValueError:
        hint = " (the file must have no header row)" if line_number == 1 else ""
        raise DatasetError(f"{where}: {cell.strip()!r} is not a number{hint}") from None
    if not math.isfinite(value):
        raise DatasetError(f"{where}: {cell.strip()!r} is not a finite number")
    if index < len(FEATURES) and abs(value) > FLOAT32_MAX:  # features are stored as float32
        raise DatasetError(f"{where}: {cell.strip()!r} is too large for a 32-bit float")
    if index == len(FEATURES) and value not in (0.0, 1.0):
        raise DatasetError(f"{where}: label {cell.strip()!r} must be 0 or 1")
    return value


def _check_row_count(count: int, source: str) -> None:
    """Refuse files too small to train on, or too large to be this dataset."""
    if count == 0:
        raise DatasetError(f"{source}: the file has no data rows")
    if count < MIN_ROWS:
        raise DatasetError(f"{source}: only {count} rows; at least {MIN_ROWS} are needed")
    if count > MAX_ROWS:
        raise DatasetError(f"{source}: {count} rows is more than the {MAX_ROWS} allowed")


def decode(data: bytes, source: str) -> str:
    """Decode bytes as UTF-8 text (a BOM allowed), refusing binary files."""
    if b"\0" in data:
        raise DatasetError(f"{source}: a binary file, not CSV text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DatasetError(f"{source}: not UTF-8 text (byte {error.start})") from None


def load_dataset(path: Path) -> Dataset:
    """Read and validate a dataset file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    data = path.read_bytes()
    features, labels = parse_rows(decode(data, str(path)), str(path))
    # Hash the very bytes that were validated, not a second read a writer could race.
    return Dataset(features, labels, hashlib.sha256(data).hexdigest(), str(path))


def import_dataset(source: Path, data_dir: Path) -> dict:
    """Validate a local CSV and store it as the dataset to train on."""
    source = Path(source)
    if not source.is_file():
        raise DatasetError(f"{source}: no such file")
    return _store(source.read_bytes(), str(source), data_dir)


def fetch_dataset(url: str, data_dir: Path, timeout: float = 30.0) -> dict:
    """Download the dataset, validate it, and store it as the dataset to train on."""
    if not url.startswith(("https://", "http://")):
        raise DatasetError(f"{url}: only http:// and https:// URLs can be fetched")
    return _store(_download(url, timeout), url, data_dir)


def store_example(data_dir: Path) -> dict:
    """Store the packaged copy of the Pima data, checked like a download, with no network."""
    try:
        data = example_bytes()
    except OSError as error:  # a wheel or checkout built without its package data
        raise DatasetError(f"{EXAMPLE_SOURCE} is missing from this install: {error}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != EXAMPLE_SHA256:
        raise DatasetError(
            f"{EXAMPLE_SOURCE}: sha256 {digest} is not the shipped {EXAMPLE_SHA256} "
            "(a damaged install?)"
        )
    return _store(data, EXAMPLE_SOURCE, data_dir)


def _download(url: str, timeout: float) -> bytes:
    """Read at most MAX_DOWNLOAD_BYTES of a URL, refusing a reply that is cut short."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (scheme checked)
            data = response.read(MAX_DOWNLOAD_BYTES + 1)
            declared = response.headers.get("Content-Length", "")
    # ValueError and InvalidURL: a malformed URL; other HTTPExceptions: a reply that is not HTTP
    except (urllib.error.URLError, OSError, ValueError, http.client.InvalidURL) as error:
        reason = getattr(error, "reason", error)
        raise DatasetError(f"could not download {url}: {reason}") from None
    except http.client.HTTPException as error:
        reason = f"not a valid HTTP reply ({type(error).__name__})"
        raise DatasetError(f"could not download {url}: {reason}") from None
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise DatasetError(f"{url}: larger than {MAX_DOWNLOAD_BYTES >> 20} MiB; not this dataset")
    # http.client returns a short body without complaint when the connection drops early.
    if declared.isdigit() and len(data) < int(declared):
        raise DatasetError(f"could not download {url}: got {len(data)} of {declared} bytes")
    return data


def _store(data: bytes, source: str, data_dir: Path) -> dict:
    """Validate bytes, then write them and their record atomically."""
    features, labels = parse_rows(decode(data, source), source)
    record = {
        "file": DATA_FILE,
        "sha256": hashlib.sha256(data).hexdigest(),
        "rows": int(len(labels)),
        "positives": int(labels.sum()),
        "source": source,
        "stored_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _keep(data, record, data_dir, drop=TABLE_FILE)
    return record


def import_table(source: Path, data_dir: Path, label: str, task: Task | None = None) -> Table:
    """Validate a CSV with a header row and store it as the dataset to train on."""
    data, table = _read_table(Path(source), label, task)
    record: dict[str, object] = {
        "file": TABLE_FILE, "kind": "table", "label": table.label, "task": table.task.value,
        "features": list(table.feature_names), "classes": list(table.classes),
        "sha256": table.sha256, "rows": table.rows, "source": table.source,
        "stored_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _keep(data, record, data_dir, drop=DATA_FILE)  # the very bytes that were validated
    return table


def parse_table_file(path: Path, label: str, task: Task | None = None) -> Table:
    """Read a header CSV (not stored) as a Table, with its sha256."""
    return _read_table(Path(path), label, task)[1]


def _read_table(path: Path, label: str, task: Task | None) -> tuple[bytes, Table]:
    """A header CSV's bytes (its size checked before they are read) and its checked Table."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    if path.stat().st_size > MAX_DOWNLOAD_BYTES:
        raise DatasetError(f"{path}: larger than {MAX_DOWNLOAD_BYTES >> 20} MiB")
    data = path.read_bytes()
    table = _checked_table(data, str(path), label, task)
    return data, replace(table, sha256=hashlib.sha256(data).hexdigest(), source=str(path))


def _checked_table(data: bytes, source: str, label: str, task: Task | None) -> Table:
    """Parse a header CSV into a Table, refusing too few or too many rows."""
    table = parse_table(decode(data, source), label, task, source)
    _check_row_count(table.rows, source)
    return table


def _keep(data: bytes, record: dict, data_dir: Path, drop: str) -> None:
    """Write the data and its record atomically, then drop the other kind's file."""
    atomic_write_bytes(Path(data_dir) / str(record["file"]), data)
    atomic_write_text(Path(data_dir) / RECORD_FILE, json.dumps(record, indent=2) + "\n")
    (Path(data_dir) / drop).unlink(missing_ok=True)


def load_table(data_dir: Path, path: Path | None = None) -> Table:
    """The stored dataset (or the headerless Pima file at `path`) as a Table of any task."""
    if path is not None:
        return table_from_dataset(load_dataset(path))
    if not stores_table(data_dir):
        return table_from_dataset(load_dataset(stored_dataset(data_dir)))
    record = _stored_record(Path(data_dir))
    table_path = Path(data_dir) / TABLE_FILE
    data = table_path.read_bytes()
    try:
        task = Task(str(record.get("task")))
    except ValueError:
        raise DatasetError(f"{Path(data_dir) / RECORD_FILE}: no valid task; import the data "
                           "again") from None
    table = _checked_table(data, str(table_path), str(record.get("label")), task)
    return replace(table, sha256=hashlib.sha256(data).hexdigest(),
                   source=str(record.get("source", table_path)))


def stores_table(data_dir: Path) -> bool:
    """Tell whether the stored dataset is a header CSV (`data import --label`), not Pima's."""
    return (_stored_record(Path(data_dir)).get("kind") == "table"
            and (Path(data_dir) / TABLE_FILE).is_file())


def _stored_record(data_dir: Path) -> dict:
    """The stored dataset's record ({} when there is none or it is unreadable)."""
    path = data_dir / RECORD_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def table_from_dataset(dataset: Dataset) -> Table:
    """The headerless Pima file as a binary Table (its columns named as in FEATURES)."""
    return Table(feature_names=FEATURES, features=dataset.features,
                 target=dataset.labels.astype(np.int64), task=Task.BINARY, classes=("0", "1"),
                 label=LABEL, inferred="", sha256=dataset.sha256, source=dataset.source,
                 header=False)


def stored_dataset(data_dir: Path) -> Path:
    """Return the stored dataset's path, or say how to get one."""
    path = Path(data_dir) / DATA_FILE
    if not path.is_file():
        if (Path(data_dir) / TABLE_FILE).is_file():
            raise DatasetError("the stored dataset is a table with a header (`data import "
                               "--label`); this needs the headerless Pima file")
        raise DatasetError(
            "no dataset yet: run `modelserve data example` (the built-in copy), "
            "`modelserve data fetch` or `modelserve data import PATH`"
        )
    return path


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into train and held-out sets keeping each class's share; seeded."""
    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"test fraction {test_fraction} must be between 0 and 1")
    rng = np.random.default_rng(seed)
    train_parts, test_parts = [], []
    for value in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == value))
        held_out = int(round(len(members) * test_fraction))
        test_parts.append(members[:held_out])
        train_parts.append(members[held_out:])
    return np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(test_parts))
