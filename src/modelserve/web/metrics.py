"""Prometheus metrics: request latency, batch sizes, and per model its queue, rows and version."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from modelserve.rollout.state import Rollout

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
    "modelserve_rows_scored", "Rows answered, by model and version.", ["model", "version"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "modelserve_queue_depth", "Messages waiting in the queue a model's batches go to.",
    ["model"], registry=REGISTRY,
)
WORKERS = Gauge(
    "modelserve_workers", "Workers consuming the queue a model's batches go to.", ["model"],
    registry=REGISTRY,
)
SHADOW_COPIES = Counter(
    "modelserve_shadow_copies",
    "Copies of live requests sent to a rollout's shadow, by what became of them (answered, "
    "failed, or dropped because too many were waiting).",
    ["model", "version", "outcome"], registry=REGISTRY,
)
LOG_DROPPED = Counter(
    "modelserve_prediction_log_dropped",
    "Answers not written to the prediction log (its buffer full, or the disk refusing).",
    registry=REGISTRY,
)
ROLLOUT = Gauge(
    "modelserve_rollout_percent",
    "The share of requests a rollout's candidate gets (a shadow: copies; a canary: answers), "
    "by model, candidate, the live version it is judged against, and mode.",
    ["model", "candidate", "live", "mode"], registry=REGISTRY,
)
MODEL_INFO = Gauge(
    "modelserve_active_model", "1 for the version the registry says is active, by model.",
    ["model", "version"], registry=REGISTRY,
)


def render(models: dict[str, dict], rollouts: Sequence[Rollout] = ()) -> tuple[bytes, str]:
    """Refresh the gauges from each model's status snapshot (and the rollouts under way) and
    render every metric."""
    ROLLOUT.clear()
    for rollout in rollouts:
        ROLLOUT.labels(model=rollout.model, candidate=rollout.candidate, live=rollout.live,
                       mode=rollout.mode.value).set(rollout.percent)
    for gauge in (QUEUE_DEPTH, WORKERS, MODEL_INFO):
        gauge.clear()  # a model retired or removed since the last scrape is gone from them
    for name, status in models.items():
        QUEUE_DEPTH.labels(model=name).set(status.get("queue_depth", 0))
        WORKERS.labels(model=name).set(status.get("workers", 0))
        if status.get("active_version"):
            MODEL_INFO.labels(model=name, version=status["active_version"]).set(1)
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
