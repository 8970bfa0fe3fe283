"""The broker round trip alone: what one request through RabbitMQ costs without any HTTP.

One-row task messages (the web app's own, modelserve.worker.protocol) are published one at a
time with publisher confirms to a running stack's queue; its Celery workers answer to a reply
queue of ours. The time from publish to reply is the floor under a 1-connection p50.

The same messages sent instead to a queue of ours, where a bare kombu consumer in this process
sends each body straight back, split that floor: RabbitMQ's two hops on one side, the Celery
worker (taking the message, scoring, replying) on the other.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Callable

import numpy as np
from kombu import Connection, Consumer, Message, Producer, Queue

from modelserve.worker import protocol, wire

QUEUE = "modelserve.predict"


def measure(broker_url: str, row: list[float]) -> dict:
    """Both round trips: through the stack's Celery workers, and through a bare echo consumer."""
    return {"worker": round_trips(broker_url, row, QUEUE),
            "echo": echo_round_trips(broker_url, row)}


def describe(found: dict) -> str:
    """One line for the console."""
    worker, echo = found["worker"], found["echo"]
    return (f"broker round trip alone: p50 {worker['p50_ms']:.2f} ms, p99 {worker['p99_ms']:.2f}"
            f" ms; RabbitMQ alone (an echo in place of the worker): p50 {echo['p50_ms']:.2f} ms,"
            f" p99 {echo['p99_ms']:.2f} ms")


def echo_round_trips(broker_url: str, row: list[float], count: int = 400) -> dict:
    """The round trips of round_trips with a bare kombu consumer answering in place of Celery."""
    queue = Queue(f"bench.echo.{uuid.uuid4().hex}", auto_delete=True, durable=False)
    ready, stop = threading.Event(), threading.Event()
    echo = threading.Thread(target=serve_echo, args=(broker_url, queue, ready, stop), daemon=True)
    echo.start()
    try:
        if not ready.wait(10):
            raise RuntimeError("the echo consumer did not start within 10 s")
        return round_trips(broker_url, row, queue.name, count)
    finally:
        stop.set()
        echo.join(5)


def serve_echo(broker_url: str, queue: Queue, ready: threading.Event,
               stop: threading.Event) -> None:
    """Consume a queue and publish every body unchanged to its reply_to, until told to stop."""
    with Connection(broker_url) as connection:
        producer = Producer(connection)

        def answer(message: Message) -> None:
            producer.publish(message.body, exchange="", routing_key=message.properties["reply_to"],
                             delivery_mode=1, content_type="application/json",
                             content_encoding="utf-8")

        with Consumer(connection, [queue], no_ack=True, on_message=answer):
            ready.set()
            while not stop.is_set():
                try:
                    connection.drain_events(timeout=0.2)
                except TimeoutError:
                    continue


def round_trips(broker_url: str, row: list[float], queue: str = QUEUE, count: int = 400,
                warmup: int = 20) -> dict:
    """Publish `count` one-row batches one after the other; p50 and p99 of their answers."""
    rows = np.asarray([row], dtype=np.float32)
    answered: list[float] = []
    with Connection(broker_url, transport_options={"confirm_publish": True}) as connection:
        replies = Queue(f"bench.floor.{uuid.uuid4().hex}", exclusive=True, auto_delete=True,
                        durable=False)
        consumer = Consumer(connection, [replies], no_ack=True, accept=["json"],
                            on_message=arrived(answered))
        consumer.consume()
        producer = Producer(connection)
        times = []
        for _ in range(count + warmup):
            batch = uuid.uuid4().hex
            message = protocol.predict_message(batch, wire.encode(rows, wire.ROWS), rows.shape[1],
                                               "diabetes", replies.name, 5.0, 1)
            sent, before = time.perf_counter(), len(answered)
            producer.publish(message.body, exchange="", routing_key=queue, delivery_mode=1,
                             content_type=protocol.CONTENT_TYPE,
                             content_encoding=protocol.CONTENT_ENCODING,
                             headers=message.headers, **message.properties)
            while len(answered) == before:
                connection.drain_events(timeout=5)
            times.append(answered[-1] - sent)
    measured = sorted(times[warmup:])
    return {"count": count, "p50_ms": statistics.median(measured) * 1e3,
            "p99_ms": measured[int(len(measured) * 0.99) - 1] * 1e3}


def arrived(answered: list[float]) -> Callable[[Message], None]:
    """A consumer callback that notes when each answer arrived."""
    return lambda message: answered.append(time.perf_counter())
