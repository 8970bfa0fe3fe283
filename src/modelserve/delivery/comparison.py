"""How the gate judges a candidate beside the live model, for every task: pure, no I/O.

The task's headline metric decides (spec.HEADLINE): accuracy, higher is better, for a
classifier; RMSE, lower is better, for a regression model. Accuracy is a share, on the same
scale whatever the data: its tolerance is absolute (0.02: two points below the live model).
RMSE is in the target's own units (dollars, a disease progression score, millimetres): one
absolute number would be lax on one dataset and strict on the next, so for RMSE the same
tolerance is read as a share of the live model's RMSE (0.02: at most 2% above it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelserve.model.spec import (
    FORMAT_V2,
    HEADLINE,
    METRIC_LABELS,
    TASK_METRICS,
    Metrics,
    ModelSpec,
    Task,
)

# Metrics in the target's units: their tolerance is a share of the live model's figure.
RELATIVE_TOLERANCE = frozenset({"rmse", "mae"})
# Whether more is better, by metric name (the headline metric of some task).
HEADLINE_HIGHER = {name: higher for name, higher in HEADLINE.values()}
SHOWN_CLASSES = 4
SIGNIFICANT_DIGITS = 4


@dataclass(frozen=True)
class Comparison:
    """A candidate's headline metric beside the live model's, on the same evaluation rows."""

    metric: str  # a key of METRIC_LABELS: "accuracy", "rmse"
    value: float
    live_value: float | None  # None when nothing is live
    rows: int
    refusal: str = ""  # why it is worse than the live model beyond the tolerance; "" if not

    def summary(self) -> str:
        """E.g. `RMSE 55.12 on this server's 88 evaluation rows (live model: 56.90)`."""
        beside = "" if self.live_value is None else (
            f" (live model: {figure(self.metric, self.live_value)})")
        return (f"{METRIC_LABELS[self.metric]} {figure(self.metric, self.value)} on this "
                f"server's {self.rows} evaluation rows{beside}")


def task_metrics(task: Task, evaluated: Mapping[str, Any]) -> Metrics:
    """metrics.evaluate_task's dict as Metrics: the task's figures (None where undefined)."""
    values = {name: _number(evaluated.get(name)) for name in TASK_METRICS[task]}
    return Metrics(task, int(evaluated.get("rows", 0)), values)


def compare(candidate: Metrics, live: Metrics | None, tolerance: float) -> Comparison:
    """Put the candidate beside the live model; say why when it is worse beyond the tolerance."""
    metric, value = candidate.headline
    if value is None:  # accuracy and RMSE are defined on any rows; guard all the same
        raise ValueError(f"the candidate has no {metric}")
    live_value = None if live is None else live.headline[1]
    judged = Comparison(metric, value, live_value, candidate.rows)
    shortfall = None if live is None else candidate.shortfall(live)
    if shortfall is None or live_value is None or not shortfall > allowed(
            metric, live_value, tolerance):
        return judged
    return Comparison(metric, value, live_value, candidate.rows,
                      _refusal(judged, live_value, shortfall, tolerance))


def allowed(metric: str, live_value: float, tolerance: float) -> float:
    """How much worse than the live model a candidate may be, in the metric's units."""
    return tolerance * abs(live_value) if metric in RELATIVE_TOLERANCE else tolerance


def _refusal(judged: Comparison, live_value: float, shortfall: float, tolerance: float) -> str:
    """One line: the candidate's figure, how far it is from the live one, the tolerance."""
    metric = judged.metric
    side = "below" if HEADLINE_HIGHER[metric] else "above"
    if metric in RELATIVE_TOLERANCE:
        amount = (f"{shortfall / abs(live_value):.1%}" if live_value
                  else figure(metric, shortfall))
        rule = f"tolerance: {tolerance * 100:g}% of the live model's {METRIC_LABELS[metric]}"
    else:
        amount, rule = figure(metric, shortfall), f"tolerance {tolerance}"
    return (f"{METRIC_LABELS[metric]} {figure(metric, judged.value)} on this server's "
            f"{judged.rows} evaluation rows is {amount} {side} the live model's "
            f"{figure(metric, live_value)} ({rule})")



def figure(metric: str, value: float) -> str:
    """A metric's value as shown: shares with 4 decimals, quantities with 4 significant digits."""
    if metric not in RELATIVE_TOLERANCE or not math.isfinite(value) or value == 0:
        return f"{value:.4f}"
    # RMSE is in the target's units: 55.12, 0.003142 and 12346 all keep their meaning.
    decimals = max(0, SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def contract_refusal(candidate: ModelSpec, live: ModelSpec, shown: str = "the model") -> str:
    """Why a model cannot replace the live one (another task, input or classes); "" if it can."""
    if candidate.task is not live.task:
        return (f"refused: {shown} is {describe(candidate)}; production's live model is "
                f"{describe(live)}, and a model of another task cannot replace it")
    if candidate.feature_names != live.feature_names:
        return (f"refused: {shown} takes {candidate.feature_names}; production's input "
                f"contract is {live.feature_names}")
    theirs, ours = named_classes(candidate), named_classes(live)
    if theirs is not None and ours is not None and theirs != ours:
        return (f"refused: {shown} answers with classes {_listed(theirs)}; production's live "
                f"model with {_listed(ours)}")
    return ""


def data_refusal(spec: ModelSpec, task: Task, classes: Sequence[str]) -> str:
    """Why the stored data (of this task and classes) cannot judge a model; "" if it can."""
    if spec.task is not task:
        data = f"a {task.value} label" + (f" (classes {_listed(classes)})" if classes else "")
        return (f"refused: the model is {describe(spec)}, but this server's stored data has "
                f"{data}: it cannot judge a model of another task")
    theirs = named_classes(spec)
    # A class is an index into the outputs: other names (or another order) would misjudge.
    if theirs is not None and theirs != tuple(classes):
        return (f"refused: the model answers with classes {_listed(theirs)}; this server's "
                f"stored data has classes {_listed(classes)}")
    return ""


def named_classes(spec: ModelSpec) -> tuple[str, ...] | None:
    """The classes a model's output indices stand for; None where names are only shown.

    Format 1 (the Pima bundles) names its two answers for display ("no diabetes"), the
    label being 0 or 1 whatever the names: those names do not identify the data's classes.
    """
    if spec.task is Task.REGRESSION:
        return ()
    return tuple(spec.output.classes) if spec.format == FORMAT_V2 else None


def describe(spec: ModelSpec) -> str:
    """A model's task in words, e.g. `a multiclass model of species (3 classes: a, b, c)`."""
    output = spec.output
    if spec.task is Task.REGRESSION:
        return f"a regression model of {output.name}"
    return (f"a {spec.task.value} model of {output.name} ({len(output.classes)} classes: "
            f"{_listed(output.classes)})")


def _listed(classes: Sequence[str]) -> str:
    """Class names for a one-line message, cut after a few."""
    shown = ", ".join(classes[:SHOWN_CLASSES])
    return shown + (f", ... ({len(classes)} in all)" if len(classes) > SHOWN_CLASSES else "")


def _number(value: Any) -> float | None:
    """A figure as a float; None for an undefined one (JSON null, NaN)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
