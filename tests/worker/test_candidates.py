"""A rollout's candidate scored on a thread of its own: a hung one holds that thread, never
the worker, and its batches past the deadline are failures the judge counts."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from modelserve.model.runtime import Scores
from modelserve.worker import wire
from modelserve.worker.candidates import CandidateLate, CandidateThreads
from modelserve.worker.tasks import MAX_CANDIDATE_SECONDS, score_batch, seconds_left

VERSION = "cccccccccccc"


def test_a_candidate_that_answers_in_time_gives_its_result():
    """The work runs on the version's own thread and its result comes back."""
    threads = CandidateThreads(keep=2)
    assert threads.run(VERSION, threading.current_thread, 5.0) is not threading.current_thread()
    assert threads.run(VERSION, lambda: 41 + 1, 5.0) == 42


def test_a_hung_candidate_is_late_once_and_then_refused_at_once_until_it_returns():
    """Past the timeout the caller goes on; the version's next batch is refused without
    waiting (one thread held, not two); once it returns, the version scores again."""
    threads = CandidateThreads(keep=2)
    release = threading.Event()
    began = time.monotonic()
    with pytest.raises(CandidateLate, match="did not answer within 0.2 s"):
        threads.run(VERSION, release.wait, 0.2)
    assert 0.2 <= time.monotonic() - began < 2.0
    began = time.monotonic()
    with pytest.raises(CandidateLate, match="still scoring an earlier batch"):
        threads.run(VERSION, lambda: 1, 5.0)
    assert time.monotonic() - began < 0.1
    assert threads.run("dddddddddddd", lambda: 2, 5.0) == 2  # another version is not held up
    release.set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            assert threads.run(VERSION, lambda: 3, 5.0) == 3
            break
        except CandidateLate:
            time.sleep(0.01)
    else:
        pytest.fail("the version never scored again after its hung batch returned")


def test_only_the_latest_versions_keep_a_thread():
    """Threads of versions beyond keep are let go (new ones are made on their next batch)."""
    threads = CandidateThreads(keep=2)
    names = {}
    for version in ("v1", "v2", "v3", "v1"):
        names[version] = threads.run(version, lambda: threading.current_thread().name, 5.0)
    assert len(threads._pools) == 2 and set(threads._pools) == {"v3", "v1"}
    assert names["v1"].startswith("candidate-v1")


class _HangingRuntime:
    """A candidate runtime that takes 8 features and never answers until released."""

    features = tuple(f"f{i}" for i in range(8))

    def __init__(self) -> None:
        self.release = threading.Event()

    def score(self, rows: np.ndarray) -> Scores:
        self.release.wait()
        return Scores(np.zeros((len(rows), 1), np.float32), np.zeros(len(rows), np.int8), VERSION)


class _Served:
    """Served models whose named version is the hanging runtime."""

    def __init__(self, runtime: _HangingRuntime) -> None:
        self.runtime = runtime

    def current(self, name: str, version: str = "") -> _HangingRuntime:
        return self.runtime


def test_a_worker_answers_a_hung_candidate_s_batch_as_failed_at_its_deadline(dataset):
    """score_batch gives the worker back at the deadline with a one-line error reply."""
    runtime = _HangingRuntime()
    rows = wire.encode(dataset.features[:3], wire.ROWS)
    began = time.monotonic()
    reply = score_batch(_Served(runtime), "diabetes", rows, 8, VERSION,  # type: ignore[arg-type]
                        CandidateThreads(keep=2), 0.3)
    assert time.monotonic() - began < 3.0
    assert reply.error == f"version {VERSION} did not answer within 0.3 s (its batch's deadline)"
    runtime.release.set()


def test_the_time_left_is_read_from_the_task_s_expiry():
    """ISO text or a datetime; none, unreadable or naive: the longest wait; past: the least."""
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    assert seconds_left((now + timedelta(seconds=7)).isoformat(), now) == pytest.approx(7)
    assert seconds_left(now + timedelta(seconds=2), now) == pytest.approx(2)
    assert seconds_left(now - timedelta(seconds=2), now) == pytest.approx(0.1)
    assert seconds_left(None, now) == seconds_left("soon", now) == MAX_CANDIDATE_SECONDS
    assert seconds_left(datetime(2026, 12, 3, 12, 0, 5), now) == MAX_CANDIDATE_SECONDS
