"""Metrics on the pages: numbers formatted, undefined ones (null, NaN) a dash, never a 500."""

from __future__ import annotations

import math

import pytest

from modelserve.config import load_settings
from modelserve.model.spec import METRIC_LABELS, Metrics, Task
from modelserve.web import create_app, format_metric


@pytest.mark.parametrize(("value", "shown"), [
    (0.78125, "0.7812"), (1, "1.0000"), (None, "–"), (math.nan, "–"), (math.inf, "–"),
    ("high", "–"), (True, "–"),
])
def test_format_metric(value, shown):
    """Finite numbers with 4 decimals; anything else a dash."""
    assert format_metric(value) == shown


def test_metrics_table_with_an_undefined_roc_auc(tmp_path):
    """A model evaluated on one class only has roc_auc null: the table shows a dash."""
    app = create_app(load_settings({"MODELSERVE_HOME": str(tmp_path)}), inline=True)
    metrics = Metrics(Task.BINARY, 4, {"accuracy": 0.75, "roc_auc": None, "log_loss": 0.5})
    with app.test_request_context("/"):
        html = app.jinja_env.get_template("metrics.html").render(metrics=metrics,
                                                                 labels=METRIC_LABELS)
    assert '<td id="metric-roc_auc">–</td>' in html and "0.7500" in html
