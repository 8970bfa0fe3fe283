"""The prediction log on disk and its writer: batches in, evidence out, the disk's failures
dropped and counted without ever holding up a prediction."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, mean_squared_error

from modelserve.model.spec import Output, Task
from modelserve.predlog import ids, live, store
from modelserve.predlog.records import Answered, FeedbackRefused, Role, Truth
from modelserve.predlog.store import PredictionLog
from modelserve.predlog.writer import LogWriter

BINARY = Output("diabetic", Task.BINARY, ("no", "yes"), 0.5)
PRICE = Output("price", Task.REGRESSION)
MODEL = "diabetes"


def answer(version: str, outputs: np.ndarray, at: float, role: Role = Role.LIVE,
           pid: str | None = None, error: str = "") -> Answered:
    """One logged answer to rows of 8 features."""
    rows = np.arange(len(outputs) * 8, dtype=np.float32).reshape(-1, 8)
    return Answered(pid or ids.new_id(at), MODEL, version, role, at, 0.002, rows,
                    None if error else outputs.astype(np.float32), error)


def written(path: Path, entries: list[Answered]) -> PredictionLog:
    """A log with these entries in it."""
    log = PredictionLog(path)
    with log.connect() as connection:
        log.write(connection, entries)
    return log


def test_feedback_joins_the_answers_and_the_metric_is_the_independent_one(tmp_path):
    """Accuracy per version over fed-back rows equals scikit-learn's on the same rows."""
    rng = np.random.default_rng(7)
    now = time.time()
    entries, truths = [], []
    for i in range(300):
        probabilities = rng.random((2, 1))
        entries.append(answer("aaaaaaaaaaaa", probabilities, now - 3000 + i * 10))
    log = written(tmp_path / "log.sqlite", entries)
    chosen = [(e, row) for e in entries[::3] for row in (0, 1)]
    truth = rng.integers(0, 2, len(chosen))
    truths = [Truth(e.prediction_id, row, float(t)) for (e, row), t in zip(chosen, truth,
                                                                           strict=True)]
    log.add_feedback(MODEL, truths, now)
    predicted = [int(e.outputs[row, 0] >= 0.5) for e, row in chosen]
    [figures] = live.summarize(BINARY, log.traffic(MODEL, 0), log.labelled(MODEL, 0))
    assert (figures.requests, figures.rows, figures.errors) == (300, 600, 0)
    assert figures.labelled == len(chosen)
    assert figures.value == pytest.approx(accuracy_score(truth, predicted))
    assert sum(point.labelled for point in figures.over_time) == len(chosen)
    assert figures.latency_p50 == pytest.approx(0.002)


def test_regression_rmse_and_a_shadow_s_agreement_with_live(tmp_path):
    """RMSE equals scikit-learn's; a shadow answering the same requests is paired with live."""
    now = time.time()
    live_entries = [answer("aaaaaaaaaaaa", np.array([[float(i)]]), now) for i in range(50)]
    shadow = [answer("bbbbbbbbbbbb", np.array([[float(i) + (1 if i % 2 else 0)]]), now,
                     Role.SHADOW, e.prediction_id) for i, e in enumerate(live_entries)]
    log = written(tmp_path / "log.sqlite", live_entries + shadow)
    log.add_feedback(MODEL, [Truth(e.prediction_id, 0, 3.0) for e in live_entries], now)
    by_version = {v.version: v for v in live.summarize(PRICE, log.traffic(MODEL, 0),
                                                       log.labelled(MODEL, 0))}
    want = mean_squared_error([3.0] * 50, list(range(50))) ** 0.5
    assert by_version["aaaaaaaaaaaa"].value == pytest.approx(want)
    assert by_version["bbbbbbbbbbbb"].role is Role.SHADOW
    paired = log.paired(MODEL, "bbbbbbbbbbbb", 0)
    agreement = live.agreement(PRICE, paired.live, paired.candidate)
    assert agreement.rows == 50 and agreement.labels is None
    assert agreement.mean_abs_diff == pytest.approx(0.5)


