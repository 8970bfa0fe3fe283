"""Properties of the CSV reader (the upload page and `modelserve predict` score files through it).

For any file, score_csv either hands the scorer only rows of 8 finite float32 values and writes
one answer per row, or refuses with an InputError whose message is one line; nothing else. (The
scorer behind the upload page is the workers, which refuse a whole batch, other requests' rows
included, for one non-finite value, so the reader must not pass one on.) A numeric file reads
back the same rows with or without a header, in any column order. Hypothesis runs each property
on a fixed, derandomized sequence of examples, so a run in CI is reproducible.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiers import scaled_examples

from modelserve.model.csvfile import score_csv
from modelserve.model.dataset import FEATURES
from modelserve.model.runtime import InputError, ModelRuntime, Scores
from modelserve.model.spec import FORMAT_V1, Feature, Metrics, ModelSpec, Output, Task

TALLY_SUBJECT = "CSV reader"  # the report rows of this module's properties
NAMES = list(FEATURES)
MAX_MESSAGE = 200  # after the file's path
WEIGHTS = np.linspace(-1e-3, 1e-3, len(NAMES), dtype=np.float32)


def budget(examples: int) -> settings:
    """Reproducible settings: derandomized, no example database, no deadline (CI is slow)."""
    return settings(max_examples=scaled_examples(examples), derandomize=True, database=None,
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _probabilities(rows: np.ndarray) -> np.ndarray:
    """A fixed model: a logistic function of the rows (any finite row gives a finite answer)."""
    return 1 / (1 + np.exp(-np.clip(rows @ WEIGHTS, -50, 50)))[:, None]


RUNTIME = ModelRuntime(
    ModelSpec(format=FORMAT_V1, version="0123456789ab", created_at="",
              features=tuple(Feature(name) for name in NAMES),
              output=Output("output", Task.BINARY, ("0", "1"), 0.5),
              metrics=Metrics(Task.BINARY, 0, {}), examples=(), files={}, document={}),
    _probabilities, "test")


class Recorder:
    """score_csv's scorer: checks and keeps each block it is handed, then scores it."""

    features = NAMES
    spec = RUNTIME.spec

    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []

    def score(self, rows: np.ndarray) -> Scores:
        """Score a block, after checking it is what any scorer can take."""
        assert rows.dtype == np.float32 and rows.ndim == 2 and rows.shape[1] == len(NAMES)
        assert np.isfinite(rows).all(), rows[~np.isfinite(rows).all(axis=1)][:3]
        self.blocks.append(rows.copy())
        return RUNTIME.score(rows)

    def rows(self) -> np.ndarray:
        """Every row handed over, in order."""
        return np.concatenate(self.blocks) if self.blocks else np.zeros((0, len(NAMES)))


def score(directory: Path, data: bytes) -> tuple[Recorder, int | InputError, Path]:
    """Score a file holding data: the recorder, the row count or the refusal, the output."""
    in_path, out_path = directory / "in.csv", directory / "out.csv"
    in_path.write_bytes(data)
    out_path.unlink(missing_ok=True)
    recorder = Recorder()
    try:
        return recorder, score_csv(recorder, in_path, out_path), out_path
    except InputError as error:
        message = str(error)
        assert message.startswith(f"{in_path}: "), message
        assert message.splitlines() == [message], repr(message)
        assert len(message) - len(str(in_path)) <= MAX_MESSAGE, message
        return recorder, error, out_path


def read_output(out_path: Path) -> list[dict[str, str]]:
    """The scored rows the reader wrote."""
    return list(csv.DictReader(io.StringIO(out_path.read_text())))




# ---- strategies -----------------------------------------------------------------------------

float32s = st.floats(width=32, allow_nan=False, allow_infinity=False)
rows_valid = st.lists(st.lists(float32s, min_size=len(NAMES), max_size=len(NAMES)),
                      min_size=1, max_size=30)
# Cells a spreadsheet, a script or an attacker might write.
odd_cells = st.sampled_from([
    "", " ", "nan", "NaN", "inf", "-Infinity", "1e39", "-3.5e38", "3.4028235e38", "1e-50", "0x1F",
    "1_000", "\u0661\u0662", "1,5", '"', '"1"', "'1'", "1 2", "+1", "-0", ".5", "5.", "1e",
    "\x00", "\ufeff1", "TRUE", "null", "\u00a01", "=1+1", "١",
])
line_ends = st.sampled_from(["\n", "\r\n", "\r"])
MUTATIONS = ("cell", "cell", "text cell", "name", "huge cell", "short row", "long row", "line",
             "cut", "bytes", "bom")
HUGE_CELL = "9" * 140_000  # over csv.field_size_limit()


@st.composite
def csv_like(draw) -> bytes:
    """A numeric file, with or without a header, then broken in 0 to 3 places, or not at all."""
    rows = draw(rows_valid)
    header = [",".join(draw(st.permutations(NAMES)))] if draw(st.booleans()) else []
    lines = header + [",".join(repr(float(v)) for v in row) for row in rows]
    end = draw(line_ends)
    data = end.join(lines) + draw(st.sampled_from([end, ""]))
    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), max_size=3)):
        data = _mutate(draw, mutation, data, end)
    return data if isinstance(data, bytes) else data.encode()


