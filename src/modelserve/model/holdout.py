"""The held-out rows a model is judged on, recomputed on the stored dataset."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelserve.model.dataset import DatasetError, load_table
from modelserve.model.legacy import DEFAULT_SEED, DEFAULT_TEST_FRACTION
from modelserve.model.spec import Task
from modelserve.model.table import Table, split_table


@dataclass(frozen=True)
class HeldOut:
    """Held-out rows of the stored dataset, as split for one model."""

    features: np.ndarray
    labels: np.ndarray  # the truth: class indices (classification) or values (regression)
    rows: np.ndarray  # 1-based line numbers in the data file
    data_sha256: str
    note: str
    task: Task = Task.BINARY
    classes: tuple[str, ...] = ("0", "1")


def held_out(data_dir: Path, manifest: Mapping[str, Any],
             features: list[str] | None = None) -> HeldOut:
    """Recompute a model's held-out split on the stored dataset (the default split if none).

    `features`, when given, are the columns the model takes: stored data of other columns
    cannot judge it, and that is refused in one line.
    """
    table = load_table(data_dir)
    if features is not None and list(table.feature_names) != list(features):
        raise DatasetError(f"the stored data has columns {', '.join(table.feature_names)}; "
                           f"the model takes {', '.join(features)}")
    data = manifest.get("data", {}) if isinstance(manifest.get("data"), dict) else {}
    split = data.get("split", {}) if isinstance(data.get("split"), dict) else {}
    seed = split.get("seed", DEFAULT_SEED)
    fraction = split.get("test_fraction", DEFAULT_TEST_FRACTION)
    _, test_idx = split_table(table, fraction, seed)
    return rows_of(table, test_idx, note=_note(data.get("sha256"), table))


def rows_of(table: Table, test_idx: np.ndarray, note: str = "") -> HeldOut:
    """The given rows of a table, as held-out rows."""
    first_line = 2 if table.header else 1
    return HeldOut(table.features[test_idx], table.target[test_idx], test_idx + first_line,
                   table.sha256, note, table.task, table.classes)


def _note(trained_on: object, table: Table) -> str:
    """Say when the stored data is not the data the model was evaluated on."""
    if trained_on == table.sha256:
        return ""
    return "this model was evaluated on other data; these rows come from the stored dataset"
