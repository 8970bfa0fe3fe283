"""The pages' charts as coordinates: confusion cells, scatter points, residual bars, scales."""

from __future__ import annotations

import numpy as np
import pytest

from modelserve.web import charts
from modelserve.web.charts import HEIGHT, MARGIN, WIDTH, Scale

LEFT, RIGHT, TOP, BOTTOM = MARGIN, WIDTH - MARGIN, MARGIN, HEIGHT - MARGIN


def test_confusion_cells_keep_counts_truth_by_row_and_shade_by_share_of_the_row():
    """Each cell holds its count; the shade follows the share of the true class."""
    matrix = [[8, 2, 0], [1, 1, 0], [0, 0, 0]]
    cells = charts.confusion_cells(matrix)
    assert [[cell.count for cell in row] for row in cells] == matrix
    assert all(cell.truth == i and cell.predicted == j
               for i, row in enumerate(cells) for j, cell in enumerate(row))
    assert [cell.correct for cell in cells[1]] == [False, True, False]
    assert [cell.share for cell in cells[0]] == [0.8, 0.2, 0.0]
    assert [cell.shade for cell in cells[0]] == [4, 1, 0]
    assert [cell.shade for cell in cells[1]] == [2, 2, 0]  # half of the row each
    assert all(cell.share == 0 and cell.shade == 0 for cell in cells[2])  # a class not held out
    assert cells[0][0].shade == charts.SHADES - 1
    full = charts.confusion_cells([[5, 0], [0, 5]])
    assert full[0][0].shade == charts.SHADES - 1  # a share of 1 is the darkest, not beyond


def on_segment(x: float, y: float, line: tuple[float, float, float, float]) -> bool:
    """Tell whether (x, y) lies on the segment (within SVG rounding)."""
    x1, y1, x2, y2 = line
    cross = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)
    return abs(cross) / np.hypot(x2 - x1, y2 - y1) < 0.2 and min(x1, x2) <= x <= max(x1, x2)


def test_a_perfect_regression_lies_on_the_identity_line():
    """Predicted equal to actual: every point is on y = x, drawn corner to corner."""
    actual = np.array([25.0, 151.0, 75.0, 310.0, 141.0])
    plot = charts.scatter(actual, actual)
    assert plot.diagonal == (LEFT, BOTTOM, RIGHT, TOP)
    assert len(plot.points) == len(actual)
    assert all(on_segment(p.x, p.y, plot.diagonal) for p in plot.points)
    assert [p.actual for p in plot.points] == actual.tolist()


def test_scatter_puts_actual_across_and_predicted_up_on_one_shared_scale():
    """A value predicted too high lies above the line; every point is inside the frame."""
    actual = np.array([0.0, 10.0, 20.0])
    predicted = np.array([5.0, 10.0, 40.0])
    plot = charts.scatter(actual, predicted)
    assert plot.scale.low == 0.0 and plot.scale.high > 40.0  # both series; never below 0 here
    assert all(LEFT <= p.x <= RIGHT and TOP <= p.y <= BOTTOM for p in plot.points)
    low, exact, high = plot.points
    assert on_segment(exact.x, exact.y, plot.diagonal)
    assert high.y < on_line_y(plot, high.x)  # SVG y grows downwards: above the line
    assert low.x < exact.x < high.x and low.y > exact.y > high.y


def test_scatter_of_negative_values_extends_below_zero():
    """Values below 0 (a centred target) get an axis that holds them, with a margin."""
    plot = charts.scatter(np.array([-2.0, 1.0]), np.array([-1.0, 2.0]))
    assert plot.scale.low < -2.0 and plot.scale.high > 2.0


def on_line_y(plot: charts.Scatter, x: float) -> float:
    """The y of the identity line at x."""
    x1, y1, x2, y2 = plot.diagonal
    return y1 + (y2 - y1) * (x - x1) / (x2 - x1)


def test_scatter_of_one_value_draws_it_in_the_middle():
    """A single row (or all rows equal) has no range: a padded one, not a division by zero."""
    plot = charts.scatter(np.array([3.0]), np.array([3.0]))
    assert plot.points[0].x == pytest.approx((LEFT + RIGHT) / 2, abs=0.1)
    assert plot.points[0].y == pytest.approx((TOP + BOTTOM) / 2, abs=0.1)


