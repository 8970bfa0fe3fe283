"""The held-out rows a model is judged on, recomputed on the stored dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelserve.model.dataset import load_dataset, stored_dataset, stratified_split
from modelserve.model.legacy import DEFAULT_SEED, DEFAULT_TEST_FRACTION


@dataclass(frozen=True)
class HeldOut:
    """Held-out rows of the stored dataset, as split for one model."""

    features: np.ndarray
    labels: np.ndarray
    rows: np.ndarray  # 1-based line numbers in the data file
    data_sha256: str
    note: str


def held_out(data_dir: Path, manifest: dict) -> HeldOut:
    """Recompute a model's held-out split on the stored dataset (the default split if none)."""
    dataset = load_dataset(stored_dataset(data_dir))
    split = manifest.get("data", {}).get("split", {})
    seed = split.get("seed", DEFAULT_SEED)
    fraction = split.get("test_fraction", DEFAULT_TEST_FRACTION)
    _, test_idx = stratified_split(dataset.labels, fraction, seed)
    note = ""
    if manifest.get("data", {}).get("sha256") != dataset.sha256:
        note = "this model was evaluated on other data; these rows come from the stored dataset"
    return HeldOut(dataset.features[test_idx], dataset.labels[test_idx], test_idx + 1,
                   dataset.sha256, note)
