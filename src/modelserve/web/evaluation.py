"""The held-out rows a model is judged on, and every version's accuracy on them."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from modelserve.config import Settings
from modelserve.errors import UserError
from modelserve.model import metrics
from modelserve.model.dataset import load_dataset, stored_dataset, stratified_split
from modelserve.model.legacy import DEFAULT_SEED, DEFAULT_TEST_FRACTION
from modelserve.model.runtime import ModelRuntime
from modelserve.registry import VersionInfo


@dataclass(frozen=True)
class HeldOut:
    """Held-out rows of the stored dataset, as split for one model."""

    features: np.ndarray
    labels: np.ndarray
    rows: np.ndarray  # 1-based line numbers in the data file
    data_sha256: str
    note: str


def held_out(settings: Settings, manifest: dict) -> HeldOut:
    """Recompute the model's held-out split on the stored dataset."""
    dataset = load_dataset(stored_dataset(settings.data_dir))
    split = manifest.get("data", {}).get("split", {})
    seed = split.get("seed", DEFAULT_SEED)
    fraction = split.get("test_fraction", DEFAULT_TEST_FRACTION)
    _, test_idx = stratified_split(dataset.labels, fraction, seed)
    note = ""
    if manifest.get("data", {}).get("sha256") != dataset.sha256:
        note = "this model was evaluated on other data; these rows come from the stored dataset"
    return HeldOut(dataset.features[test_idx], dataset.labels[test_idx], test_idx + 1,
                   dataset.sha256, note)


class AccuracyBook:
    """Each version's accuracy on this server's held-out rows, computed once per version."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._lock = threading.Lock()
        self._known: dict[tuple[str, str], float] = {}

    def accuracy(self, info: VersionInfo) -> float | None:
        """Accuracy of a version on its held-out split of the stored data (None: no data)."""
        try:
            rows = held_out(self._settings, info.manifest)
        except UserError:  # no dataset stored yet: nothing to measure on
            return None
        key = (info.version, rows.data_sha256)
        with self._lock:
            if key not in self._known:
                scores = ModelRuntime.load(info.path).score(rows.features)
                self._known[key] = metrics.accuracy(rows.labels, scores.labels)
            return self._known[key]
