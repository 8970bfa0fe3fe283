"""Batching per model, as a pure module: collect waiting requests, cap, deadlines, split back.

A batch holds requests for one model only: a worker scores a whole batch with one runtime,
so a batch never mixes two models nor two versions (a rollout's candidate is named by its
version; "" is whatever version is active). It stays within the row cap, except
that a request larger than the cap travels alone. Nothing here starts a thread or touches
the broker: the transport (web/predictors.py) adds requests, takes the batches to publish
and hands back the replies, under a lock of its own; the clock is injected, so that tests
drive time without sleeping.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from modelserve.config import Settings
from modelserve.errors import UserError
from modelserve.worker import wire

Clock = Callable[[], float]  # monotonic seconds


class Settles(Protocol):
    """Where a request's outcome goes: a future, or anything settled the same way."""

    def done(self) -> bool:
        """Whether it is settled already."""

    def set_result(self, result: Prediction, /) -> None:
        """Settle it with an answer."""

    def set_exception(self, exception: BaseException, /) -> None:
        """Settle it with a refusal."""


class Unavailable(UserError):
    """The service cannot answer now (broker down, no model); retry later: 503."""


class DeadlineExceeded(UserError):
    """No answer within the request's deadline: 504."""


@dataclass(frozen=True)
class Prediction:
    """Outputs and labels for one request's rows (see model.answers), and who computed them."""

    outputs: np.ndarray  # float32 (rows, output width)
    labels: np.ndarray  # class index per row; empty for a regression model
    version: str
    worker: str
    id: str = ""  # the prediction id the web process gave the request (predlog.ids)

    @property
    def probabilities(self) -> np.ndarray:
        """A binary model's probability of the positive class per row (a regression: values)."""
        return self.outputs[:, 0]


@dataclass(frozen=True)
class Limits:
    """How many rows a batch takes, how long it waits for company, how many are in flight."""

    max_rows: int
    window: float  # seconds a model's oldest waiting request waits for others to join it
    max_inflight: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        """The limits the settings give (MODELSERVE_MAX_BATCH_ROWS and the like)."""
        return cls(max(settings.max_batch_rows, 1), max(settings.batch_window_ms, 0.0) / 1000,
                   max(settings.max_inflight_batches, 1))


@dataclass(eq=False)
class Request:
    """One caller's rows for one model, and the future the caller waits on until its deadline
    (an asyncio one on the predictor's loop; a thread-safe one elsewhere, e.g. in tests)."""

    model: str
    rows: np.ndarray
    arrived: float
    timeout: float
    future: Future[Prediction] | asyncio.Future[Prediction] | Settles = field(
        default_factory=Future)
    version: str = ""  # "": the active one
    sent: float | None = None  # when its batch was published (monotonic)

    @property
    def target(self) -> tuple[str, str]:
        """What scores it: the model, and the version named (if any)."""
        return self.model, self.version

    @property
    def deadline(self) -> float:
        """When the caller stops waiting."""
        return self.arrived + self.timeout

    def gave_up(self, now: float) -> bool:
        """Whether the caller has stopped waiting (its rows are not worth sending)."""
        return now >= self.deadline

    def late(self) -> DeadlineExceeded:
        """The refusal for this caller at its deadline (the same whoever notices first)."""
        return DeadlineExceeded(f"no answer within {float(f'{self.timeout:.3g}'):g} s")

    def settle(self, outcome: Prediction | UserError) -> None:
        """Complete the caller's future once (a late duplicate is ignored)."""
        if self.future.done():
            return
        try:
            if isinstance(outcome, UserError):
                self.future.set_exception(outcome)
            else:
                self.future.set_result(outcome)
        except (InvalidStateError, asyncio.InvalidStateError):
            pass


@dataclass(frozen=True, eq=False)
class Batch:
    """Requests for one model sent as one message; its id is the message's correlation id."""

    id: str
    model: str
    requests: tuple[Request, ...]
    version: str = ""  # "": the active one

    @property
    def row_count(self) -> int:
        """Rows of all its requests."""
        return sum(len(request.rows) for request in self.requests)

    @functools.cached_property
    def deadline(self) -> float:
        """When its last caller stops waiting: after that, an answer has nobody to go to."""
        return max(request.deadline for request in self.requests)

    def rows(self) -> np.ndarray:
        """Its requests' rows, one after the other."""
        return np.concatenate([request.rows for request in self.requests])

    def fail(self, error: UserError) -> None:
        """Give every caller the same refusal."""
        for request in self.requests:
            request.settle(error)

    def time_out(self) -> None:
        """Give every caller its deadline refusal."""
        for request in self.requests:
            request.settle(request.late())

    def answer(self, body: object) -> None:
        """Settle every caller from a worker's reply: its own rows, or the reply's refusal."""
        outcome = split_reply(self, body)
        if isinstance(outcome, Unavailable):
            self.fail(outcome)
            return
        for request, prediction in zip(self.requests, outcome, strict=True):
            request.settle(prediction)


def split_reply(batch: Batch, body: object) -> list[Prediction] | Unavailable:
    """Cut a worker's reply into each request's rows, in order, or say why nobody gets any."""
    try:
        reply = wire.Reply.from_body(body)
    except ValueError as error:  # binascii.Error is one too
        return Unavailable(f"a worker sent an unreadable answer ({error})")
    if reply.error:
        return Unavailable(reply.error)
    if len(reply.outputs) != batch.row_count:
        return Unavailable("a worker answered with the wrong number of rows")
    predictions, start = [], 0
    for request in batch.requests:
        end = start + len(request.rows)
        labels = reply.labels[start:end]  # empty for a regression model
        predictions.append(Prediction(reply.outputs[start:end], labels, reply.version,
                                      reply.worker))
        start = end
    return predictions


