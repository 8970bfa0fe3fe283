"""Every version's headline metric on this server's held-out rows, for the pages."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelserve.config import Settings
from modelserve.errors import UserError
from modelserve.model import metrics
from modelserve.model.dataset import DatasetError
from modelserve.model.holdout import HeldOut, held_out
from modelserve.model.runtime import ModelRuntime
from modelserve.model.spec import HEADLINE, ModelSpec, Task
from modelserve.registry import VersionInfo


@dataclass(frozen=True)
class Measured:
    """A version's headline metric measured here, or why it could not be."""

    metric: str  # the spec's metric name: accuracy (classification) or rmse (regression)
    value: float | None
    problem: str = ""


@dataclass(frozen=True)
class HeldRow:
    """One held-out row of /predictions: its line, values, the truth and the model's answer."""

    line: int
    values: tuple[float, ...]
    truth: str
    predicted: str
    score: str  # binary: probability; multiclass: the predicted class's; regression: residual
    right: bool | None  # None: a regression has no right or wrong


def held_rows(spec: ModelSpec, rows: HeldOut, outputs: np.ndarray,
              labels: np.ndarray) -> list[HeldRow]:
    """The rows of /predictions, each answer in the task's own terms."""
    found = []
    for i, (line, values) in enumerate(zip(rows.rows.tolist(), rows.features.tolist(),
                                           strict=True)):
        if spec.task is Task.REGRESSION:
            actual, predicted = float(rows.labels[i]), float(outputs[i, 0])
            found.append(HeldRow(line, tuple(values), f"{actual:.6g}", f"{predicted:.6g}",
                                 f"{actual - predicted:.6g}", None))
            continue
        truth, label = int(rows.labels[i]), int(labels[i])
        if spec.task is Task.BINARY:  # 0/1 as the Pima pages always showed them
            found.append(HeldRow(line, tuple(values), str(truth), str(label),
                                 f"{float(outputs[i, 0]):.4f}", truth == label))
        else:
            classes = spec.output.classes
            found.append(HeldRow(line, tuple(values), classes[truth], classes[label],
                                 f"{float(outputs[i, label]):.4f}", truth == label))
    return found


def rows_to_judge(data_dir: Path, spec: ModelSpec) -> HeldOut:
    """The model's held-out rows of the stored data, refused when that data cannot judge it."""
    rows = held_out(data_dir, spec.document, features=spec.feature_names)
    if rows.task is not spec.task:
        raise DatasetError(f"the stored data is {rows.task.value} data; this model is "
                           f"a {spec.task.value} model")
    # The truth is a class index into the data's classes: they must be the model's, in order.
    if spec.task is Task.MULTICLASS and tuple(rows.classes) != spec.output.classes:
        raise DatasetError(f"the stored data has classes {', '.join(rows.classes)}; "
                           f"the model answers {', '.join(spec.output.classes)}")
    return rows


class AccuracyBook:
    """Each version's headline metric on a model's held-out rows, once per version and data."""

    def __init__(self, settings: Settings, data_dir: Path | None = None):
        self._data_dir = data_dir or settings.data_dir  # the model's stored data
        self._lock = threading.Lock()
        self._known: dict[tuple[str, str], Measured] = {}

    def headline(self, info: VersionInfo) -> Measured:
        """A version's headline metric on its held-out split of the stored data."""
        spec = info.spec
        if spec is None:
            return Measured("", None, "its manifest is damaged")
        metric, _higher_is_better = HEADLINE[spec.task]
        try:
            rows = rows_to_judge(self._data_dir, spec)
        except UserError as error:  # no data stored, or data of other columns or task
            return Measured(metric, None, str(error))
        key = (info.version, rows.data_sha256)
        with self._lock:
            if key not in self._known:
                self._known[key] = self._measure(info, spec, rows, metric)
            return self._known[key]

    @staticmethod
    def _measure(info: VersionInfo, spec: ModelSpec, rows: HeldOut, metric: str) -> Measured:
        """Score the held-out rows with the version itself and compute its headline metric."""
        try:
            outputs = ModelRuntime.load(info.path, trust_cached_plan=True).score(
                rows.features).outputs
        except UserError as error:  # a bundle that no longer loads: say so, not a 500
            return Measured(metric, None, str(error))
        values = metrics.evaluate_task(spec.task, rows.labels, outputs, spec.threshold)
        return Measured(metric, values.get(metric))
