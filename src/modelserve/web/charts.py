"""Small charts drawn on the server: coordinates only, the markup is in the templates.

Binary models get a ROC curve and a probability histogram, multiclass models a confusion
matrix shaded by share of each true class, regression models predicted against actual (with
the y = x line) and a histogram of residuals; /accuracy a step line of the headline metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

WIDTH, HEIGHT, MARGIN = 320, 240, 30
SHADES = 5  # confusion cells are shaded in 0..SHADES-1 (style.css: .heat-0 to .heat-4)
# Metrics bounded by 0 and 1 (higher is better): drawn on 0.5..1 while every value is there.
UNIT_METRICS = frozenset({"accuracy", "roc_auc", "macro_f1"})
NON_NEGATIVE_METRICS = frozenset({"rmse", "mae", "log_loss"})
PAD = 0.1  # share of a data range added on each side, so points do not sit on the frame


@dataclass(frozen=True)
class Bar:
    """One histogram bar in SVG coordinates."""

    x: float
    y: float
    width: float
    height: float
    count: int
    label: int


@dataclass(frozen=True)
class Scale:
    """A range of values drawn along an axis (low at the start, high at the end)."""

    low: float
    high: float

    def fraction(self, value: float) -> float:
        """Where a value lies on the axis, 0..1 (values outside are drawn at the edge)."""
        span = self.high - self.low
        share = (value - self.low) / span if span > 0 else 0.5
        return min(1.0, max(0.0, float(share)))

    @property
    def ticks(self) -> tuple[str, str]:
        """The labels of the axis' two ends."""
        return f"{self.low:.3g}", f"{self.high:.3g}"


ACCURACY_SCALE = Scale(0.5, 1.0)


@dataclass(frozen=True)
class Cell:
    """One cell of a confusion matrix: a count, its share of the true class, its shade."""

    truth: int
    predicted: int
    count: int
    share: float  # of the row (the true class); 0 for a class with no rows
    shade: int  # 0..SHADES-1

    @property
    def correct(self) -> bool:
        """Tell whether this is a cell of the diagonal (truth predicted)."""
        return self.truth == self.predicted


@dataclass(frozen=True)
class Point:
    """One held-out row in the predicted-against-actual plot."""

    x: float
    y: float
    actual: float
    predicted: float


@dataclass(frozen=True)
class Scatter:
    """Predicted against actual on one shared scale, with the y = x line."""

    points: list[Point]
    scale: Scale
    diagonal: tuple[float, float, float, float]  # x1, y1, x2, y2


@dataclass(frozen=True)
class Histogram:
    """Residual bars over a range centred on 0, and where 0 lies."""

    bars: list[Bar]
    scale: Scale
    zero_x: float


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
    return _histogram_bars(counts, bins)


def _histogram_bars(series: Sequence[np.ndarray], bins: int) -> list[Bar]:
    """Bars of per-bin counts, the series side by side within each bin (labelled by index)."""
    tallest = max(int(max(counts.max() for counts in series)), 1)
    slot = (WIDTH - 2 * MARGIN) / bins
    share = slot / len(series)
    bars = []
    for label, counts in enumerate(series):
        for i, count in enumerate(counts.tolist()):
            height = count / tallest * (HEIGHT - 2 * MARGIN)
            x = MARGIN + i * slot + label * share
            bars.append(Bar(round(x, 1), round(HEIGHT - MARGIN - height, 1), round(share - 1, 1),
                            round(height, 1), count, label))
    return bars


def confusion_cells(matrix: Sequence[Sequence[int]]) -> list[list[Cell]]:
    """A k x k confusion matrix (truth by row) as cells shaded by their share of the row."""
    cells = []
    for truth, row in enumerate(matrix):
        total = sum(row)
        shares = [count / total if total else 0.0 for count in row]
        cells.append([Cell(truth, predicted, int(count), share,
                           min(SHADES - 1, int(share * SHADES)))
                      for predicted, (count, share) in enumerate(zip(row, shares, strict=True))])
    return cells


def padded_scale(values: Sequence[float] | np.ndarray, non_negative: bool = False) -> Scale:
    """A scale that holds every value with a margin on each side (a lone value in the middle)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return Scale(0.0, 1.0)
    low, high = float(array.min()), float(array.max())
    span = high - low
    pad = span * PAD if span > 0 else max(abs(high) * PAD, 1e-3)
    low, high = low - pad, high + pad
    return Scale(max(0.0, low) if non_negative else low, high)


def scatter(actual: np.ndarray, predicted: np.ndarray) -> Scatter:
    """Predicted (up) against actual (across), both on the range of either, and y = x."""
    actual = np.asarray(actual, dtype=np.float64).ravel()
    predicted = np.asarray(predicted, dtype=np.float64).ravel()
    both = np.concatenate([actual, predicted])
    # Quantities that are never negative (most targets) keep their axes from going below 0.
    scale = padded_scale(both, non_negative=bool(both.size) and float(both.min()) >= 0)
    points = [Point(_x(scale.fraction(a)), _y(scale.fraction(p)), a, p)
              for a, p in zip(actual.tolist(), predicted.tolist(), strict=True)]
    return Scatter(points, scale, (_x(0.0), _y(0.0), _x(1.0), _y(1.0)))


def residual_bars(actual: np.ndarray, predicted: np.ndarray, bins: int = 21) -> Histogram:
    """Histogram of residuals (actual - predicted) over a range centred on 0.

    An odd number of bins puts 0 in the middle of one, so that exact answers share a bar.
    """
    residuals = (np.asarray(actual, dtype=np.float64).ravel()
                 - np.asarray(predicted, dtype=np.float64).ravel())
    reach = float(np.abs(residuals).max()) if residuals.size else 0.0
    reach = reach * (1 + PAD) if reach > 0 else 1.0
    scale = Scale(-reach, reach)
    counts = np.histogram(residuals, np.linspace(-reach, reach, bins + 1))[0]
    return Histogram(_histogram_bars([counts], bins), scale, _x(0.5))


def metric_scale(metric: str, values: Sequence[float]) -> Scale:
    """The vertical range of a metric's timeline.

    accuracy-like metrics on 0.5..1 as before (0..1 once a value falls below 0.5); any
    other (RMSE, MAE, log loss, R²) on the range of its values.
    """
    if metric in UNIT_METRICS:
        return ACCURACY_SCALE if all(v >= 0.5 for v in values) else Scale(0.0, 1.0)
    return padded_scale(values, non_negative=metric in NON_NEGATIVE_METRICS)


def timeline_polyline(points: list[tuple[float, float]], scale: Scale = ACCURACY_SCALE) -> str:
    """A step line through (time fraction, value) points, the value drawn on the scale."""
    coords: list[str] = []
    for i, (when, value) in enumerate(points):
        y = _y(scale.fraction(value))
        if i:
            coords.append(f"{_x(when)},{coords[-1].split(',')[1]}")
        coords.append(f"{_x(when)},{y}")
    return " ".join(coords)
