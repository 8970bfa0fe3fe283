"""The model a process serves: the registry's active version, reloaded when it changes."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from modelserve.errors import UserError
from modelserve.model.runtime import ModelRuntime
from modelserve.registry import Registry

log = logging.getLogger(__name__)


class NoActiveModel(UserError):
    """Nothing is registered as active, so nothing can be served."""


class ActiveModel:
    """Follow the registry's active link; one readlink per call keeps a swap within a batch.

    A version that cannot be loaded (its files damaged on disk) is not served: the process
    keeps the version it has, or, having none, loads the most recent earlier activation that
    loads, and logs which version failed and why.

    The batch that sees a switch loads the new version before it is answered (a plan:
    milliseconds; a Keras graph: seconds, TensorFlow included), so that no answer comes from
    the old version once the switch is made: `live` after a push means live in every worker.
    """

    def __init__(self, registry_dir: Path):
        self._registry = Registry(registry_dir)
        self._lock = threading.Lock()
        self._runtime: ModelRuntime | None = None
        self._failed: str | None = None  # a version that failed to load; not retried each batch
        self.problem: str | None = None

    def current(self) -> ModelRuntime:
        """Return the runtime of the active version, loading it if the link moved."""
        version = self._registry.active_version()
        runtime = self._runtime
        # No link (removed under us), the same version, or one that failed: keep what we have.
        if runtime is not None and version in (None, runtime.version, self._failed):
            return runtime
        if version is None:
            raise NoActiveModel(
                "no model is active: run `modelserve train --activate`, or "
                "`modelserve model import-legacy model.json model.h5 --activate`"
            )
        with self._lock:
            return self._load(version)

    def _load(self, version: str) -> ModelRuntime:
        """Load a version; on failure keep what is loaded, or load an earlier one, and say why."""
        if self._runtime is not None and self._runtime.version == version:
            return self._runtime
        try:
            # A registry version: its plan.npz was derived by the registry's own checker.
            runtime = ModelRuntime.load(self._registry.get(version).path, trust_cached_plan=True)
        except UserError as error:
            self._failed = version
            self.problem = f"cannot load the active version {version}: {error}"
            if self._runtime is None:
                self._runtime = self._load_fallback(version)
                log.error("%s; serving %s instead, the most recent earlier activation that loads",
                          self.problem, self._runtime.version)
            else:
                log.error("%s; still serving %s", self.problem, self._runtime.version)
            return self._runtime
        log.info("now serving model %s (%s)", version, runtime.kind)
        self._runtime, self._failed, self.problem = runtime, None, None
        return runtime

    def _load_fallback(self, failed: str) -> ModelRuntime:
        """Load the most recent earlier activation that loads, walking back as rollback would."""
        for version in self._registry.fallbacks(failed):
            try:
                return ModelRuntime.load(self._registry.get(version).path,
                                         trust_cached_plan=True)
            except UserError as error:
                log.error("cannot load the earlier version %s either: %s", version, error)
        log.error("%s; no earlier version loads either", self.problem)
        raise NoActiveModel(f"{self.problem}; no earlier version loads either")
