"""Batching per model without a broker: cap, window, deadlines, turns, split back to callers."""

from __future__ import annotations

from itertools import count
from pathlib import Path

import numpy as np
import pytest

from modelserve.config import Settings
from modelserve.web.batching import (
    Batch,
    Batcher,
    DeadlineExceeded,
    Limits,
    Prediction,
    Request,
    Unavailable,
    split_reply,
)
from modelserve.worker import wire

TIMEOUT = 5.0


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Let time pass."""
        self.now += seconds


_row_values = count()


def request(clock: FakeClock, rows: int, model: str = "a", timeout: float = TIMEOUT) -> Request:
    """A request arriving now with rows of values no other request has (to tell them apart)."""
    values = np.array([[next(_row_values), 0.5] for _ in range(rows)], np.float32)
    return Request(model=model, rows=values, arrived=clock(), timeout=timeout)


def batcher(clock: FakeClock, max_rows: int = 5, window: float = 0.0,
            max_inflight: int = 100) -> Batcher:
    """A batcher on the fake clock with numbered batch ids."""
    ids = count(1)
    return Batcher(Limits(max_rows, window, max_inflight), clock, lambda: f"b{next(ids)}")


def sizes(batch: Batch | None) -> list[int]:
    """The row count of each request of a batch."""
    assert batch is not None, "a batch was due"
    return [len(r.rows) for r in batch.requests]


def take_all(taker: Batcher) -> list[Batch]:
    """Every batch that is due now."""
    batches = []
    while (batch := taker.take()) is not None:
        batches.append(batch)
    return batches


def reply_for(batch: Batch, version: str = "v7", labels: bool = True) -> dict:
    """A worker's reply: per row, outputs (first value, first value * 10) and label row % 2."""
    rows = batch.rows()
    outputs = np.stack([rows[:, 0], rows[:, 0] * 10], axis=1)
    row_labels = (rows[:, 0] % 2).astype(np.int8) if labels else np.zeros(0, np.int8)
    return wire.Reply(version, outputs, row_labels, worker="host:42").to_body()


def refusal(item: Request) -> str:
    """The one line a caller was refused with (fails if it got an answer)."""
    error = item.future.exception(timeout=0)
    assert isinstance(error, Unavailable | DeadlineExceeded), error
    return str(error)


# -- the row cap ---------------------------------------------------------------------------


def test_a_batch_never_exceeds_the_cap_by_its_last_request():
    """3 + 3 rows with a cap of 5: the old collector sent 6 rows; now 3, then 3."""
    clock = FakeClock()
    taker = batcher(clock, max_rows=5)
    for rows in (3, 3):
        taker.add(request(clock, rows))
    assert [sizes(b) for b in take_all(taker)] == [[3], [3]]


def test_requests_fill_a_batch_up_to_the_cap_exactly():
    """Requests join while they fit: 2 + 2 + 1 is a full batch of 5, the next 2 wait."""
    clock = FakeClock()
    taker = batcher(clock, max_rows=5)
    for rows in (2, 2, 1, 2):
        taker.add(request(clock, rows))
    batches = take_all(taker)
    assert [sizes(b) for b in batches] == [[2, 2, 1], [2]]
    assert all(b.row_count <= 5 for b in batches)


def test_a_request_larger_than_the_cap_goes_alone():
    """7 rows with a cap of 5 travel alone; neither the request before nor after joins it."""
    clock = FakeClock()
    taker = batcher(clock, max_rows=5)
    for rows in (1, 7, 1):
        taker.add(request(clock, rows))
    assert [sizes(b) for b in take_all(taker)] == [[1], [7], [1]]


def test_a_request_that_does_not_fit_waits_and_order_is_kept():
    """A 4-row request behind 2 rows waits for the next batch; the 1-row one behind it is
    not taken ahead of it (order per model)."""
    clock = FakeClock()
    taker = batcher(clock, max_rows=5)
    sent = [request(clock, rows) for rows in (2, 4, 1)]
    for item in sent:
        taker.add(item)
    batches = take_all(taker)
    assert [list(b.requests) for b in batches] == [[sent[0]], [sent[1], sent[2]]]


# -- one model per batch, and turns between models -----------------------------------------


