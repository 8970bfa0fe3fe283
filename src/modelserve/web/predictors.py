"""How the web app gets predictions: through RabbitMQ and the workers, or in-process.

QueuePredictor is safe with many waiting threads, unlike Celery's rpc:// backend: one thread
publishes, one thread owns the reply queue, and each waiter has its own future keyed by a
correlation id. Rows of requests for one model that arrive together travel as one message
(one model call) to that model's queue; web/batching.py decides what goes together.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np
from kombu import Consumer, Producer
from kombu import Queue as KombuQueue

from modelserve.config import Settings
from modelserve.errors import UserError
from modelserve.registry.catalog import Catalog
from modelserve.web import metrics
from modelserve.web.batching import (
    Batch,
    Batcher,
    DeadlineExceeded,
    Limits,
    Prediction,
    Request,
    Unavailable,
)
from modelserve.worker import protocol, wire
from modelserve.worker.active import NoActiveModel, ServedModels
from modelserve.worker.app import broker_connection, queue_for, task_queue

# The predictor interface's types live with the batching; callers import them from here.
__all__ = ["DeadlineExceeded", "InlinePredictor", "Prediction", "QueuePredictor", "Unavailable"]

log = logging.getLogger(__name__)
# How long a request waits for the broker connection (only matters just after start-up).
CONNECT_GRACE_SECONDS = 0.5
ONE_IMMEDIATE_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0,
                       "interval_max": 0}


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

    def status(self, model: str | None = None) -> dict:
        """Readiness: a model is loaded (one process serves every model)."""
        return {"broker": "none (in-process)", "workers": 1, "queue_depth": 0}

    def close(self) -> None:
        """Nothing to release."""




class QueuePredictor:
    """Batch rows across requests per model, send them to that model's queue, route each
    answer to its caller."""

    def __init__(self, settings: Settings):
        self._settings = settings
        # Used by the batcher thread only: one connection, publisher confirms on.
        self._publisher = broker_connection(settings, connect_timeout=2, heartbeat=0,
                                            transport_options={"confirm_publish": True})
        self._producer: Producer | None = None
        self._reply_queue = f"modelserve.reply.{uuid.uuid4().hex}"
        self._batcher = Batcher(Limits.of(settings), clock=time.monotonic)
        # Guards the batcher; notified on every change the batcher thread may act on.
        self._changed = threading.Condition()
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._status_cache: dict[str, tuple[float, dict]] = {}  # by queue
        self._threads = [
            threading.Thread(target=self._consume_replies, name="replies", daemon=True),
            threading.Thread(target=self._send_batches, name="batcher", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- callers' side ---------------------------------------------------------------------

    def predict(self, rows: np.ndarray, timeout: float, model: str = "") -> Prediction:
        """Queue rows for the next batch of a model ("": the default one) and wait for their
        answer until the deadline."""
        if not self._connected.wait(min(timeout, CONNECT_GRACE_SECONDS)):
            raise Unavailable("the message broker is not reachable")
        request = Request(model=model or self._settings.model_name, rows=rows,
                          arrived=time.monotonic(), timeout=timeout)
        with self._changed:
            self._batcher.add(request)
            self._changed.notify()
        try:
            return request.future.result(timeout)
        except FutureTimeout:
            raise request.late() from None

    # -- the batcher thread ----------------------------------------------------------------

    def _send_batches(self) -> None:
        """Publish each batch the batcher lets out; time out those nobody waits for any more."""
        while not self._stopping.is_set():
            with self._changed:
                expired = self._batcher.expire()
                batch = self._batcher.take()
                if batch is None and not expired:
                    # Waiting while every slot is busy is what lets requests pile up into
                    # bigger batches. The cap keeps close() prompt.
                    wait = self._batcher.wait_time()
                    self._changed.wait(0.5 if wait is None else min(wait, 0.5))
            for late in expired:
                log.warning("batch %s got no answer before its deadline", late.id)
                late.time_out()
            if batch is not None:
                self._publish(batch)

    def _publish(self, batch: Batch) -> None:
        """Send one batch to its model's queue; on failure answer its callers at once with 503."""
        rows = batch.rows()
        queue = queue_for(self._settings, batch.model)
        message = protocol.predict_message(
            batch.id, wire.encode(rows, wire.ROWS), rows.shape[1], batch.model,
            self._reply_queue, max(batch.deadline - time.monotonic(), 0.1), len(rows))
        try:
            self._the_producer().publish(
                message.body, exchange="", routing_key=queue,
                content_type=protocol.CONTENT_TYPE, content_encoding=protocol.CONTENT_ENCODING,
                headers=message.headers, **message.properties,
                # The queue exists before any worker does, so early batches wait in it.
                declare=[task_queue(queue)],
                # Transient: confirmed once queued, not after a disk sync (~100 ms here). A
                # request outliving a broker restart would have nobody left to answer to.
                delivery_mode=1,
                # A connection from before a broker restart fails on first use while the
                # broker is back: one immediate retry on a new connection. If the broker is
                # really away, that fails at once too.
                retry=True, retry_policy=ONE_IMMEDIATE_RETRY,
            )
        except Exception as error:  # kombu raises many types when the broker is away
            log.warning("publishing a batch failed: %s", error)
            self._producer = None  # the next batch starts from a fresh channel
            self._finish(batch.id, Unavailable("the message broker is not reachable"))
            return
        metrics.BATCH_ROWS.observe(len(rows))

    def _the_producer(self) -> Producer:
        """The batcher thread's producer (kombu revives its channel after a reconnect)."""
        if self._producer is None:
            self._producer = self._publisher.Producer()
        return self._producer

    def _finish(self, batch_id: str, outcome: object) -> None:
        """Hand a batch's answer (or failure) to each of its callers; its slot is free."""
        with self._changed:
            batch = self._batcher.finish(batch_id)
            self._changed.notify()
        if batch is None:
            return  # a duplicate answer (redelivered task) or one after the deadline
        if isinstance(outcome, UserError):
            batch.fail(outcome)
        else:
            batch.answer(outcome)

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

    def _fail_inflight(self, error: UserError) -> None:
        """Fail every batch in flight: their replies would go to a queue that is gone."""
        with self._changed:
            batches = self._batcher.abandon()
            self._changed.notify()
        for batch in batches:
            batch.fail(error)

    # -- status ------------------------------------------------------------------------------

    def status(self, model: str | None = None) -> dict:
        """Broker connection, live workers (consumers) and depth of a model's queue (None: the
        shared queue), cached 1 s per queue."""
        queue = (self._settings.queue if model is None
                 else queue_for(self._settings, model or self._settings.model_name))
        cached_at, cached = self._status_cache.get(queue, (0.0, {}))
        if time.monotonic() - cached_at < 1.0:
            return cached
        status = {"broker": "connected" if self._connected.is_set() else "unreachable",
                  "workers": 0, "queue_depth": 0}
        if self._connected.is_set():
            try:
                with broker_connection(self._settings, connect_timeout=1) as conn:
                    declared = conn.default_channel.queue_declare(queue, passive=True)
                status.update(workers=declared.consumer_count, queue_depth=declared.message_count)
            except Exception as error:  # the queue may not exist yet, or the broker just left
                log.debug("status of queue %s unavailable: %s", queue, error)
        self._status_cache[queue] = (time.monotonic(), status)
        return status

    def close(self) -> None:
        """Stop the threads (used by tests and at shutdown)."""
        self._stopping.set()
        with self._changed:
            self._changed.notify()
        for thread in self._threads:
            thread.join(timeout=3)
        self._publisher.release()
