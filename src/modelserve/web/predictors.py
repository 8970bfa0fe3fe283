"""How the web app gets predictions: through RabbitMQ and the workers, or in-process.

QueuePredictor lives on one asyncio event loop: the server's own in a web process, so that
a waiting request is a coroutine, not a thread; a loop thread of its own for synchronous
callers (the Flask pages, tests). One connection carries the batches (publisher confirms,
awaited per batch, so several are in flight at once) and this process's reply queue; each
waiter has its own future keyed by the batch's correlation id. Rows of requests for one
model that arrive together travel as one message (one model call) to that model's queue;
web/batching.py decides what goes together.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import numpy as np
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from modelserve.config import Settings
from modelserve.errors import UserError
from modelserve.registry.catalog import Catalog
from modelserve.registry.store import RegistryError
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
from modelserve.worker.app import broker_connection, broker_tls, queue_for

# The predictor interface's types live with the batching; callers import them from here.
__all__ = ["DeadlineExceeded", "InlinePredictor", "Prediction", "QueuePredictor", "Unavailable"]

log = logging.getLogger(__name__)
# How long a request waits for the broker connection (only matters just after start-up).
CONNECT_GRACE_SECONDS = 0.5
# A starting web process takes requests once its broker connection is up, or after this long
# (then it answers fast 503s, as with the broker down): on a loaded machine the connection can
# take a few seconds, and a process accepting before it has one refuses what it could serve.
STARTUP_CONNECT_SECONDS = 10.0
RECONNECT_SECONDS = 0.5
HEARTBEAT_SECONDS = 10
# A rollout's shadow copies: at most this many batches in flight (live keeps all of its own
# slots), at most this many copies waiting; beyond, a copy is dropped and counted, not queued.
SHADOW_INFLIGHT = 1
MAX_SHADOW_WAITING = 1000
# Nobody waits for a copy, so copies wait for company: a few large batches cost the workers
# and the broker far less than one message per request. A copy's latency is counted from
# when its batch is sent, so this wait is not held against the candidate.
SHADOW_WINDOW_SECONDS = 0.05
# What becomes of a shadow copy: its prediction or refusal, and its latency in seconds.
ShadowDone = Callable[[Prediction | UserError, float], None]
# The batcher's longest sleep with nothing due: keeps close() prompt.
IDLE_WAKE_SECONDS = 0.5
BROKER_AWAY = "the message broker is not reachable"


class InlinePredictor:
    """Score in the web process itself: the in-process ceiling, and a no-broker mode."""

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop | None = None):
        self._served = ServedModels(Catalog.of(settings), settings.max_loaded_models)
        self._shadow_pool: ThreadPoolExecutor | None = None
        self._shadows_pending = 0  # changed under the GIL by += and -=: a bound, not a count

    def predict(self, rows: np.ndarray, timeout: float, model: str = "",
                version: str = "") -> Prediction:
        """Score rows with a model's active version (or the version named), right here."""
        try:
            scores = self._served.current(model, version).score(rows)
        except (NoActiveModel, RegistryError) as error:  # nothing active, or no such version
            raise Unavailable(str(error)) from None
        return Prediction(scores.outputs, scores.labels, scores.version, "in-process")

    async def predict_async(self, rows: np.ndarray, timeout: float, model: str = "",
                            version: str = "") -> Prediction:
        """The same on the event loop (the model call is short: it runs on the loop)."""
        return self.predict(rows, timeout, model, version)

    async def wait_connected(self, timeout: float) -> bool:
        """Nothing to connect to: the model is in this process."""
        return True

    def shadow(self, rows: np.ndarray, timeout: float, model: str, version: str,
               done: ShadowDone) -> bool:
        """Score a copy with a candidate on a thread of its own, never on the caller's;
        False when too many copies wait (the copy is dropped)."""
        if self._shadows_pending >= MAX_SHADOW_WAITING:
            return False
        if self._shadow_pool is None:
            self._shadow_pool = ThreadPoolExecutor(1, thread_name_prefix="shadow")
        self._shadows_pending += 1
        self._shadow_pool.submit(self._score_shadow, rows, model, version, done)
        return True

    def _score_shadow(self, rows: np.ndarray, model: str, version: str,
                      done: ShadowDone) -> None:
        """Score one copy and report it."""
        started = time.perf_counter()
        try:
            outcome: Prediction | UserError = self.predict(rows, 0, model, version)
        except UserError as error:
            outcome = error
        finally:
            self._shadows_pending -= 1
        done(outcome, time.perf_counter() - started)

    def status(self, model: str | None = None) -> dict:
        """Readiness: a model is loaded (one process serves every model)."""
        return {"broker": "none (in-process)", "workers": 1, "queue_depth": 0}

    def close(self) -> None:
        """Let the shadow copies under way finish."""
        if self._shadow_pool is not None:
            self._shadow_pool.shutdown(wait=True, cancel_futures=True)

    async def aclose(self) -> None:
        """The same from the loop."""
        self.close()


