"""The prediction log on disk: SQLite in WAL mode, one file per home, shared by processes.

Three tables: a request's inputs (predictions), each version's answer to it (answers: the
live one, and a shadow's or a canary's), and the truth fed back per row (feedback). Writers
append in batches (predlog.writer) and readers never block them (WAL). Arrays are stored
as little-endian float32 bytes, read back with their shapes checked.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelserve.predlog.records import Answered, FeedbackRefused, Role, Truth

FLOATS = np.dtype("<f4")
# A writer waits this long for another process's transaction before giving up on a batch.
BUSY_SECONDS = 2.0
PREPARE_RETRY_SECONDS = 0.01
ROWS_PER_STATEMENT = 200  # x 10 columns: well within SQLite's 32,766 variables
# What judging reads, at most, however long a rollout runs: the latest answers' latencies per
# version (a p99 of 20,000 is steady), the latest labelled rows, the latest paired requests.
LATENCY_SAMPLE = 20_000
LABELLED_LIMIT = 200_000
PAIRED_LIMIT = 50_000
SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id TEXT PRIMARY KEY, model TEXT NOT NULL, at REAL NOT NULL,
    rows INTEGER NOT NULL, features INTEGER NOT NULL, inputs BLOB NOT NULL
) WITHOUT ROWID;
DROP INDEX IF EXISTS predictions_by_time;
CREATE INDEX IF NOT EXISTS predictions_by_age ON predictions (at);
CREATE TABLE IF NOT EXISTS answers (
    prediction_id TEXT NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL,
    role TEXT NOT NULL, at REAL NOT NULL, latency REAL NOT NULL, rows INTEGER NOT NULL,
    width INTEGER NOT NULL, outputs BLOB, error TEXT NOT NULL,
    PRIMARY KEY (prediction_id, version)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS answers_by_time ON answers (model, at);
CREATE TABLE IF NOT EXISTS feedback (
    prediction_id TEXT NOT NULL, row INTEGER NOT NULL, truth REAL NOT NULL,
    model TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (prediction_id, row)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS feedback_by_model ON feedback (model, at);
"""


@dataclass(frozen=True)
class Traffic:
    """A version's answers in a window: how many, their rows, failures and latencies."""

    version: str
    role: Role
    requests: int
    rows: int
    errors: int
    latencies: np.ndarray  # seconds, of the latest answers that did not fail (a sample)


@dataclass(frozen=True)
class Labelled:
    """A version's answers to the rows that have feedback: when asked, outputs and the truth."""

    version: str
    role: Role
    at: np.ndarray  # seconds since the epoch, per row
    outputs: np.ndarray  # float32 (rows, width)
    truth: np.ndarray  # float64 per row: a class index, or the true value


@dataclass(frozen=True)
class Paired:
    """A candidate's answers beside live's to the same requests (rows of both, in order)."""

    live: np.ndarray  # float32 (rows, width)
    candidate: np.ndarray


