"""Dataset validation, import and split on the real CSV and on real damaged files."""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelserve.model.dataset import (
    DATA_FILE,
    FEATURES,
    MAX_ROWS,
    MIN_ROWS,
    RECORD_FILE,
    DatasetError,
    _check_row_count,
    import_dataset,
    load_dataset,
    parse_rows,
    stored_dataset,
    stratified_split,
)

PIMA_ROWS = 765
FLOAT32_MAX = float(np.finfo(np.float32).max)
HEADER = ",".join([*FEATURES, "diabetes"])


def good_rows(count: int = 120) -> list[list[str]]:
    """Return `count` valid rows as cells, labels alternating 1, 0, 1, ..."""
    return [
        [str(row), "148", "72", "35", "0", "33.6", "0.627", str(20 + row % 50), str((row + 1) % 2)]
        for row in range(count)
    ]


def render(rows: list[list[str]], newline: str = "\n") -> str:
    """Join rows of cells into CSV text."""
    return "".join(",".join(row) + newline for row in rows)


def with_cell(row: int, column: int, value: str) -> str:
    """Return valid CSV text with one cell (1-based row and column) replaced."""
    rows = good_rows()
    rows[row - 1][column - 1] = value
    return render(rows)


def write(tmp_path: Path, content: str | bytes, name: str = "data.csv") -> Path:
    """Write a file to load and return its path."""
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def refusal(path: Path) -> str:
    """Load a file that must be refused and return the one-line message."""
    with pytest.raises(DatasetError) as caught:
        load_dataset(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


# The real dataset


def test_load_real_dataset(pima_csv: Path) -> None:
    """Load the real CSV: 765 rows, 8 float32 features, 0/1 labels, hashlib's sha256."""
    dataset = load_dataset(pima_csv)
    with open(pima_csv, newline="") as stream:
        expected = [[float(cell) for cell in row] for row in csv.reader(stream)]
    assert dataset.rows == PIMA_ROWS
    assert dataset.features.shape == (PIMA_ROWS, len(FEATURES))
    assert dataset.features.dtype == np.float32
    np.testing.assert_array_equal(
        dataset.features, np.asarray([row[:-1] for row in expected], dtype=np.float32)
    )
    np.testing.assert_array_equal(dataset.labels, [int(row[-1]) for row in expected])
    assert set(np.unique(dataset.labels)) == {0, 1}
    assert dataset.sha256 == hashlib.sha256(pima_csv.read_bytes()).hexdigest()
    assert dataset.source == str(pima_csv)


def test_import_real_dataset(pima_csv: Path, tmp_path: Path) -> None:
    """Import stores a byte-identical copy and a dataset.json record describing it."""
    data_dir = tmp_path / "home" / "data"
    record = import_dataset(pima_csv, data_dir)
    stored = data_dir / DATA_FILE
    assert stored_dataset(data_dir) == stored
    assert stored.read_bytes() == pima_csv.read_bytes()
    assert json.loads((data_dir / RECORD_FILE).read_text()) == record
    labels = load_dataset(pima_csv).labels
    assert record["file"] == DATA_FILE
    assert record["sha256"] == hashlib.sha256(pima_csv.read_bytes()).hexdigest()
    assert record["rows"] == PIMA_ROWS
    assert record["positives"] == int(labels.sum())
    assert record["source"] == str(pima_csv)
    assert datetime.fromisoformat(record["stored_at"]).utcoffset() is not None
    assert sorted(path.name for path in data_dir.iterdir()) == [RECORD_FILE, DATA_FILE]


def test_stored_dataset_missing_says_how_to_get_one(tmp_path: Path) -> None:
    """Without a stored dataset the message names both commands that make one."""
    with pytest.raises(DatasetError, match=r"modelserve data fetch.*modelserve data import"):
        stored_dataset(tmp_path / "data")


# Refusals: one line naming the row and column


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(
            render(good_rows()[:4] + [good_rows()[4][:8]] + good_rows()[5:]),
            "row 5: expected 9 columns (8 features and a 0/1 label), found 8",
            id="too-few-columns",
        ),
        pytest.param(
            render(good_rows()[:9] + [[*good_rows()[9], "1"]] + good_rows()[10:]),
            "row 10: expected 9 columns (8 features and a 0/1 label), found 10",
            id="too-many-columns",
        ),
        pytest.param(
            with_cell(7, 2, "abc"),
            "row 7, column 2 (glucose): 'abc' is not a number",
            id="not-a-number",
        ),
        pytest.param(
            with_cell(3, 4, ""), "row 3, column 4 (skin_thickness): '' is not a number", id="empty"
        ),
        pytest.param(
            HEADER + "\n" + render(good_rows()),
            "row 1, column 1 (pregnancies): 'pregnancies' is not a number "
            "(the file must have no header row)",
            id="header",
        ),
        pytest.param(
            with_cell(3, 6, "nan"), "row 3, column 6 (bmi): 'nan' is not a finite number", id="nan"
        ),
        pytest.param(
            with_cell(8, 5, "inf"),
            "row 8, column 5 (insulin): 'inf' is not a finite number",
            id="inf",
        ),
        pytest.param(
            with_cell(8, 8, "-Infinity"),
            "row 8, column 8 (age): '-Infinity' is not a finite number",
            id="minus-infinity",
        ),
        pytest.param(
            with_cell(2, 7, "1e400"),
            "row 2, column 7 (diabetes_pedigree): '1e400' is not a finite number",
            id="overflows-float64",
        ),
        pytest.param(
            with_cell(4, 9, "2"),
            "row 4, column 9 (diabetes label): label '2' must be 0 or 1",
            id="label-2",
        ),
        pytest.param(
            with_cell(4, 9, "0.5"),
            "row 4, column 9 (diabetes label): label '0.5' must be 0 or 1",
            id="label-half",
        ),
        pytest.param(
            with_cell(4, 9, "nan"),
            "row 4, column 9 (diabetes label): 'nan' is not a finite number",
            id="label-nan",
        ),
        pytest.param(
            with_cell(6, 5, "1_000"),
            "row 6, column 5 (insulin): '1_000' is not a number",
            id="underscore",
        ),
        pytest.param(
            render(good_rows(MIN_ROWS - 1)),
            f"only {MIN_ROWS - 1} rows; at least {MIN_ROWS}",
            id="too-few-rows",
        ),
        pytest.param(
            render([[*row[:8], "0"] for row in good_rows()]),
            "every label is 0; both classes (0 and 1) are needed",
            id="only-class-0",
        ),
        pytest.param(
            render([[*row[:8], "1"] for row in good_rows()]),
            "every label is 1; both classes (0 and 1) are needed",
            id="only-class-1",
        ),
        pytest.param("", "the file has no data rows", id="empty-file"),
        pytest.param("\n\n  \n,,,,,,,,\n", "the file has no data rows", id="only-blank-lines"),
        pytest.param(
            render(good_rows()).encode() + b"\x00\x00", "a binary file, not CSV text", id="nul"
        ),
        pytest.param(
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "a binary file, not CSV text", id="png"
        ),
        pytest.param(
            render(good_rows(2)).encode() + "caf\u00e9,1".encode("latin-1"),
            f"not UTF-8 text (byte {len(render(good_rows(2))) + 3})",
            id="latin-1",
        ),
    ],
)
def test_refused_with_row_and_column(tmp_path: Path, content: str | bytes, expected: str) -> None:
    """Refuse a bad file with one line that starts with the path and names the fault."""
    path = write(tmp_path, content)
    message = refusal(path)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_feature_too_large_for_float32_refused(tmp_path: Path) -> None:
    """Refuse a finite feature that float32 storage would turn into inf."""
    message = refusal(write(tmp_path, with_cell(5, 2, "1e39")))
    assert "row 5, column 2 (glucose): '1e39' is too large" in message