class Batcher:
    """The requests waiting per model and the batches in flight.

    Not thread-safe: the transport calls it under one lock. Models take turns (round-robin,
    least recently served first), so a busy model cannot starve another; within a model,
    requests go in the order they came.
    """

    def __init__(self, limits: Limits, clock: Clock = time.monotonic,
                 new_id: Callable[[], str] = lambda: uuid.uuid4().hex):
        self.limits = limits
        self._clock = clock
        self._new_id = new_id
        self._waiting: OrderedDict[tuple[str, str], deque[Request]] = OrderedDict()
        self._rows: dict[tuple[str, str], int] = {}  # rows waiting, per target
        self._inflight: dict[str, Batch] = {}
        # No waiting caller gives up before this: the scan for them is skipped until then
        # (a lower bound: sending a request out leaves it as it was).
        self._next_give_up = float("inf")

    @property
    def waiting(self) -> int:
        """Requests not sent yet."""
        return sum(len(queue) for queue in self._waiting.values())

    @property
    def in_flight(self) -> int:
        """Batches sent and not answered, expired or abandoned yet."""
        return len(self._inflight)

    def add(self, request: Request) -> bool:
        """Queue a request behind the earlier ones of its model (and version); True when
        take() may now have a batch sooner than wait_time() said before it (a slot is free,
        and the request starts its target's queue or fills its next batch). Otherwise the
        sender need not wake: one request per wake-up is what costs at a high rate."""
        target = request.target
        queue = self._waiting.setdefault(target, deque())
        queue.append(request)
        rows = self._rows[target] = self._rows.get(target, 0) + len(request.rows)
        self._next_give_up = min(self._next_give_up, request.deadline)
        return len(self._inflight) < self.limits.max_inflight and (
            len(queue) == 1 or rows >= self.limits.max_rows)

    def take(self) -> Batch | None:
        """The next batch to send, now counted in flight; None if none is due or slots are full."""
        if len(self._inflight) >= self.limits.max_inflight:
            return None
        now = self._clock()
        self._drop_gave_up(now)
        for target, queue in list(self._waiting.items()):
            if now >= self._due_at(queue, now):
                return self._send(target, queue, self._next_batch_size(queue)[0])
        return None

    def wait_time(self) -> float | None:
        """Seconds until take() or expire() may have something to do; None: not before a
        change (a request added, a batch finished)."""
        now = self._clock()
        times = [batch.deadline for batch in self._inflight.values()]
        if len(self._inflight) < self.limits.max_inflight:
            times += [self._due_at(queue, now) for queue in self._waiting.values()]
        return max(min(times) - now, 0.0) if times else None

    def finish(self, batch_id: str) -> Batch | None:
        """Take a batch out of flight to answer it; None for an unknown or finished one (a
        redelivered task's second answer, or one after the deadline)."""
        return self._inflight.pop(batch_id, None)

    def expire(self) -> list[Batch]:
        """Take out the batches in flight whose every caller's deadline has passed (freeing
        their slots), and forget waiting requests whose caller gave up."""
        now = self._clock()
        self._drop_gave_up(now)
        expired = [key for key, batch in self._inflight.items() if now >= batch.deadline]
        return [self._inflight.pop(key) for key in expired]

    def abandon(self) -> list[Batch]:
        """Take out every batch in flight (their replies can no longer arrive)."""
        batches, self._inflight = list(self._inflight.values()), {}
        return batches

    def _next_batch_size(self, queue: deque[Request]) -> tuple[int, int]:
        """How many requests from the front make the next batch, and their rows."""
        waiting = self._rows.get(queue[0].target, 0) if queue else 0
        if waiting <= self.limits.max_rows:
            return len(queue), waiting  # all of them fit: no need to count
        count = rows = 0
        for request in queue:
            # The first request always goes, alone if it is larger than the cap.
            if count and rows + len(request.rows) > self.limits.max_rows:
                break
            count, rows = count + 1, rows + len(request.rows)
        return count, rows

    def _due_at(self, queue: deque[Request], now: float) -> float:
        """When a model's next batch is due: now if it is full (no further request would fit),
        else when its oldest request has waited the window out."""
        count, rows = self._next_batch_size(queue)
        if count < len(queue) or rows >= self.limits.max_rows:
            return now
        return queue[0].arrived + self.limits.window

    def _send(self, target: tuple[str, str], queue: deque[Request], count: int) -> Batch:
        """Move a model's first requests into a batch in flight; the model's turn goes last."""
        model, version = target
        batch = Batch(self._new_id(), model, tuple(queue.popleft() for _ in range(count)),
                      version)
        if queue:
            self._waiting.move_to_end(target)
            self._rows[target] -= batch.row_count
        else:
            del self._waiting[target], self._rows[target]
        self._inflight[batch.id] = batch
        return batch

    def _drop_gave_up(self, now: float) -> None:
        """Settle and forget waiting requests whose caller stopped waiting: they are not sent."""
        if now < self._next_give_up:
            return
        self._next_give_up = float("inf")
        for target, queue in list(self._waiting.items()):
            kept: deque[Request] = deque()
            for request in queue:
                if request.gave_up(now):
                    request.settle(request.late())
                else:
                    kept.append(request)
                    self._next_give_up = min(self._next_give_up, request.deadline)
            if not kept:
                del self._waiting[target], self._rows[target]
            elif len(kept) < len(queue):
                self._waiting[target] = kept
                self._rows[target] = sum(len(request.rows) for request in kept)