def test_a_batch_never_mixes_two_models_and_each_keeps_its_order():
    """Interleaved requests of two models make one batch per model, in arrival order."""
    clock = FakeClock()
    taker = batcher(clock, max_rows=100)
    sent = [request(clock, 1, model) for model in "abab"]
    for item in sent:
        taker.add(item)
    batches = take_all(taker)
    assert [(b.model, list(b.requests)) for b in batches] == [
        ("a", [sent[0], sent[2]]), ("b", [sent[1], sent[3]])]
    assert taker.waiting == 0 and taker.in_flight == 2


def test_a_batch_never_mixes_two_versions_of_a_model():
    """A candidate's requests (version named) and live ones ("") go in separate batches."""
    clock = FakeClock()
    taker = batcher(clock, max_rows=100)
    live, candidate = request(clock, 1), request(clock, 1)
    candidate.version = "c8f1d232f130"
    taker.add(live)
    taker.add(candidate)
    assert [(b.model, b.version, list(b.requests)) for b in take_all(taker)] == [
        ("a", "", [live]), ("a", "c8f1d232f130", [candidate])]


def test_a_busy_model_does_not_starve_another():
    """Ten full batches of a wait before one request of b: b is sent second, not eleventh."""
    clock = FakeClock()
    taker = batcher(clock, max_rows=5)
    for _ in range(10):
        taker.add(request(clock, 5, "a"))
    taker.add(request(clock, 1, "b"))
    assert [b.model for b in take_all(taker)] == ["a", "b"] + ["a"] * 9


def test_models_take_turns_round_robin():
    """Three models with backlogs are served a, b, c, a, b, c, ..."""
    clock = FakeClock()
    taker = batcher(clock, max_rows=1)
    for model in "aaabbbccc":
        taker.add(request(clock, 1, model))
    assert "".join(b.model for b in take_all(taker)) == "abcabcabc"


def test_a_model_whose_batch_is_not_due_does_not_hold_up_another():
    """a waits out its window with 1 row; b, full, goes at once."""
    clock = FakeClock()
    taker = batcher(clock, max_rows=2, window=0.3)
    taker.add(request(clock, 1, "a"))
    taker.add(request(clock, 2, "b"))
    assert [b.model for b in take_all(taker)] == ["b"]
    clock.advance(0.3)
    assert [b.model for b in take_all(taker)] == ["a"]


# -- the window and the slots ------------------------------------------------------------


def test_the_window_waits_for_company_from_the_oldest_request():
    """With a 300 ms window a lone request waits 300 ms from its arrival, then goes with
    those that came meanwhile."""
    clock = FakeClock()
    taker = batcher(clock, max_rows=10, window=0.3)
    taker.add(request(clock, 1))
    assert taker.take() is None
    assert taker.wait_time() == pytest.approx(0.3)
    clock.advance(0.2)
    taker.add(request(clock, 2))
    assert taker.take() is None
    assert taker.wait_time() == pytest.approx(0.1)
    clock.advance(0.1)
    assert sizes(taker.take()) == [1, 2]
    # Then only the batch's deadline is due: its last caller's, who came 0.2 s in.
    assert taker.wait_time() == pytest.approx(TIMEOUT - 0.1)


def test_a_full_batch_does_not_wait_for_the_window():
    """Reaching the cap, or a next request that would not fit, makes a batch due at once."""
    clock = FakeClock()
    taker = batcher(clock, max_rows=5, window=10.0)
    taker.add(request(clock, 5))
    assert sizes(taker.take()) == [5]
    taker.add(request(clock, 4))
    taker.add(request(clock, 3))
    assert taker.wait_time() == 0.0
    assert sizes(taker.take()) == [4]
    assert taker.take() is None, "the 3 rows left wait out their window"


def test_no_window_sends_at_once_and_busy_slots_let_requests_pile_up():
    """Window 0: due at once; with every slot busy requests gather into one bigger batch."""
    clock = FakeClock()
    taker = batcher(clock, max_rows=10, max_inflight=1)
    taker.add(request(clock, 1))
    first = taker.take()
    assert sizes(first) == [1]
    for _ in range(4):
        taker.add(request(clock, 1))
    assert taker.take() is None, "no free slot"
    assert first is not None and taker.finish(first.id) is first
    assert sizes(taker.take()) == [1, 1, 1, 1]