def test_feature_at_float32_limit_accepted() -> None:
    """Accept the largest float32 feature value, kept exactly."""
    features, _ = parse_rows(with_cell(1, 1, repr(-FLOAT32_MAX)))
    assert features[0, 0] == np.float32(-FLOAT32_MAX)


def test_huge_cell_refused_with_row(tmp_path: Path) -> None:
    """Refuse a cell longer than the csv module allows with a DatasetError, not csv.Error."""
    message = refusal(write(tmp_path, with_cell(3, 1, "1" * 200_000)))
    assert "row 3" in message
    assert "field larger than field limit" in message


def test_error_after_blank_lines_names_physical_line(tmp_path: Path) -> None:
    """Count blank lines, so the row number in a message is the line in an editor."""
    text = "\n\n" + with_cell(5, 3, "x")
    assert "row 7, column 3 (blood_pressure): 'x' is not a number" in refusal(write(tmp_path, text))


def test_min_rows_boundary_accepted() -> None:
    """Accept exactly MIN_ROWS rows."""
    features, labels = parse_rows(render(good_rows(MIN_ROWS)))
    assert features.shape == (MIN_ROWS, len(FEATURES))
    assert labels.tolist() == [(row + 1) % 2 for row in range(MIN_ROWS)]


def test_max_rows_boundary() -> None:
    """Accept MAX_ROWS rows and refuse one more."""
    # The count check alone: parse_rows needs about 10 s for 10**6 rows, too slow to build one.
    # MIN_ROWS, checked by the same function, is tested through parse_rows on real text.
    _check_row_count(MAX_ROWS, "data")
    with pytest.raises(DatasetError, match=rf"^data: {MAX_ROWS + 1} rows is more than the "):
        _check_row_count(MAX_ROWS + 1, "data")