class PredictionLog:
    """One SQLite file of predictions, answers and feedback."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection of this thread's own (SQLite's are not shared), closed after use."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, timeout=BUSY_SECONDS,
                                     isolation_level=None)) as connection:
            _prepare(connection, time.monotonic() + BUSY_SECONDS)
            yield connection

    def write(self, connection: sqlite3.Connection, entries: Sequence[Answered]) -> None:
        """Append answers (and the requests they answer, once each) in one transaction. A
        shadow's answer is to a request its live answer logged, under the same id: its rows
        are not written again."""
        requests = [(e.prediction_id, e.model, e.at, len(e.rows), _width(e.rows),
                     _blob(e.rows)) for e in entries if e.role is not Role.SHADOW]
        answers = [(e.prediction_id, e.model, e.version, e.role.value, e.at, e.latency,
                    len(e.rows), 0 if e.outputs is None else _width(e.outputs),
                    None if e.outputs is None else _blob(e.outputs), e.error)
                   for e in entries]
        with _transaction(connection):
            _insert_many(connection, "INSERT OR IGNORE INTO predictions VALUES", requests)
            _insert_many(connection, "INSERT OR REPLACE INTO answers VALUES", answers)

    def prune(self, connection: sqlite3.Connection, before: float) -> int:
        """Forget requests made before a time, with their answers and feedback; how many.
        Every step is an index lookup (by age, then by id), never a scan of the tables: it
        runs once a minute in every writer however large the log. (A shadow's answer whose
        live answer was never logged, the buffer full, has no request row and stays.)"""
        with _transaction(connection):
            connection.execute("DELETE FROM feedback WHERE prediction_id IN "
                               "(SELECT id FROM predictions WHERE at < ?)", (before,))
            connection.execute("DELETE FROM answers WHERE prediction_id IN "
                               "(SELECT id FROM predictions WHERE at < ?)", (before,))
            return connection.execute("DELETE FROM predictions WHERE at < ?",
                                      (before,)).rowcount

    def rows_of(self, model: str, ids: Sequence[str]) -> dict[str, int]:
        """How many rows each of these predictions of a model had (unknown ids are absent)."""
        with self.connect() as connection:
            return dict(connection.execute(
                "SELECT id, rows FROM predictions WHERE model = ? AND id IN "
                "(SELECT value FROM json_each(?))", (model, json.dumps(list(ids)))).fetchall())

    def add_feedback(self, model: str, truths: Sequence[Truth], at: float) -> None:
        """Record the truth of rows already answered, all or none: one already fed back is
        refused (409), as the whole request is."""
        with self.connect() as connection, _transaction(connection, immediate=True):
            known = connection.execute(
                "SELECT f.prediction_id, f.row FROM json_each(?) j JOIN feedback f "
                "ON f.prediction_id = json_extract(j.value, '$[0]') "
                "AND f.row = json_extract(j.value, '$[1]') LIMIT 3",
                (json.dumps([[t.prediction_id, t.row] for t in truths]),)).fetchall()
            if known:
                shown = ", ".join(f"{pid} row {row}" for pid, row in known)
                raise FeedbackRefused(409, f"feedback was already given for {shown}; "
                                           "each row takes one truth")
            connection.executemany(
                "INSERT INTO feedback VALUES (?,?,?,?,?)",
                [(t.prediction_id, t.row, t.value, model, at) for t in truths])

    def traffic(self, model: str, since: float) -> list[Traffic]:
        """Each version's answers to a model's requests made since a time: counted in full
        (in SQL), their latencies from the latest LATENCY_SAMPLE (memory stays bounded
        however long a rollout runs)."""
        with self.connect() as connection:
            counted = connection.execute(
                "SELECT version, role, COUNT(*), SUM(rows), SUM(error != '') FROM answers "
                "WHERE model = ? AND at >= ? GROUP BY version, role ORDER BY version, role",
                (model, since)).fetchall()
            return [Traffic(version, Role(role), requests, rows, errors,
                            self._latencies(connection, model, version, role, since))
                    for version, role, requests, rows, errors in counted]

    @staticmethod
    def _latencies(connection: sqlite3.Connection, model: str, version: str, role: str,
                   since: float) -> np.ndarray:
        """The latencies of a version's latest answers that did not fail, in seconds."""
        found = connection.execute(
            "SELECT latency FROM answers WHERE model = ? AND at >= ? AND version = ? "
            "AND role = ? AND error = '' ORDER BY at DESC LIMIT ?",
            (model, since, version, role, LATENCY_SAMPLE)).fetchall()
        return np.array([latency for (latency,) in found], dtype=np.float64)

    def labelled(self, model: str, since: float) -> list[Labelled]:
        """Each version's answers to the rows of a model's requests that have feedback (the
        latest LABELLED_LIMIT of them, oldest first)."""
        found: dict[tuple[str, str], list[tuple[float, np.ndarray, float]]] = {}
        with self.connect() as connection:
            for version, role, at, width, outputs, row, truth in connection.execute(
                    "SELECT a.version, a.role, a.at, a.width, a.outputs, f.row, f.truth "
                    "FROM feedback f JOIN answers a ON a.prediction_id = f.prediction_id "
                    "WHERE f.model = ? AND a.at >= ? AND a.outputs IS NOT NULL "
                    "ORDER BY a.at DESC LIMIT ?", (model, since, LABELLED_LIMIT)):
                values = _array(outputs, width)
                if row < len(values):
                    found.setdefault((version, role), []).append((at, values[row], truth))
        for items in found.values():
            items.reverse()  # read newest first, for the limit
        return [Labelled(version, Role(role), np.array([at for at, _, _ in items]),
                         np.stack([out for _, out, _ in items]),
                         np.array([truth for _, _, truth in items], dtype=np.float64))
                for (version, role), items in sorted(found.items())]

    def paired(self, model: str, candidate: str, since: float) -> Paired:
        """A candidate's answers beside the live answers to the same requests since a time
        (the latest PAIRED_LIMIT requests)."""
        live, theirs = [], []
        with self.connect() as connection:
            for width, mine, other_width, other in connection.execute(
                    "SELECT l.width, l.outputs, c.width, c.outputs FROM answers c "
                    "JOIN answers l ON l.prediction_id = c.prediction_id "
                    "AND l.role = 'live' AND l.version != c.version "
                    "WHERE c.model = ? AND c.version = ? AND c.at >= ? "
                    "AND c.outputs IS NOT NULL AND l.outputs IS NOT NULL "
                    "ORDER BY c.at DESC LIMIT ?", (model, candidate, since, PAIRED_LIMIT)):
                a, b = _array(mine, width), _array(other, other_width)
                if a.shape == b.shape:
                    live.append(a)
                    theirs.append(b)
        empty = np.zeros((0, 1), FLOATS)
        return Paired(np.concatenate(live) if live else empty,
                      np.concatenate(theirs) if theirs else empty)


