"""The prediction task: score a batch with its model's active version, reply to the caller."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import replace
from datetime import UTC, datetime

from celery import Celery, Task
from celery.signals import worker_init, worker_ready
from kombu import Producer

from modelserve.config import Settings
from modelserve.errors import UserError
from modelserve.registry.catalog import Catalog
from modelserve.worker import wire
from modelserve.worker.active import NoActiveModel, ServedModels
from modelserve.worker.app import PREDICT_TASK, broker_connection
from modelserve.worker.candidates import CandidateThreads

log = logging.getLogger(__name__)
# Celery's SIGTERM handler only sets a flag, which its event loop reads between polls, and an
# idle loop polls for up to 10 s: a stopping worker (every `up` stop) waited that long.
STOP_CHECK_SECONDS = 0.5
# How long a candidate's batch is waited for: until its expiry, within these bounds.
MIN_CANDIDATE_SECONDS = 0.1
MAX_CANDIDATE_SECONDS = 60.0


def score_batch(served: ServedModels, model: str, rows: str, n_features: int,
                version: str = "", candidates: CandidateThreads | None = None,
                timeout: float = 0.0) -> wire.Reply:
    """Score packed rows with a model's active version (or the version named); a refusal is
    an error reply, not a crash. A version named (a rollout's candidate) is scored on its
    own thread among `candidates`, for at most `timeout` seconds."""
    try:
        runtime = served.current(model, version)
        if n_features != len(runtime.features):
            raise ValueError(f"the model takes {len(runtime.features)} features, not {n_features}")
        batch = wire.decode(rows, wire.ROWS, n_features)
        if version and candidates is not None:
            scores = candidates.run(version, lambda: runtime.score(batch), timeout)
        else:
            scores = runtime.score(batch)
    except (UserError, ValueError) as error:  # binascii.Error is a ValueError too
        return wire.Reply(error=str(error))
    except Exception:  # a bug or a damaged file: the callers hear it now, not at their deadline
        log.exception("scoring a batch failed")
        return wire.Reply(error="the worker failed to score this batch (its log has the details)")
    return wire.Reply(scores.version, scores.outputs, scores.labels)


class Replier:
    """Publish answers on a connection of the worker's own, without publisher confirms.

    Answers are transient and go to an exclusive queue that lives only as long as its
    caller's connection, so a confirm would add a round trip and protect nothing.
    """

    def __init__(self, settings: Settings):
        self._connection = broker_connection(settings, connect_timeout=2, heartbeat=0)
        self._producer: Producer | None = None

    def send(self, reply_to: str, correlation_id: str, body: dict) -> None:
        """Publish one answer, reconnecting once or twice if the broker went away."""
        if self._producer is None:
            self._producer = self._connection.Producer(serializer="json")
        self._producer.publish(
            body, exchange="", routing_key=reply_to, correlation_id=correlation_id,
            delivery_mode=1, retry=True, retry_policy={"max_retries": 3, "interval_start": 0.1},
        )


def seconds_left(expires: object, now: datetime | None = None) -> float:
    """Seconds until a task's expiry (an ISO time, or a datetime as Celery parses it), at
    least MIN_CANDIDATE_SECONDS; without one, the longest a candidate is waited for."""
    if isinstance(expires, str):
        try:
            expires = datetime.fromisoformat(expires)
        except ValueError:
            expires = None
    if not isinstance(expires, datetime) or expires.tzinfo is None:
        return MAX_CANDIDATE_SECONDS
    left = (expires - (now or datetime.now(UTC))).total_seconds()
    return min(max(left, MIN_CANDIDATE_SECONDS), MAX_CANDIDATE_SECONDS)


def _nothing() -> None:
    """A timer entry whose only effect is to end the event loop's poll."""


def register_tasks(app: Celery, settings: Settings, models: tuple[str, ...] = ()) -> None:
    """Register the prediction task on an app (one ServedModels per worker process).

    models: the models this worker is for (`worker --models`); every model when empty.
    """
    catalog = Catalog.of(settings)
    served = ServedModels(catalog, settings.max_loaded_models)
    candidates = CandidateThreads(settings.max_loaded_models)
    replier = Replier(settings)
    worker_name = f"{socket.gethostname()}:{os.getpid()}"

    @worker_init.connect(weak=False)
    def preload(**_kwargs) -> None:
        """Load the served models before consuming: no request pays for it, and readiness
        counts a worker only once it can answer (a Keras model takes seconds to load)."""
        names = list(models) or sorted(catalog.served())
        for name in names[: settings.max_loaded_models]:
            try:
                served.current(name)
            except NoActiveModel as error:
                log.warning("%s", error)

    @worker_ready.connect(weak=False)
    def stop_promptly(sender, **_kwargs) -> None:
        """Wake the event loop often enough that a stop request is seen within a poll."""
        if getattr(sender, "hub", None) is not None:  # the event loop's timer, not a thread's
            sender.timer.call_repeatedly(STOP_CHECK_SECONDS, _nothing)

    @app.task(name=PREDICT_TASK, bind=True, ignore_result=True)
    def predict_batch(self: Task, rows: str, n_features: int, model: str = "",
                      version: str = "") -> None:
        """Score one batch (rows of many requests to one model version) and reply."""
        scored = score_batch(served, model, rows, n_features, version, candidates,
                             seconds_left(self.request.expires))
        reply = replace(scored, worker=worker_name,
                        redelivered=bool((self.request.delivery_info or {}).get("redelivered")))
        if self.request.reply_to:
            replier.send(self.request.reply_to, self.request.correlation_id, reply.to_body())