def test_long_rollouts_are_read_in_bounded_memory(tmp_path, monkeypatch):
    """Counts stay exact however many answers there are; latencies, labelled rows and pairs
    are read from the latest ones only."""
    monkeypatch.setattr(store, "LATENCY_SAMPLE", 10)
    monkeypatch.setattr(store, "LABELLED_LIMIT", 12)
    monkeypatch.setattr(store, "PAIRED_LIMIT", 7)
    now = time.time()
    live_entries = [replace(answer("aaaaaaaaaaaa", np.array([[0.9]]), now + i),
                            latency=0.001 if i >= 90 else 1.0) for i in range(100)]
    shadow = [answer("bbbbbbbbbbbb", np.array([[0.1 if i >= 93 else 0.9]]), now + i,
                     Role.SHADOW, e.prediction_id) for i, e in enumerate(live_entries)]
    failed = answer("aaaaaaaaaaaa", np.array([[0.5]]), now - 1, error="no worker answered")
    log = written(tmp_path / "log.sqlite", [*live_entries, *shadow, failed])
    log.add_feedback(MODEL, [Truth(e.prediction_id, 0, 1.0) for e in live_entries], now)
    by_version = {t.version: t for t in log.traffic(MODEL, 0)}
    assert (by_version["aaaaaaaaaaaa"].requests, by_version["aaaaaaaaaaaa"].errors) == (101, 1)
    assert by_version["aaaaaaaaaaaa"].latencies.tolist() == [0.001] * 10  # the latest ten
    labelled = log.labelled(MODEL, 0)
    assert sum(len(item.at) for item in labelled) == 12
    assert all(np.all(np.diff(item.at) >= 0) for item in labelled)  # oldest first
    assert min(float(item.at.min()) for item in labelled) >= now + 94
    paired = log.paired(MODEL, "bbbbbbbbbbbb", 0)
    assert live.agreement(BINARY, paired.live, paired.candidate).labels == 0.0  # latest 7


def test_binary_agreement_counts_labels_and_probability_differences():
    """Label agreement by threshold; the mean absolute difference of probabilities."""
    ours = np.array([[0.1], [0.6], [0.9], [0.4]], np.float32)
    theirs = np.array([[0.2], [0.4], [0.8], [0.4]], np.float32)
    agreement = live.agreement(BINARY, ours, theirs)
    assert agreement.labels == 0.75
    assert agreement.mean_abs_diff == pytest.approx(0.1, abs=1e-6)


def test_duplicate_feedback_is_refused_whole(tmp_path):
    """A row fed back twice is a 409, and nothing of that request is stored."""
    entry = answer("aaaaaaaaaaaa", np.array([[0.9], [0.1]]), time.time())
    log = written(tmp_path / "log.sqlite", [entry])
    log.add_feedback(MODEL, [Truth(entry.prediction_id, 0, 1.0)], time.time())
    with pytest.raises(FeedbackRefused) as caught:
        log.add_feedback(MODEL, [Truth(entry.prediction_id, 1, 0.0),
                                 Truth(entry.prediction_id, 0, 0.0)], time.time())
    assert caught.value.status == 409 and "row 0" in str(caught.value)
    assert log.labelled(MODEL, 0)[0].truth.tolist() == [1.0]
    assert log.rows_of(MODEL, [entry.prediction_id, ids.new_id()]) == {entry.prediction_id: 2}
    assert log.rows_of("other", [entry.prediction_id]) == {}


def test_failures_count_as_errors_and_old_requests_are_pruned(tmp_path):
    """A failed answer counts in the error rate; prune forgets requests past the retention."""
    now = time.time()
    old = answer("aaaaaaaaaaaa", np.array([[0.5]]), now - 7200)
    old_shadow = answer("bbbbbbbbbbbb", np.array([[0.4]]), now - 7200, Role.SHADOW,
                        old.prediction_id)
    failed = answer("aaaaaaaaaaaa", np.array([[0.5]]), now, error="no worker answered")
    log = written(tmp_path / "log.sqlite", [old, old_shadow, failed])
    log.add_feedback(MODEL, [Truth(old.prediction_id, 0, 1.0)], now)
    figures, _shadow = live.summarize(BINARY, log.traffic(MODEL, 0), log.labelled(MODEL, 0))
    assert (figures.requests, figures.errors, figures.error_rate) == (2, 1, 0.5)
    with log.connect() as connection:
        assert log.prune(connection, now - 3600) == 1
    assert log.rows_of(MODEL, [old.prediction_id, failed.prediction_id]) == {
        failed.prediction_id: 1}
    assert log.labelled(MODEL, 0) == []
    assert [t.version for t in log.traffic(MODEL, 0)] == ["aaaaaaaaaaaa"]  # the shadow's too


def test_the_writer_writes_in_batches_off_the_callers_thread(tmp_path):
    """put() returns at once; within the flush interval the entries are in the file."""
    writer = LogWriter(PredictionLog(tmp_path / "log.sqlite"), 3600, 1 << 20,
                       flush_seconds=0.05)
    entries = [answer("aaaaaaaaaaaa", np.array([[0.5]]), time.time()) for _ in range(500)]
    for entry in entries:
        writer.put(entry)
    deadline = time.monotonic() + 10
    while writer.written < 500 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert writer.written == 500 and writer.dropped == 0
    assert len(writer.store.rows_of(MODEL, [e.prediction_id for e in entries])) == 500
    writer.close()