class ShadowOutcome:
    """A shadow copy's stand-in for a future: nobody awaits a copy, so its outcome goes to
    `done` the moment its batch settles it, with no future or scheduled callback per copy."""

    __slots__ = ("_done", "_settled", "request")

    def __init__(self, done: ShadowDone):
        self._done = done
        self._settled = False
        self.request: Request | None = None

    def done(self) -> bool:
        """Whether the copy was settled already."""
        return self._settled

    def set_result(self, result: Prediction, /) -> None:
        """The candidate answered."""
        self._report(result)

    def set_exception(self, exception: BaseException, /) -> None:
        """The candidate failed, or the copy's deadline passed."""
        if isinstance(exception, UserError):
            self._report(exception)
        self._settled = True

    def _report(self, outcome: Prediction | UserError) -> None:
        """Hand the outcome on, with the latency since the copy's batch was sent."""
        self._settled = True
        request = self.request
        started = time.monotonic() if request is None else request.sent or request.arrived
        try:
            self._done(outcome, time.monotonic() - started)
        except Exception:  # noqa: BLE001 - the batch's other copies must still be settled
            log.exception("recording a shadow copy's outcome failed")


class QueuePredictor:
    """Batch rows across requests per model, send them to that model's queue, route each
    answer to its caller; all on one event loop."""

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop | None = None):
        self._settings = settings
        self._reply_queue = f"modelserve.reply.{uuid.uuid4().hex}"
        limits = Limits.of(settings)
        self._batcher = Batcher(limits, clock=time.monotonic)
        self._shadows = Batcher(
            Limits(limits.max_rows, max(limits.window, SHADOW_WINDOW_SECONDS), SHADOW_INFLIGHT),
            clock=time.monotonic)
        self._status_cache: dict[str, tuple[float, dict]] = {}  # by queue
        self._thread: threading.Thread | None = None
        if loop is None:  # synchronous callers only: the loop runs in a thread of ours
            loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=loop.run_forever, name="predictor",
                                            daemon=True)
            self._thread.start()
        self._loop = loop
        self._tls = broker_context(settings)
        # Touched on the loop only (asyncio's primitives are not thread-safe).
        self._changed = asyncio.Event()  # the batcher may have something to do
        self._connected = asyncio.Event()
        self._stopping = False
        self._channel: AbstractChannel | None = None
        self._declared: set[str] = set()  # queues declared on the current connection
        self._main = self._on_loop(self._run())

    def _on_loop(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Future:
        """Run a coroutine on the predictor's loop, from that loop or from any thread."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            return self._loop.create_task(coroutine)
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self._loop),
                                   loop=self._loop)

    # -- callers' side ---------------------------------------------------------------------

    async def predict_async(self, rows: np.ndarray, timeout: float, model: str = "",
                            version: str = "") -> Prediction:
        """Queue rows for the next batch of a model ("": the default one; version "": the
        active one) and wait for their answer until the deadline (on the predictor's loop)."""
        if not self._connected.is_set():
            try:
                await asyncio.wait_for(self._connected.wait(), min(timeout, CONNECT_GRACE_SECONDS))
            except TimeoutError:
                raise Unavailable(BROKER_AWAY) from None
        answer: asyncio.Future[Prediction] = self._loop.create_future()
        request = Request(model=model or self._settings.model_name, rows=rows,
                          arrived=time.monotonic(), timeout=timeout, future=answer,
                          version=version)
        if self._batcher.add(request):
            self._changed.set()
        try:
            # shield: a timeout leaves the future to the batcher, which settles it as late.
            return await asyncio.wait_for(asyncio.shield(answer), timeout)
        except TimeoutError:
            raise request.late() from None

    def predict(self, rows: np.ndarray, timeout: float, model: str = "",
                version: str = "") -> Prediction:
        """The same from a thread other than the loop's (the Flask pages)."""
        future = asyncio.run_coroutine_threadsafe(
            self.predict_async(rows, timeout, model, version), self._loop)
        # predict_async settles by the deadline; the margin only covers a stalled loop.
        return future.result(timeout + 5)

    async def wait_connected(self, timeout: float) -> bool:
        """Wait (on the loop) until the broker connection is up, at most timeout seconds."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def shadow(self, rows: np.ndarray, timeout: float, model: str, version: str,
               done: ShadowDone) -> bool:
        """Send a copy of rows to a candidate version, in batches of their own, and report its
        outcome to `done` (on the loop); nobody waits for it. From any thread. False when the
        copy is dropped: not connected, or too many copies already wait."""
        if not self._connected.is_set() or self._shadows.waiting >= MAX_SHADOW_WAITING:
            return False
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._add_shadow(rows, timeout, model, version, done)
        else:
            self._loop.call_soon_threadsafe(self._add_shadow, rows, timeout, model, version, done)
        return True

    def _add_shadow(self, rows: np.ndarray, timeout: float, model: str, version: str,
                    done: ShadowDone) -> None:
        """Queue one shadow copy (on the loop); its outcome goes to `done`."""
        outcome = ShadowOutcome(done)
        request = Request(model=model, rows=rows, arrived=time.monotonic(), timeout=timeout,
                          future=outcome, version=version)
        outcome.request = request
        if self._shadows.add(request):
            self._changed.set()

    # -- on the loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        """Keep the connection and send batches until close()."""
        sender = asyncio.ensure_future(self._send_batches())
        try:
            while not self._stopping:
                await self._connect_and_serve()
                if not self._stopping:
                    await asyncio.sleep(RECONNECT_SECONDS)
        finally:
            sender.cancel()

    async def _connect_and_serve(self) -> None:
        """Connect, own the reply queue and let batches out until the connection drops; then
        fail every batch in flight (their replies would go to a queue that is gone)."""
        connection: AbstractConnection | None = None
        try:
            connection = await aio_pika.connect(
                _with_heartbeat(self._settings.broker_url), ssl_context=self._tls, timeout=2)
            # The connection or the channel closing (the broker away, a channel error) ends
            # this connection's life: everything starts again on a new one.
            lost = asyncio.Event()
            connection.close_callbacks.add(lambda *_: lost.set())
            channel = await connection.channel(publisher_confirms=True)
            channel.close_callbacks.add(lambda *_: lost.set())
            queue = await channel.declare_queue(self._reply_queue, exclusive=True,
                                                auto_delete=True, durable=False)
            await queue.consume(self._on_reply, no_ack=True)
            self._channel, self._declared = channel, set()
            self._connected.set()
            self._changed.set()
            await lost.wait()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # any connection failure: fail fast, then reconnect
            if not self._stopping:
                log.warning("broker connection lost: %s", error)
        finally:
            self._connected.clear()
            self._channel = None
            self._fail_inflight(Unavailable("the message broker connection was lost"))
            if connection is not None and not connection.is_closed:
                await asyncio.shield(connection.close())

    async def _send_batches(self) -> None:
        """Publish each batch the batcher lets out; time out those nobody waits for any more."""
        while True:
            for batcher in (self._batcher, self._shadows):
                for late in batcher.expire():
                    log.warning("batch %s got no answer before its deadline", late.id)
                    late.time_out()
                while (batch := batcher.take()) is not None:
                    asyncio.ensure_future(self._publish(batch))
            # Waiting while every slot is busy is what lets requests pile up into bigger
            # batches; a finished batch or a new request wakes the loop at once.
            waits = [wait for wait in (self._batcher.wait_time(), self._shadows.wait_time())
                     if wait is not None]
            wait = min(waits) if waits else None
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(),
                                       IDLE_WAKE_SECONDS if wait is None
                                       else min(wait, IDLE_WAKE_SECONDS))
            except TimeoutError:
                pass

    async def _publish(self, batch: Batch) -> None:
        """Send one batch to its model's queue; on failure answer its callers at once with 503."""
        rows = batch.rows()
        queue = queue_for(self._settings, batch.model)
        sent = time.monotonic()
        for request in batch.requests:
            request.sent = sent
        message = protocol.predict_message(
            batch.id, wire.encode(rows, wire.ROWS), rows.shape[1], batch.model,
            self._reply_queue, max(batch.deadline - time.monotonic(), 0.1), len(rows),
            version=batch.version)
        channel = self._channel
        try:
            if channel is None:
                raise ConnectionError("not connected")
            if queue not in self._declared:
                # The queue exists before any worker does, so early batches wait in it; it
                # is declared as the workers declare it (task_queue), or the broker refuses.
                await channel.declare_queue(queue, durable=True)
                self._declared.add(queue)
            # The confirm is awaited here, per batch: other batches go out meanwhile.
            await channel.default_exchange.publish(
                aio_pika.Message(
                    message.body, headers=message.headers,
                    content_type=protocol.CONTENT_TYPE,
                    content_encoding=protocol.CONTENT_ENCODING,
                    # Transient: confirmed once queued, not after a disk sync (~100 ms here).
                    # A request outliving a broker restart would have nobody to answer to.
                    delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
                    **message.properties),
                routing_key=queue, mandatory=False)
        except Exception as error:  # aio-pika raises many types when the broker is away
            log.warning("publishing a batch failed: %s", error)
            self._finish(batch.id, Unavailable(BROKER_AWAY))
            return
        metrics.BATCH_ROWS.observe(len(rows))

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        """Route one answer to the batch it belongs to."""
        try:
            body: object = json.loads(message.body)
        except ValueError as error:
            body = Unavailable(f"a worker sent an unreadable answer ({error})")
        self._finish(message.correlation_id or "", body)

    def _finish(self, batch_id: str, outcome: object) -> None:
        """Hand a batch's answer (or failure) to each of its callers; its slot is free."""
        batch = self._batcher.finish(batch_id) or self._shadows.finish(batch_id)
        self._changed.set()
        if batch is None:
            return  # a duplicate answer (redelivered task) or one after the deadline
        if isinstance(outcome, UserError):
            batch.fail(outcome)
        else:
            batch.answer(outcome)

    def _fail_inflight(self, error: UserError) -> None:
        """Fail every batch in flight."""
        for batch in (*self._batcher.abandon(), *self._shadows.abandon()):
            batch.fail(error)
        self._changed.set()

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

    async def aclose(self) -> None:
        """Stop on the loop: no new connection, the current one closed, waiters answered."""
        self._stopping = True
        self._main.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._main

    def close(self) -> None:
        """Stop from another thread (tests, the Flask side); ends our own loop thread too."""
        if self._loop.is_closed():
            return
        ending = self._finish_loop() if self._thread is not None else self.aclose()
        try:
            asyncio.run_coroutine_threadsafe(ending, self._loop).result(5)
        except Exception as error:  # a loop already stopping: nothing left to close
            log.debug("closing the predictor: %s", error)
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=3)
            if not self._thread.is_alive():
                self._loop.close()

    async def _finish_loop(self) -> None:
        """Close, then let every task of our own loop (aio-pika's too) end before it stops."""
        await self.aclose()
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)


def broker_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of an amqps:// broker (the options broker_tls gives py-amqp)."""
    options = broker_tls(settings)
    if not isinstance(options, dict):
        return None
    context = ssl.create_default_context(cafile=options["ca_certs"])
    context.minimum_version = options["tls_minimum_version"]
    if options["certfile"]:
        context.load_cert_chain(options["certfile"], options["keyfile"])
    return context


def _with_heartbeat(url: str) -> str:
    """The broker URL asking for heartbeats: a dead peer is noticed within seconds."""
    parts = urlsplit(url)
    query = "&".join(filter(None, [parts.query, f"heartbeat={HEARTBEAT_SECONDS}"]))
    return urlunsplit(parts._replace(query=query))