def test_missing_file_refused(tmp_path: Path) -> None:
    """Refuse a path that is not a file, for load and import alike."""
    for path in (tmp_path / "absent.csv", tmp_path):
        with pytest.raises(DatasetError, match=r"no such file$"):
            load_dataset(path)
        with pytest.raises(DatasetError, match=r"no such file$"):
            import_dataset(path, tmp_path / "data")
    assert not (tmp_path / "data").exists()


# Tolerated variations


def test_blank_lines_tolerated() -> None:
    """Skip empty, whitespace-only and all-empty-cell lines anywhere in the file."""
    rows = good_rows()
    text = "\n" + render(rows[:50]) + "\n   \n,,,,,,,,\n" + render(rows[50:]) + "\n\n"
    features, labels = parse_rows(text)
    expected_features, expected_labels = parse_rows(render(rows))
    np.testing.assert_array_equal(features, expected_features)
    np.testing.assert_array_equal(labels, expected_labels)


def test_bom_tolerated_and_hashed_as_stored(tmp_path: Path) -> None:
    """Accept a UTF-8 BOM; the sha256 is of the file's bytes, BOM included."""
    content = b"\xef\xbb\xbf" + render(good_rows()).encode()
    dataset = load_dataset(write(tmp_path, content))
    assert dataset.rows == 120
    assert dataset.features[0, 0] == 0.0
    assert dataset.sha256 == hashlib.sha256(content).hexdigest()


@pytest.mark.parametrize("newline", ["\r\n", "\r"], ids=["crlf", "cr"])
def test_other_line_endings_tolerated(newline: str) -> None:
    """Accept Windows (CRLF) and old Mac (CR) line endings."""
    features, labels = parse_rows(render(good_rows(), newline))
    expected_features, expected_labels = parse_rows(render(good_rows()))
    np.testing.assert_array_equal(features, expected_features)
    np.testing.assert_array_equal(labels, expected_labels)