def _insert_many(connection: sqlite3.Connection, insert: str,
                 rows: Sequence[tuple[object, ...]]) -> None:
    """Insert rows ROWS_PER_STATEMENT to a statement. executemany steps once per row, and
    sqlite3 lets go of the GIL at every step: beside a busy event loop each hand-over costs
    about as much as the row (measured: the log's CPU per answer from ~21 to ~14 us)."""
    if not rows:
        return
    width = len(rows[0])
    one = "(" + ",".join("?" * width) + ")"
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[start:start + ROWS_PER_STATEMENT]
        values = [value for row in chunk for value in row]
        connection.execute(f"{insert} {','.join([one] * len(chunk))}", values)


def _prepare(connection: sqlite3.Connection, deadline: float) -> None:
    """WAL mode and the tables. Tried again while another connection prepares the same new
    file: turning a file to WAL takes a lock SQLite's busy timeout does not wait for."""
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints
            connection.executescript(SCHEMA)
            return
        except sqlite3.OperationalError as error:
            busy = getattr(error, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY,
                                                                sqlite3.SQLITE_LOCKED)
            if not busy or time.monotonic() >= deadline:
                raise
            time.sleep(PREPARE_RETRY_SECONDS)


@contextmanager
def _transaction(connection: sqlite3.Connection, immediate: bool = False) -> Iterator[None]:
    """BEGIN ... COMMIT, rolled back on any error (IMMEDIATE: take the write lock first)."""
    connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _width(values: np.ndarray) -> int:
    """Columns of a (rows, columns) array."""
    return int(values.shape[1]) if values.ndim == 2 else 1


def _blob(values: np.ndarray) -> bytes:
    """An array as little-endian float32 bytes."""
    return np.ascontiguousarray(values, dtype=FLOATS).tobytes()


def _array(blob: bytes, width: int) -> np.ndarray:
    """Stored bytes as a (rows, width) array; a damaged blob reads as no rows."""
    if width < 1 or len(blob) % (FLOATS.itemsize * width):
        return np.zeros((0, max(width, 1)), FLOATS)
    return np.frombuffer(blob, dtype=FLOATS).reshape(-1, width)
