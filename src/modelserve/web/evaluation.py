"""Every version's accuracy on this server's held-out rows, for the pages."""

from __future__ import annotations

import threading

from modelserve.config import Settings
from modelserve.errors import UserError
from modelserve.model import metrics
from modelserve.model.holdout import held_out
from modelserve.model.runtime import ModelRuntime
from modelserve.registry import VersionInfo


class AccuracyBook:
    """Each version's accuracy on this server's held-out rows, computed once per version."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._lock = threading.Lock()
        self._known: dict[tuple[str, str], float] = {}

    def accuracy(self, info: VersionInfo) -> float | None:
        """Accuracy of a version on its held-out split of the stored data (None: no data)."""
        try:
            rows = held_out(self._settings.data_dir, info.manifest)
        except UserError:  # no dataset stored yet: nothing to measure on
            return None
        key = (info.version, rows.data_sha256)
        with self._lock:
            if key not in self._known:
                scores = ModelRuntime.load(info.path, trust_cached_plan=True).score(rows.features)
                self._known[key] = metrics.accuracy(rows.labels, scores.labels)
            return self._known[key]