def test_a_full_buffer_drops_and_counts_instead_of_waiting(tmp_path, caplog):
    """Past its byte budget the writer drops answers, counts them and warns once."""
    dropped = []
    writer = LogWriter(PredictionLog(tmp_path / "log.sqlite"), 3600, 2000,
                       on_dropped=lambda count, why: dropped.append(count),
                       flush_seconds=3600)
    with caplog.at_level(logging.WARNING):
        for _ in range(100):
            writer.put(answer("aaaaaaaaaaaa", np.array([[0.5]]), time.time()))
    assert writer.dropped == sum(dropped) > 0
    assert sum("buffer is full" in record.message for record in caplog.records) == 1
    writer.close()  # what the buffer held is written at the end
    assert writer.written + writer.dropped == 100


def test_a_log_that_cannot_be_written_is_a_warning_not_a_failure(tmp_path, caplog):
    """A place no file can be made (its folder is a file): puts return, entries are dropped."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    writer = LogWriter(PredictionLog(blocker / "log.sqlite"), 3600, 1 << 20, flush_seconds=0.05)
    with caplog.at_level(logging.WARNING):
        for _ in range(20):
            writer.put(answer("aaaaaaaaaaaa", np.array([[0.5]]), time.time()))
        deadline = time.monotonic() + 10
        while writer.dropped < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert writer.dropped == 20 and writer.written == 0
    assert any("cannot be opened" in record.message for record in caplog.records)
    writer.close()


def test_a_damaged_file_is_a_warning_not_a_failure(tmp_path, caplog):
    """A file that is not SQLite: entries are dropped with a warning; nothing raises."""
    path = tmp_path / "log.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    writer = LogWriter(PredictionLog(path), 3600, 1 << 20, flush_seconds=0.05)
    with caplog.at_level(logging.WARNING):
        for _ in range(20):
            writer.put(answer("aaaaaaaaaaaa", np.array([[0.5]]), time.time()))
        writer.flush()
    assert writer.dropped == 20 and writer.written == 0
    assert caplog.records and "\n" not in caplog.records[0].getMessage()
    writer.close()
    with pytest.raises(sqlite3.DatabaseError), sqlite3.connect(path) as connection:
        connection.execute("SELECT * FROM predictions")


def test_processes_opening_a_new_log_at_once_all_get_it(tmp_path):
    """Web processes start together: turning a new file to WAL is tried again, not refused
    (SQLite's busy timeout does not cover it), so no writer drops its first answers."""
    failures: list[Exception] = []
    start = threading.Barrier(6)

    def open_and_read(log: PredictionLog) -> None:
        start.wait()  # all at the same moment
        try:
            with log.connect() as connection:
                connection.execute("SELECT COUNT(*) FROM answers").fetchall()
        except sqlite3.Error as error:
            failures.append(error)

    for attempt in range(100):
        log = PredictionLog(tmp_path / f"log-{attempt}.sqlite")
        threads = [threading.Thread(target=open_and_read, args=(log,)) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []


def test_pruning_never_scans_a_whole_table(tmp_path):
    """Every writer prunes once a minute: each statement must be an index search, or a log of
    millions of rows would be read through every minute by every process."""
    log = written(tmp_path / "log.sqlite", [answer("aaaaaaaaaaaa", np.array([[0.5]]), 1.0)])
    statements: list[str] = []
    with log.connect() as connection:
        connection.set_trace_callback(statements.append)
        log.prune(connection, 2.0)
        connection.set_trace_callback(None)
        deletes = [s for s in statements if s.startswith("DELETE")]
        plans = [row[3] for s in deletes
                 for row in connection.execute("EXPLAIN QUERY PLAN " + s)]
    assert len(deletes) == 3
    assert plans and not [step for step in plans if step.startswith("SCAN")], plans


def test_a_batch_larger_than_one_statement_is_written_whole(tmp_path):
    """Rows go ROWS_PER_STATEMENT to a statement: 2.5 statements' worth all arrive."""
    count = store.ROWS_PER_STATEMENT * 5 // 2
    entries = [answer("aaaaaaaaaaaa", np.array([[0.5]]), 1000.0 + i) for i in range(count)]
    log = written(tmp_path / "log.sqlite", entries)
    [traffic] = log.traffic(MODEL, 0)
    assert (traffic.requests, traffic.rows) == (count, count)
    assert len(log.rows_of(MODEL, [e.prediction_id for e in entries])) == count