def test_while_slots_are_busy_only_the_deadline_is_waited_for():
    """A due batch with no free slot does not make wait_time 0 (no busy loop)."""
    clock = FakeClock()
    taker = batcher(clock, max_inflight=1)
    taker.add(request(clock, 1, timeout=2.0))
    assert taker.take() is not None
    taker.add(request(clock, 1))
    assert taker.wait_time() == pytest.approx(2.0)


def test_nothing_waiting_means_no_wake_up_needed():
    """An idle batcher has nothing to wait for."""
    assert batcher(FakeClock()).wait_time() is None


def test_add_wakes_the_sender_only_when_a_batch_may_be_due_sooner():
    """The first request of a target, or one that fills the batch, with a slot free: wake;
    one more joining a queue whose due time is known, or with every slot busy: no need."""
    clock = FakeClock()
    taker = batcher(clock, max_rows=3, window=1.0, max_inflight=1)
    assert taker.add(request(clock, 1)) is True  # starts the queue: a new due time
    assert taker.add(request(clock, 1)) is False  # joins it: due when the oldest is
    assert taker.add(request(clock, 1, model="b")) is True  # another target's first
    assert taker.add(request(clock, 1)) is True  # fills a's batch: due now
    assert sizes(taker.take()) == [1, 1, 1]
    assert taker.add(request(clock, 5)) is False  # the one slot is busy
    assert taker.waiting == 2


def test_callers_that_gave_up_are_dropped_after_requests_were_sent_around_them():
    """The bound on the next give-up survives sends: a caller behind sent ones still expires,
    and the rows counted per target stay right (a full batch after it is still a full one)."""
    clock = FakeClock()
    taker = batcher(clock, max_rows=4, window=10.0, max_inflight=1)
    patient = [request(clock, 1, timeout=60.0) for _ in range(4)]
    for item in patient:
        taker.add(item)
    assert sizes(taker.take()) == [1, 1, 1, 1]
    short = request(clock, 2, timeout=1.0)
    taker.add(short)
    later = [request(clock, 2, timeout=60.0) for _ in range(2)]
    for item in later:
        taker.add(item)
    clock.advance(1.0)
    assert taker.expire() == [] and refusal(short) == "no answer within 1 s"
    taker.finish("b1")
    assert list(taker.take().requests) == later  # 4 rows: full, sent without the window


# -- deadlines ---------------------------------------------------------------------------


def test_a_caller_that_gave_up_is_not_sent():
    """A waiting request past its deadline is dropped with its 504 line; the others go."""
    clock = FakeClock()
    taker = batcher(clock, max_rows=10, max_inflight=1)
    taker.add(request(clock, 1))
    busy = taker.take()
    short, patient = request(clock, 1, timeout=2.0), request(clock, 1)
    taker.add(short)
    taker.add(patient)
    clock.advance(2.0)
    assert busy is not None and taker.finish(busy.id) is busy
    batch = taker.take()
    assert batch is not None and list(batch.requests) == [patient]
    assert refusal(short) == "no answer within 2 s"


def test_a_model_whose_callers_all_gave_up_sends_nothing():
    """Every waiting request expired: no batch, and nothing left waiting."""
    clock = FakeClock()
    taker = batcher(clock, window=1.0)
    gone = request(clock, 1, timeout=0.5)
    taker.add(gone)
    clock.advance(1.0)
    assert taker.take() is None
    assert taker.waiting == 0 and taker.wait_time() is None
    assert refusal(gone) == "no answer within 0.5 s"


def test_expire_forgets_waiting_callers_that_gave_up_even_with_every_slot_busy():
    """With no free slot, expiry still drops the waiting requests nobody waits for."""
    clock = FakeClock()
    taker = batcher(clock, max_inflight=1)
    taker.add(request(clock, 1, timeout=10.0))
    assert taker.take() is not None
    waiting = request(clock, 1, timeout=1.0)
    taker.add(waiting)
    clock.advance(1.0)
    assert taker.expire() == []
    assert taker.waiting == 0 and refusal(waiting) == "no answer within 1 s"


