"""What the web app needs from the rest of the system: the active contract and predictions."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

from modelserve.config import Settings
from modelserve.model.spec import ModelSpec
from modelserve.registry import Registry
from modelserve.web import metrics
from modelserve.web.evaluation import AccuracyBook
from modelserve.web.predictors import InlinePredictor, Prediction, QueuePredictor, Unavailable


class Service:
    """The registry (read-only) and a predictor, shared by every request of a process."""

    def __init__(self, settings: Settings, inline: bool = False):
        self.settings = settings
        self.registry = Registry(settings.registry_dir)
        self._inline = inline
        self._predictor: InlinePredictor | QueuePredictor | None = None
        self._predictor_lock = threading.Lock()
        self.accuracy_book = AccuracyBook(settings)  # per version, computed once per process
        self._spec_cache: tuple[str | None, ModelSpec | None] = (None, None)
        self._problem_cache: tuple[object, str | None] = (None, None)

    @property
    def predictor(self) -> InlinePredictor | QueuePredictor:
        """Create the predictor on first use, i.e. in the serving process, after any fork."""
        if self._predictor is None:
            with self._predictor_lock:  # concurrent first requests must share one predictor
                if self._predictor is None:
                    kind = InlinePredictor if self._inline else QueuePredictor
                    self._predictor = kind(self.settings)
        return self._predictor

    def active_spec(self) -> ModelSpec | None:
        """The active version's spec, re-read only when the version changes."""
        version = self.registry.active_version()
        cached_version, spec = self._spec_cache
        if version != cached_version:
            spec = self._usable_spec(version) if version else None
            self._spec_cache = (version, spec)
        return spec

    def _usable_spec(self, version: str) -> ModelSpec | None:
        """The version's spec; if its manifest is damaged, that of the version workers fall
        back to (active_problem() says so on the pages and in readiness)."""
        for candidate in (version, *self.registry.fallbacks(version)):
            spec = self.registry.get(candidate).spec
            if spec is not None:
                return spec
        return None

    def features(self) -> list[str]:
        """The active model's input features, in order."""
        spec = self.active_spec()
        if spec is None:
            raise Unavailable(
                "no model is active yet; activate one with `modelserve models activate`")
        return spec.feature_names

    def predict(self, rows: np.ndarray) -> Prediction:
        """Score rows within the request deadline."""
        prediction = self.predictor.predict(rows, self.settings.request_timeout)
        metrics.ROWS_SCORED.labels(version=prediction.version).inc(len(rows))
        return prediction

    def status(self) -> dict:
        """Broker, workers, queue depth and the active version, for pages and readiness."""
        status = dict(self.predictor.status())
        status["active_version"] = self.registry.active_version()
        status["ready"] = bool(
            status["active_version"] and status["workers"] and status["broker"] != "unreachable"
        )
        status["problem"] = self.active_problem()
        return status

    def active_problem(self) -> str | None:
        """Say when the active version's files are damaged, and what workers serve instead."""
        path = self.registry.active_dir()
        if path is None:
            return None
        # Hash the files again only when they change: readiness is polled often.
        key = (path.name, _file_stamps(path))
        if self._problem_cache[0] != key:
            self._problem_cache = (key, self._describe_damage(path.name))
        return self._problem_cache[1]

    def _describe_damage(self, version: str) -> str | None:
        """One line on a damaged version and the earlier one workers fall back to (if any)."""
        damage = self.registry.damage(version)
        if damage is None:
            return None
        instead = next((earlier for earlier in self.registry.fallbacks(version)
                        if self.registry.damage(earlier) is None), None)
        serving = (f"workers that have not loaded it serve {instead}, the most recent earlier "
                   "activation that is intact" if instead else "no earlier version is intact")
        return f"the active version {version} is damaged: {damage}; {serving}"

    def predict_many(self, rows: np.ndarray, chunk_rows: int) -> Prediction:
        """Score a large table in request-sized chunks (CSV uploads, held-out rows)."""
        parts = [self.predict(rows[i : i + chunk_rows]) for i in range(0, len(rows), chunk_rows)]
        versions = {part.version for part in parts}
        if len(versions) > 1:
            raise Unavailable("the model changed while the file was scored; submit it again")
        return Prediction(
            np.concatenate([p.outputs for p in parts]),
            np.concatenate([p.labels for p in parts]),
            parts[0].version,
            ",".join(sorted({p.worker for p in parts})),
        )

    def close(self) -> None:
        """Stop the predictor's threads."""
        if self._predictor is not None:
            self._predictor.close()


def _file_stamps(directory: Path) -> tuple:
    """Name, size and modification time of each file of a directory (what a rewrite changes)."""
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        return tuple((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries)
    except OSError:  # switched away and gone meanwhile: check again next time
        return (time.monotonic(),)


def elapsed_since(started: float) -> float:
    """Seconds since a perf_counter() reading."""
    return time.perf_counter() - started