def test_spaces_and_float_labels_tolerated() -> None:
    """Accept spaces around numbers and labels written 0.0 / 1.0."""
    rows = [[f" {cell} " for cell in row[:8]] + [f"{row[8]}.0"] for row in good_rows()]
    features, labels = parse_rows(render(rows))
    np.testing.assert_array_equal(features, parse_rows(render(good_rows()))[0])
    assert labels.dtype == np.int64
    assert labels[:4].tolist() == [1, 0, 1, 0]


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[list[float]], list[int]]:
    """Draw finite float32-range feature rows and 0/1 labels with both classes."""
    value = st.floats(min_value=-FLOAT32_MAX, max_value=FLOAT32_MAX)
    distinct = draw(st.lists(st.lists(value, min_size=8, max_size=8), min_size=1, max_size=12))
    count = draw(st.integers(MIN_ROWS, MIN_ROWS + 30))
    labels = draw(st.lists(st.integers(0, 1), min_size=count, max_size=count))
    labels[:2] = [0, 1]
    rows = [distinct[index % len(distinct)] for index in range(count)]
    return rows, labels


@settings(max_examples=40, deadline=None)
@given(tables())
def test_parse_rows_round_trips(table: tuple[list[list[float]], list[int]]) -> None:
    """Parse any repr-rendered table of finite floats back to the same values."""
    rows, labels = table
    text = "".join(
        ",".join(repr(value) for value in row) + f",{label}\n"
        for row, label in zip(rows, labels, strict=True)
    )
    features, parsed_labels = parse_rows(text)
    np.testing.assert_array_equal(features, np.asarray(rows, dtype=np.float32))
    assert features.dtype == np.float32
    assert parsed_labels.tolist() == labels


# The stratified split


@st.composite
def label_vectors(draw: st.DrawFn) -> np.ndarray:
    """Draw a shuffled 0/1 label vector with at least two of each class."""
    zeros, ones = draw(st.integers(2, 60)), draw(st.integers(2, 60))
    return np.asarray(draw(st.permutations([0] * zeros + [1] * ones)), dtype=np.int64)


@settings(max_examples=100, deadline=None)
@given(
    labels=label_vectors(),
    fraction=st.floats(min_value=0.01, max_value=0.99),
    seed=st.integers(0, 2**32 - 1),
)
def test_split_properties(labels: np.ndarray, fraction: float, seed: int) -> None:
    """Split into disjoint sorted parts covering every index, each class's share kept."""
    train, test = stratified_split(labels, fraction, seed)
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(len(labels)))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    for value in (0, 1):
        in_class = int(np.sum(labels == value))
        held_out = int(np.sum(labels[test] == value))
        assert abs(held_out - round(in_class * fraction)) <= 1
    again = stratified_split(labels, fraction, seed)
    np.testing.assert_array_equal(again[0], train)
    np.testing.assert_array_equal(again[1], test)


def test_split_of_real_dataset_depends_on_seed(pima_csv: Path) -> None:
    """Give the same split for a seed and another for a different seed, on the real data."""
    labels = load_dataset(pima_csv).labels
    train, test = stratified_split(labels, 0.2, seed=7)
    assert len(test) == round(np.sum(labels == 0) * 0.2) + round(np.sum(labels == 1) * 0.2)
    np.testing.assert_array_equal(stratified_split(labels, 0.2, seed=7)[1], test)
    other_train, other_test = stratified_split(labels, 0.2, seed=8)
    assert len(other_test) == len(test)
    assert not np.array_equal(other_test, test)
    assert not np.array_equal(other_train, train)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_split_refuses_fraction_outside_0_1(fraction: float) -> None:
    """Refuse a test fraction that is not strictly between 0 and 1."""
    labels = np.asarray([0, 1] * 10)
    with pytest.raises(DatasetError, match=r"test fraction .* must be between 0 and 1"):
        stratified_split(labels, fraction, seed=0)
