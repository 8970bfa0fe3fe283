"""How the web app gets predictions: through RabbitMQ and the workers, or in-process.

QueuePredictor is safe with many waiting threads, unlike Celery's rpc:// backend: one thread
publishes, one thread owns the reply queue, and each waiter has its own future keyed by a
correlation id. Rows of requests that arrive together travel as one message (one model call).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import numpy as np
from kombu import Consumer
from kombu import Queue as KombuQueue

from modelserve.config import Settings
from modelserve.errors import UserError
from modelserve.registry.catalog import Catalog
from modelserve.web import metrics
from modelserve.worker import wire
from modelserve.worker.active import NoActiveModel, ServedModels
from modelserve.worker.app import PREDICT_TASK, broker_connection, make_celery

log = logging.getLogger(__name__)
# How long a request waits for the broker connection (only matters just after start-up).
CONNECT_GRACE_SECONDS = 0.5
ONE_IMMEDIATE_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0,
                       "interval_max": 0}


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

    @property
    def probabilities(self) -> np.ndarray:
        """A binary model's probability of the positive class per row (a regression: values)."""
        return self.outputs[:, 0]


class InlinePredictor:
    """Score in the web process itself: the in-process ceiling, and a no-broker mode."""

    def __init__(self, settings: Settings):
        self._served = ServedModels(Catalog.of(settings), settings.max_loaded_models)

    def predict(self, rows: np.ndarray, timeout: float, model: str = "") -> Prediction:
        """Score rows with a model's active version, right here."""
        try:
            scores = self._served.current(model).score(rows)
        except NoActiveModel as error:
            raise Unavailable(str(error)) from None
        return Prediction(scores.outputs, scores.labels, scores.version, "in-process")

    def status(self) -> dict:
        """Readiness: a model is loaded."""
        return {"broker": "none (in-process)", "workers": 1, "queue_depth": 0}

    def close(self) -> None:
        """Nothing to release."""


@dataclass
class _Request:
    """One caller's rows and the future its thread waits on."""

    rows: np.ndarray
    deadline: float
    future: Future = field(default_factory=Future)


@dataclass
class _Batch:
    """Requests sent together in one message."""

    requests: list[_Request]
    deadline: float