def _mutate(draw, mutation: str, data: str | bytes, end: str) -> str | bytes:
    """Break a file in one place."""
    if isinstance(data, bytes) or mutation in ("cut", "bytes"):
        raw = data if isinstance(data, bytes) else data.encode()
        at = draw(st.integers(0, len(raw)))
        junk = draw(st.binary(min_size=1, max_size=8)) if mutation == "bytes" else b""
        return raw[:at] + junk + (raw[at:] if mutation == "bytes" else b"")
    if mutation == "bom":
        return "\ufeff" + data
    lines = data.split(end)
    at = draw(st.integers(0, len(lines) - 1))
    cells = lines[at].split(",")
    if mutation in ("cell", "text cell", "name", "huge cell"):
        new = {"cell": odd_cells, "text cell": st.text(max_size=6), "name": st.sampled_from(NAMES),
               "huge cell": st.just(HUGE_CELL)}[mutation]
        cells[draw(st.integers(0, len(cells) - 1))] = draw(new)
    elif mutation == "short row":
        cells.pop()
    elif mutation == "long row":
        cells.append(draw(odd_cells | float32s.map(repr)))
    else:
        lines.insert(at, draw(st.text(max_size=20)))
    lines[at] = ",".join(cells) if mutation != "line" else lines[at]
    return end.join(lines)


any_file = st.one_of(csv_like(), csv_like(), st.binary(max_size=300))


def write_rows(rows: list[list[float]], header: list[str] | None, end: str,
               columns: list[int]) -> bytes:
    """A CSV file of rows (values written exactly), its columns in the given order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=end)
    if header is not None:
        writer.writerow(header)
    writer.writerows([[_cell(row, column) for column in columns] for row in rows])
    return out.getvalue().encode()


def _cell(row: list[float], column: int) -> str:
    """A value written so that it reads back exactly; an extra column (-1) holds text."""
    return repr(float(row[column])) if column >= 0 else "note, with a comma"


# ---- properties -----------------------------------------------------------------------------


def test_any_file_is_scored_or_refused_clearly(tmp_path, tally):
    """Any bytes: only finite rows of 8 float32 reach the scorer, one answer each; or a refusal."""
    tally.update(scenario="any file -> finite rows scored, or a one-line refusal",
                 note="found: nan/inf/1e39 cells reached the scorer (the upload page's workers "
                      "then refuse the whole batch: 503); a cell over 128 KiB raised csv.Error "
                      "(500, a traceback in `modelserve predict`); both fixed. Fixed too, seen by "
                      "hand: a header naming a feature twice was scored from its first column")

    @budget(700)
    @given(any_file)
    def check(data):
        tally["examples"] += 1
        recorder, outcome, out_path = score(tmp_path, data)
        if isinstance(outcome, InputError):
            tally["refused"] += 1
            return
        tally["accepted"] += 1
        assert outcome == len(recorder.rows()) >= 1
        assert len(read_output(out_path)) == outcome

    check()
    assert tally["accepted"] and tally["refused"]


def test_numeric_rows_read_back_the_same(tmp_path, tally):
    """A numeric file, with or without a header, columns in any order, reads back its rows."""
    tally.update(scenario="numeric rows round-trip, with or without header, any column order")

    @budget(400)
    @given(rows_valid, st.booleans(), st.permutations(range(len(NAMES))), st.booleans(),
           line_ends)
    def check(rows, with_header, order, extra_column, end):
        tally["examples"] += 1
        columns = list(order) + [-1] if with_header and extra_column else list(range(len(NAMES)))
        header = [NAMES[c] if c >= 0 else "comment" for c in columns] if with_header else None
        recorder, outcome, out_path = score(tmp_path, write_rows(rows, header, end, columns))
        assert not isinstance(outcome, InputError), outcome
        tally["accepted"] += 1
        expected = np.asarray(rows, dtype=np.float32)
        np.testing.assert_array_equal(recorder.rows(), expected)
        scored = read_output(out_path)
        want = RUNTIME.score(expected)
        got = np.asarray([float(r["probability"]) for r in scored], dtype=np.float32)
        np.testing.assert_array_equal(got, want.probabilities)
        assert [int(r["label"]) for r in scored] == want.labels.tolist()
        assert {r["model_version"] for r in scored} == {RUNTIME.version}

    check()


def test_one_bad_cell_is_named_by_row_and_column(tmp_path, tally):
    """A numeric file with one bad cell: refused, naming that cell's row and column."""
    tally.update(scenario="one bad cell -> refused, naming its row and column")
    bad_cells = st.sampled_from(["", "abc", "nan", "inf", "-inf", "1e39", "-1e39", "1..2", "0x1"])

    @budget(400)
    @given(rows_valid, bad_cells, st.integers(0, 29), st.integers(0, len(NAMES) - 1),
           st.booleans())
    def check(rows, bad, row_index, column, with_header):
        tally["examples"] += 1
        row_index %= len(rows)
        if not with_header and row_index == 0 and bad not in ("nan", "inf", "-inf", "1e39",
                                                               "-1e39"):
            with_header = True  # a first row with a word in it is read as a header
        cells = [[repr(float(v)) for v in row] for row in rows]
        cells[row_index][column] = bad
        lines = ([",".join(NAMES)] if with_header else []) + [",".join(row) for row in cells]
        _recorder, outcome, _out = score(tmp_path, ("\n".join(lines) + "\n").encode())
        assert isinstance(outcome, InputError), bad
        tally["refused"] += 1
        file_row = row_index + 1 + int(with_header)
        assert re.search(rf"\brow {file_row}, column {column + 1} \({NAMES[column]}\)",
                         str(outcome)), str(outcome)

    check()
