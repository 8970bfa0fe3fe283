"""The prediction task as the message a Celery worker consumes (task protocol 2), built by hand.

The web app publishes one message per batch. Celery's client builds the same message through
signals, repr of every argument, option merging and a producer pool: a sixth of the web
process's CPU under load, for a message whose every field is known in advance. The workers
stay Celery; tests/worker/test_protocol.py checks this builder against Celery's own.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

PREDICT_TASK = "modelserve.predict_batch"
CONTENT_TYPE = "application/json"
CONTENT_ENCODING = "utf-8"
# Celery's embed part: no callbacks, errbacks, chain or chord.
NO_CANVAS = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
ORIGIN = f"{os.getpid()}@{socket.gethostname()}"


@dataclass(frozen=True)
class TaskMessage:
    """One batch's task message: AMQP headers and properties, and the JSON body."""

    headers: dict[str, Any]
    properties: dict[str, Any]
    body: bytes


def predict_message(batch_id: str, rows: str, n_features: int, model: str, reply_to: str,
                    expires_in: float, rows_count: int, now: datetime | None = None,
                    version: str = "") -> TaskMessage:
    """The `predict_batch(rows, n_features, model=model[, version=version])` task of one
    batch (its id names the batch on both sides), answered to reply_to, dropped by the worker
    once expired. A version is named only for a rollout's candidate: live batches follow the
    active link."""
    kwargs = {"model": model, "version": version} if version else {"model": model}
    expires = (now or datetime.now(UTC)) + timedelta(seconds=expires_in)
    headers: dict[str, Any] = {
        "lang": "py", "task": PREDICT_TASK, "id": batch_id, "shadow": None, "eta": None,
        "expires": expires.isoformat(), "group": None, "group_index": None, "retries": 0,
        "timelimit": [None, None], "root_id": batch_id, "parent_id": None,
        # What Celery's logs show for the arguments: never the rows themselves.
        "argsrepr": f"[<{rows_count} rows>]", "kwargsrepr": repr(kwargs),
        "origin": ORIGIN, "ignore_result": False, "replaced_task_nesting": 0,
        "stamped_headers": None, "stamps": {},
    }
    body = json.dumps([[rows, n_features], kwargs, NO_CANVAS]).encode()
    properties = {"correlation_id": batch_id, "reply_to": reply_to}
    return TaskMessage(headers, properties, body)