class QueuePredictor:
    """Batch rows across requests, send them to the workers, route each answer to its caller."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._celery = make_celery(settings)
        self._reply_queue = f"modelserve.reply.{uuid.uuid4().hex}"
        self._incoming: queue.Queue[_Request] = queue.Queue()
        self._inflight: dict[str, _Batch] = {}
        self._inflight_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(settings.max_inflight_batches)
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._status_cache: tuple[float, dict] = (0.0, {})
        self._threads = [
            threading.Thread(target=self._consume_replies, name="replies", daemon=True),
            threading.Thread(target=self._send_batches, name="batcher", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- callers' side ---------------------------------------------------------------------

    def predict(self, rows: np.ndarray, timeout: float) -> Prediction:
        """Queue rows for the next batch and wait for their answer until the deadline."""
        if not self._connected.wait(min(timeout, CONNECT_GRACE_SECONDS)):
            raise Unavailable("the message broker is not reachable")
        request = _Request(rows, time.monotonic() + timeout)
        self._incoming.put(request)
        try:
            return request.future.result(timeout)
        except FutureTimeout:
            raise DeadlineExceeded(f"no answer within {timeout:g} s") from None

    # -- the batcher thread ----------------------------------------------------------------

    def _send_batches(self) -> None:
        """Collect waiting requests into batches and publish each as one task message."""
        while not self._stopping.is_set():
            try:
                first = self._incoming.get(timeout=0.5)
            except queue.Empty:
                self._expire_inflight()
                continue
            # Waiting for a free slot is what lets requests pile up into bigger batches.
            while not self._slots.acquire(timeout=0.1):
                self._expire_inflight()
            batch = self._collect(first)
            if batch.requests:
                self._publish(batch)
            else:
                self._slots.release()

    def _collect(self, first: _Request) -> _Batch:
        """Take the first request and whatever else arrives within the window, up to the cap."""
        requests, rows = [], 0
        window_end = time.monotonic() + self._settings.batch_window_ms / 1000
        item: _Request | None = first
        while item is not None:
            if time.monotonic() < item.deadline:  # a caller that gave up is not sent
                requests.append(item)
                rows += len(item.rows)
            if rows >= self._settings.max_batch_rows:
                break
            item = self._next_request(window_end)
        deadline = max((r.deadline for r in requests), default=0.0)
        return _Batch(requests, deadline)

    def _next_request(self, window_end: float) -> _Request | None:
        """Return a request already waiting, or one arriving before the window ends."""
        remaining = window_end - time.monotonic()
        try:
            if remaining <= 0:
                return self._incoming.get_nowait()
            return self._incoming.get(timeout=remaining)
        except queue.Empty:
            return None

    def _publish(self, batch: _Batch) -> None:
        """Send one batch; on failure answer its callers at once with 503."""
        correlation_id = uuid.uuid4().hex
        rows = np.concatenate([r.rows for r in batch.requests])
        with self._inflight_lock:
            self._inflight[correlation_id] = batch
        try:
            self._celery.send_task(
                PREDICT_TASK,
                args=[wire.encode(rows, wire.ROWS), rows.shape[1]],
                argsrepr=f"[<{len(rows)} rows>]",  # Celery would repr every value otherwise
                task_id=correlation_id,  # so that logs on both sides name the batch alike
                # Transient: confirmed once queued, not after a disk sync (~100 ms here). A
                # request outliving a broker restart would have nobody left to answer to.
                delivery_mode=1,
                reply_to=self._reply_queue,
                correlation_id=correlation_id,
                expires=max(batch.deadline - time.monotonic(), 0.1),
                # A pooled connection from before a broker restart fails on first use while
                # the broker is back: one immediate retry on a new connection. If the broker
                # is really away, that fails at once too.
                retry=True,
                retry_policy=ONE_IMMEDIATE_RETRY,
            )
        except Exception as error:  # kombu raises many types when the broker is away
            log.warning("publishing a batch failed: %s", error)
            self._finish(correlation_id, Unavailable("the message broker is not reachable"))
            return
        metrics.BATCH_ROWS.observe(len(rows))

    def _expire_inflight(self) -> None:
        """Drop batches whose every caller has given up, freeing their slots."""
        now = time.monotonic()
        with self._inflight_lock:
            expired = [cid for cid, batch in self._inflight.items() if batch.deadline < now]
        for correlation_id in expired:
            log.warning("batch %s got no answer before its deadline", correlation_id)
            self._finish(correlation_id, DeadlineExceeded("no answer before the deadline"))

    def _finish(self, correlation_id: str, outcome: object) -> None:
        """Hand a batch's answer (or failure) to each of its callers and free its slot."""
        with self._inflight_lock:
            batch = self._inflight.pop(correlation_id, None)
        if batch is None:
            return  # a duplicate answer (redelivered task) or one after the deadline
        self._slots.release()
        if isinstance(outcome, Exception):
            for request in batch.requests:
                _settle(request.future, exception=outcome)
            return
        _answer(batch, outcome)

    # -- the reply thread ------------------------------------------------------------------

    def _consume_replies(self) -> None:
        """Own the reply queue: reconnect when the broker goes away, route every answer."""
        while not self._stopping.is_set():
            try:
                self._consume_until_disconnected()
            except Exception as error:  # any connection failure: fail fast, then reconnect
                log.warning("reply connection lost: %s", error)
            self._connected.clear()
            self._fail_inflight(Unavailable("the message broker connection was lost"))
            self._stopping.wait(0.5)

    def _consume_until_disconnected(self) -> None:
        """Declare this process's reply queue and dispatch answers until the connection drops."""
        reply_queue = KombuQueue(
            self._reply_queue, exclusive=True, auto_delete=True, durable=False
        )
        with broker_connection(self._settings, connect_timeout=2, heartbeat=10) as conn:
            conn.ensure_connection(max_retries=1)
            with Consumer(conn, [reply_queue], callbacks=[self._on_reply], no_ack=True,
                          accept=["json"]):
                self._connected.set()
                next_heartbeat = 0.0
                while not self._stopping.is_set():
                    try:
                        conn.drain_events(timeout=1.0)
                    except TimeoutError:
                        pass
                    # This connection only receives, so the broker hears from us only through
                    # heartbeats; under load drain_events never times out, so check here.
                    if time.monotonic() >= next_heartbeat:
                        conn.heartbeat_check()
                        next_heartbeat = time.monotonic() + 1.0

    def _on_reply(self, body: object, message) -> None:
        """Route one answer to the batch it belongs to."""
        self._finish(message.properties.get("correlation_id", ""), body)

    def _fail_inflight(self, error: Exception) -> None:
        """Fail every waiting batch: their replies would go to a queue that is gone."""
        with self._inflight_lock:
            ids = list(self._inflight)
        for correlation_id in ids:
            self._finish(correlation_id, error)

    # -- status ------------------------------------------------------------------------------

    def status(self) -> dict:
        """Broker connection, live workers (queue consumers) and queue depth, cached 1 s."""
        cached_at, cached = self._status_cache
        if time.monotonic() - cached_at < 1.0:
            return cached
        status = {"broker": "connected" if self._connected.is_set() else "unreachable",
                  "workers": 0, "queue_depth": 0}
        if self._connected.is_set():
            try:
                with broker_connection(self._settings, connect_timeout=1) as conn:
                    declared = conn.default_channel.queue_declare(
                        self._settings.queue, passive=True)
                status.update(workers=declared.consumer_count, queue_depth=declared.message_count)
            except Exception as error:  # the queue may not exist yet, or the broker just left
                log.debug("queue status unavailable: %s", error)
        self._status_cache = (time.monotonic(), status)
        return status

    def close(self) -> None:
        """Stop the threads (used by tests and at shutdown)."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=3)


def _answer(batch: _Batch, body: object) -> None:
    """Split a batch's answer back into its callers' rows."""
    try:
        reply = wire.Reply.from_body(body)
    except ValueError as error:  # binascii.Error is one too
        reply = wire.Reply(error=f"a worker sent an unreadable answer ({error})")
    expected_rows = sum(len(request.rows) for request in batch.requests)
    if not reply.error and len(reply.outputs) != expected_rows:
        reply = wire.Reply(error="a worker answered with the wrong number of rows")
    if reply.error:
        refusal = Unavailable(reply.error)
        for request in batch.requests:
            _settle(request.future, exception=refusal)
        return
    start = 0
    for request in batch.requests:
        end = start + len(request.rows)
        labels = reply.labels[start:end]  # empty for a regression model
        result = Prediction(reply.outputs[start:end], labels, reply.version, reply.worker)
        _settle(request.future, result=result)
        start = end


def _settle(future: Future, result=None, exception: Exception | None = None) -> None:
    """Complete a future once (a late duplicate is ignored)."""
    if future.done():
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)
