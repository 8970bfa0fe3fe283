"""Small SVG charts drawn on the server: coordinates only, the markup is in the templates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WIDTH, HEIGHT, MARGIN = 320, 240, 30


@dataclass(frozen=True)
class Bar:
    """One histogram bar in SVG coordinates."""

    x: float
    y: float
    width: float
    height: float
    count: int
    label: int


def _x(fraction: float) -> float:
    """Map 0..1 to the plot's horizontal extent."""
    return round(MARGIN + fraction * (WIDTH - 2 * MARGIN), 1)


def _y(fraction: float) -> float:
    """Map 0..1 to the plot's vertical extent (up is 1)."""
    return round(HEIGHT - MARGIN - fraction * (HEIGHT - 2 * MARGIN), 1)


def roc_polyline(labels: np.ndarray, probabilities: np.ndarray) -> str:
    """The ROC curve as SVG polyline points, one step per distinct threshold."""
    labels = np.asarray(labels).astype(bool)
    order = np.argsort(-np.asarray(probabilities), kind="mergesort")
    sorted_probs, sorted_labels = np.asarray(probabilities)[order], labels[order]
    # A point only where the threshold changes, so tied scores make one diagonal step.
    last_of_run = np.r_[sorted_probs[1:] != sorted_probs[:-1], True]
    tp = np.cumsum(sorted_labels)[last_of_run]
    fp = np.cumsum(~sorted_labels)[last_of_run]
    tpr = tp / max(labels.sum(), 1)
    fpr = fp / max((~labels).sum(), 1)
    points = [(0.0, 0.0), *zip(fpr.tolist(), tpr.tolist(), strict=True)]
    return " ".join(f"{_x(f)},{_y(t)}" for f, t in points)


def probability_bars(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> list[Bar]:
    """Histogram of predicted probabilities, one bar per bin and true class, side by side."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = [np.histogram(np.asarray(probabilities)[np.asarray(labels) == c], edges)[0]
              for c in (0, 1)]
    tallest = max(int(max(c.max() for c in counts)), 1)
    slot = (WIDTH - 2 * MARGIN) / bins
    bars = []
    for cls, class_counts in enumerate(counts):
        for i, count in enumerate(class_counts.tolist()):
            height = count / tallest * (HEIGHT - 2 * MARGIN)
            x = MARGIN + i * slot + cls * slot / 2
            bars.append(Bar(round(x, 1), round(HEIGHT - MARGIN - height, 1), round(slot / 2 - 1, 1),
                            round(height, 1), count, cls))
    return bars


def timeline_polyline(points: list[tuple[float, float]]) -> str:
    """A step line through (time fraction, accuracy) points; accuracy drawn on 0.5..1."""
    coords: list[str] = []
    for i, (when, value) in enumerate(points):
        y = _y(max(0.0, (value - 0.5) * 2))
        if i:
            coords.append(f"{_x(when)},{coords[-1].split(',')[1]}")
        coords.append(f"{_x(when)},{y}")
    return " ".join(coords)
