"""Live evidence per version, as a pure module: traffic, latency, errors, the headline metric
on fed-back rows (over time), and a candidate's agreement with live on the same requests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelserve.model import answers, metrics
from modelserve.model.spec import HEADLINE, Output, Task
from modelserve.predlog.records import Role
from modelserve.predlog.store import Labelled, Traffic

# Widths of the metric's time buckets, the first that gives at most MAX_POINTS of them.
STEPS = (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
MAX_POINTS = 24


@dataclass(frozen=True)
class Point:
    """The headline metric over the fed-back rows of requests made in one stretch of time."""

    start: float
    labelled: int
    value: float | None


@dataclass(frozen=True)
class VersionLive:
    """What one version did on live traffic in a window."""

    version: str
    role: Role
    requests: int
    rows: int
    errors: int
    latency_p50: float | None  # seconds
    latency_p99: float | None
    metric: str  # the task's headline metric (accuracy, or rmse)
    labelled: int  # rows with feedback
    value: float | None  # the metric over them; None without any
    over_time: tuple[Point, ...]

    @property
    def error_rate(self) -> float:
        """Failed requests over all its requests (0 with none)."""
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Agreement:
    """How a candidate's answers compare with live's on the same rows."""

    rows: int
    labels: float | None  # share of rows with the same label; None for regression
    mean_abs_diff: float | None  # of probabilities (classification) or values; None: no rows


def headline(output: Output, truth: np.ndarray, outputs: np.ndarray) -> float | None:
    """The task's headline metric of outputs against the truth (None without rows)."""
    metric, _higher = HEADLINE[output.task]
    if output.task is not Task.REGRESSION:
        keep = truth < outputs.shape[1] if output.task is Task.MULTICLASS else truth <= 1
        truth, outputs = truth[keep].astype(np.int64), outputs[keep]
    if len(truth) == 0:
        return None
    threshold = 0.5 if output.threshold is None else output.threshold
    value = metrics.evaluate_task(output.task, truth, outputs, threshold).get(metric)
    return None if value is None else float(value)


def over_time(output: Output, labelled: Labelled) -> tuple[Point, ...]:
    """The headline metric per time bucket of the requests' times (at most MAX_POINTS)."""
    if len(labelled.at) == 0:
        return ()
    first, last = float(labelled.at.min()), float(labelled.at.max())
    step = next((s for s in STEPS if (last - first) / s < MAX_POINTS), STEPS[-1])
    buckets = ((labelled.at - first) // step).astype(np.int64)
    points = []
    for bucket in np.unique(buckets):
        chosen = buckets == bucket
        points.append(Point(first + float(bucket) * step, int(chosen.sum()),
                            headline(output, labelled.truth[chosen], labelled.outputs[chosen])))
    return tuple(points)


def summarize(output: Output, traffic: list[Traffic], labelled: list[Labelled]
              ) -> list[VersionLive]:
    """Each version's live figures: traffic and latency, and the metric where fed back."""
    metric, _higher = HEADLINE[output.task]
    by_key = {(item.version, item.role): item for item in labelled}
    found = []
    for item in traffic:
        rows = by_key.get((item.version, item.role))
        found.append(VersionLive(
            item.version, item.role, item.requests, item.rows, item.errors,
            _percentile(item.latencies, 50), _percentile(item.latencies, 99), metric,
            0 if rows is None else len(rows.truth),
            None if rows is None else headline(output, rows.truth, rows.outputs),
            () if rows is None else over_time(output, rows)))
    return found


def agreement(output: Output, live: np.ndarray, candidate: np.ndarray) -> Agreement:
    """Label agreement and mean absolute difference between two versions' answers."""
    if len(live) == 0 or live.shape != candidate.shape:
        return Agreement(0, None, None)
    difference = float(np.mean(np.abs(live.astype(np.float64) - candidate)))
    if output.task is Task.REGRESSION:
        return Agreement(len(live), None, difference)
    same = answers.labels_for(output, live) == answers.labels_for(output, candidate)
    return Agreement(len(live), float(np.mean(same)), difference)


def _percentile(values: np.ndarray, q: float) -> float | None:
    """A percentile of the values, None without any."""
    return float(np.percentile(values, q)) if len(values) else None