def test_residual_bars_count_every_row_around_zero():
    """Residuals (actual - predicted) on a range centred on 0; the bars count every row."""
    actual = np.array([10.0, 12.0, 9.0, 30.0, 10.0])
    predicted = np.array([11.0, 12.0, 9.5, 10.0, 10.0])  # residuals -1, 0, -0.5, 20, 0
    histogram = charts.residual_bars(actual, predicted, bins=11)
    assert len(histogram.bars) == 11
    assert sum(bar.count for bar in histogram.bars) == len(actual)
    assert histogram.scale.low == -histogram.scale.high and histogram.scale.high > 20
    assert histogram.zero_x == pytest.approx((LEFT + RIGHT) / 2)
    tallest = max(histogram.bars, key=lambda bar: bar.count)
    assert tallest.count == 4 and tallest.x < histogram.zero_x <= tallest.x + tallest.width + 1
    assert tallest.y == TOP and tallest.height == BOTTOM - TOP
    outlier = [bar for bar in histogram.bars if bar.count == 1]
    assert len(outlier) == 1 and outlier[0].x > histogram.zero_x
    assert all(bar.y + bar.height == pytest.approx(BOTTOM) for bar in histogram.bars)


def test_residual_bars_of_a_perfect_model():
    """No residual at all: every row in the bar at 0."""
    histogram = charts.residual_bars(np.ones(4), np.ones(4), bins=5)
    assert [bar.count for bar in histogram.bars] == [0, 0, 4, 0, 0]
    assert histogram.scale == Scale(-1.0, 1.0)


@pytest.mark.parametrize(("metric", "values", "low", "high"), [
    ("accuracy", [0.71, 0.78], 0.5, 1.0),  # as the page always drew it
    ("accuracy", [0.42, 0.78], 0.0, 1.0),  # one below 0.5 would fall off the chart
    ("macro_f1", [0.9], 0.5, 1.0),
    ("rmse", [50.0, 60.0], 49.0, 61.0),  # the values' range, a tenth of it either side
    ("rmse", [0.5, 10.5], 0.0, 11.5),  # never below 0
    ("r2", [-0.5, 0.5], -0.6, 0.6),
])
def test_metric_scale_fits_the_metric(metric, values, low, high):
    """Accuracy-like metrics on 0.5..1 (0..1 if needed); RMSE and the rest on their values."""
    scale = charts.metric_scale(metric, values)
    assert (scale.low, scale.high) == pytest.approx((low, high))
    assert all(0 <= scale.fraction(v) <= 1 for v in values)


def test_metric_scale_of_one_rmse_value_holds_it_inside():
    """A lone RMSE gets a range around it."""
    scale = charts.metric_scale("rmse", [54.2])
    assert scale.low < 54.2 < scale.high
    assert scale.ticks == (f"{scale.low:.3g}", f"{scale.high:.3g}")


def test_scale_fraction_clamps_and_survives_an_empty_range():
    """Values outside are drawn at the edge; a range of zero width puts values in the middle."""
    scale = Scale(10.0, 20.0)
    assert [scale.fraction(v) for v in (5, 10, 15, 20, 25)] == [0, 0, 0.5, 1, 1]
    assert Scale(3.0, 3.0).fraction(3.0) == 0.5


def test_timeline_of_accuracy_is_drawn_as_before():
    """The accuracy step line: 0.5 at the bottom, 1 at the top, a step at each change."""
    line = charts.timeline_polyline([(0.0, 0.75), (0.5, 1.0), (1.0, 1.0)])
    assert line.split() == [f"{LEFT}.0,{(TOP + BOTTOM) / 2}", f"{(LEFT + RIGHT) / 2},"
                            f"{(TOP + BOTTOM) / 2}", f"{(LEFT + RIGHT) / 2},{TOP}.0",
                            f"{RIGHT}.0,{TOP}.0", f"{RIGHT}.0,{TOP}.0"]


def test_timeline_of_rmse_uses_its_own_scale():
    """RMSE 60 then 50 on the values' range: the first point high, the second low, in frame."""
    scale = charts.metric_scale("rmse", [60.0, 50.0])
    points = [pair.split(",") for pair in
              charts.timeline_polyline([(0.0, 60.0), (1.0, 50.0)], scale).split()]
    ys = [float(y) for _, y in points]
    assert ys[0] < ys[-1]  # SVG y grows downwards: 60 is drawn above 50
    assert all(TOP < y < BOTTOM for y in ys)


def test_roc_and_probability_bars_keep_their_shape():
    """Binary charts as before: the ROC starts bottom left, a bar per bin and class."""
    labels = np.array([0, 0, 1, 1])
    probabilities = np.array([0.1, 0.4, 0.35, 0.8])
    assert charts.roc_polyline(labels, probabilities).split()[0] == f"{LEFT}.0,{BOTTOM}.0"
    bars = charts.probability_bars(labels, probabilities)
    assert len(bars) == 20 and sum(bar.count for bar in bars) == 4
