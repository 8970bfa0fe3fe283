"""Prometheus metrics: request latency, batch sizes, queue depth, model version."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

REGISTRY = CollectorRegistry()

REQUEST_SECONDS = Histogram(
    "modelserve_request_seconds",
    "Time to answer an HTTP request, by endpoint and status code.",
    ["endpoint", "status"],
    buckets=(0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
BATCH_ROWS = Histogram(
    "modelserve_batch_rows",
    "Rows per message sent to the workers (requests batched together).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
    registry=REGISTRY,
)
ROWS_SCORED = Counter(
    "modelserve_rows_scored", "Rows answered, by model version.", ["version"], registry=REGISTRY
)
QUEUE_DEPTH = Gauge(
    "modelserve_queue_depth", "Messages waiting in the prediction queue.", registry=REGISTRY
)
WORKERS = Gauge("modelserve_workers", "Workers consuming the prediction queue.", registry=REGISTRY)
MODEL_INFO = Gauge(
    "modelserve_active_model", "1 for the version the registry says is active.", ["version"],
    registry=REGISTRY,
)


def render(status: dict, active_version: str | None) -> tuple[bytes, str]:
    """Refresh the gauges from a status snapshot and render every metric."""
    QUEUE_DEPTH.set(status.get("queue_depth", 0))
    WORKERS.set(status.get("workers", 0))
    MODEL_INFO.clear()
    if active_version:
        MODEL_INFO.labels(version=active_version).set(1)
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
