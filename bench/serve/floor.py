"""The broker round trip alone: what one request through RabbitMQ costs without any HTTP.

One-row task messages (the web app's own, modelserve.worker.protocol) are published one at a
time with publisher confirms to a running stack's queue; its Celery workers answer to a reply
queue of ours. The time from publish to reply is the floor under a 1-connection p50.
"""

from __future__ import annotations

import statistics
import time
import uuid

import numpy as np
from kombu import Connection, Consumer, Producer, Queue

from modelserve.worker import protocol, wire

QUEUE = "modelserve.predict"


def round_trips(broker_url: str, row: list[float], count: int = 400,
                warmup: int = 20) -> dict:
    """Publish `count` one-row batches one after the other; p50 and p99 of their answers."""
    rows = np.asarray([row], dtype=np.float32)
    answered: list[float] = []
    with Connection(broker_url, transport_options={"confirm_publish": True}) as connection:
        replies = Queue(f"bench.floor.{uuid.uuid4().hex}", exclusive=True, auto_delete=True,
                        durable=False)
        consumer = Consumer(connection, [replies], no_ack=True, accept=["json"],
                            callbacks=[lambda body, message: answered.append(time.perf_counter())])
        consumer.consume()
        producer = Producer(connection)
        times = []
        for _ in range(count + warmup):
            batch = uuid.uuid4().hex
            message = protocol.predict_message(batch, wire.encode(rows, wire.ROWS), rows.shape[1],
                                               "diabetes", replies.name, 5.0, 1)
            sent, before = time.perf_counter(), len(answered)
            producer.publish(message.body, exchange="", routing_key=QUEUE, delivery_mode=1,
                             content_type=protocol.CONTENT_TYPE,
                             content_encoding=protocol.CONTENT_ENCODING,
                             headers=message.headers, **message.properties)
            while len(answered) == before:
                connection.drain_events(timeout=5)
            times.append(answered[-1] - sent)
    measured = sorted(times[warmup:])
    return {"count": count, "p50_ms": statistics.median(measured) * 1e3,
            "p99_ms": measured[int(len(measured) * 0.99) - 1] * 1e3}