def test_a_batch_in_flight_expires_when_its_last_caller_gives_up():
    """Deadlines 1 s and 3 s in one batch: kept at 2 s, expired at 3 s, its slot free again."""
    clock = FakeClock()
    taker = batcher(clock, max_inflight=1)
    first, last = request(clock, 1, timeout=1.0), request(clock, 1, timeout=3.0)
    taker.add(first)
    taker.add(last)
    batch = taker.take()
    assert batch is not None and batch.deadline == pytest.approx(clock() + 3.0)
    assert taker.wait_time() == pytest.approx(3.0)
    clock.advance(2.0)
    assert taker.expire() == []
    clock.advance(1.0)
    assert taker.expire() == [batch]
    assert taker.in_flight == 0 and taker.finish(batch.id) is None, "a late answer is ignored"
    batch.time_out()
    assert [refusal(r) for r in batch.requests] == ["no answer within 1 s",
                                                     "no answer within 3 s"]
    taker.add(request(clock, 1))
    assert taker.take() is not None, "the slot is free again"


def test_abandon_takes_out_every_batch_in_flight():
    """When the reply queue is gone, every batch in flight is handed back to be failed."""
    clock = FakeClock()
    taker = batcher(clock, max_rows=1)
    for model in "ab":
        taker.add(request(clock, 1, model))
    sent = take_all(taker)
    assert sorted(b.id for b in taker.abandon()) == sorted(b.id for b in sent)
    assert taker.in_flight == 0 and all(taker.finish(b.id) is None for b in sent)


# -- splitting a reply back ------------------------------------------------------------------


def one_batch(clock: FakeClock, *rows: int) -> Batch:
    """A batch in flight of requests with these row counts."""
    taker = batcher(clock, max_rows=100)
    for count_ in rows:
        taker.add(request(clock, count_))
    batch = taker.take()
    assert batch is not None and sizes(batch) == list(rows)
    return batch


def test_each_caller_gets_its_own_rows_back_in_order():
    """Outputs and labels are cut at each request's rows, with the batch's version and worker."""
    clock = FakeClock()
    batch = one_batch(clock, 2, 1, 3)
    batch.answer(reply_for(batch))
    for item in batch.requests:
        got = item.future.result(timeout=0)
        firsts = item.rows[:, 0]
        np.testing.assert_array_equal(got.outputs, np.stack([firsts, firsts * 10], axis=1))
        np.testing.assert_array_equal(got.labels, (firsts % 2).astype(np.int8))
        assert (got.version, got.worker) == ("v7", "host:42")
        np.testing.assert_array_equal(got.probabilities, firsts)


def test_a_regression_reply_splits_with_no_labels():
    """A reply without labels (a regression model) gives each caller empty labels."""
    clock = FakeClock()
    batch = one_batch(clock, 1, 2)
    predictions = split_reply(batch, reply_for(batch, labels=False))
    assert isinstance(predictions, list)
    assert [p.outputs.shape for p in predictions] == [(1, 2), (2, 2)]
    assert all(isinstance(p, Prediction) and p.labels.size == 0 for p in predictions)


@pytest.mark.parametrize(("body", "line"), [
    ({"error": "the model takes 8 features, not 2"}, "the model takes 8 features, not 2"),
    ("not a dict", "a worker sent an unreadable answer (the reply is not a JSON object)"),
    ({"version": "v1", "outputs": "!!", "width": 1, "labels": ""},
     "a worker sent an unreadable answer"),
    ({"version": "v1", "outputs": wire.encode(np.zeros((2, 1)), wire.OUTPUTS), "width": 1,
      "labels": ""}, "a worker answered with the wrong number of rows"),
])
def test_a_bad_or_refusing_reply_refuses_every_caller_with_one_line(body, line):
    """An error reply, an unreadable one or one with the wrong row count: all callers get it."""
    clock = FakeClock()
    batch = one_batch(clock, 1, 2)
    batch.answer(body)
    refusals = [refusal(r) for r in batch.requests]
    assert all(text.startswith(line) and "\n" not in text for text in refusals), refusals
    assert len(set(refusals)) == 1


def test_a_caller_is_settled_once():
    """A second outcome for a request that has one (a duplicate answer) is ignored."""
    clock = FakeClock()
    batch = one_batch(clock, 1)
    batch.answer(reply_for(batch))
    batch.fail(Unavailable("too late"))
    assert batch.requests[0].future.result(timeout=0).version == "v7"


def test_limits_come_from_the_settings(tmp_path: Path):
    """Milliseconds of window become seconds; the cap and the slots carry over."""
    settings = Settings(home=tmp_path, batch_window_ms=250, max_batch_rows=64,
                        max_inflight_batches=3)
    assert Limits.of(settings) == Limits(max_rows=64, window=0.25, max_inflight=3)
