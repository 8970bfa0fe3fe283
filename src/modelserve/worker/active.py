"""The models a process serves: each model's active version, reloaded when it changes."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path

from modelserve.errors import UserError
from modelserve.model.runtime import ModelRuntime
from modelserve.registry import Registry
from modelserve.registry.catalog import Catalog

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

    def __init__(self, registry_dir: Path, name: str = ""):
        self._registry = Registry(registry_dir)
        self._name = f"model {name}" if name else "model"
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
        log.info("now serving %s %s (%s)", self._name, version, runtime.kind)
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


class ServedModels:
    """The ActiveModel of every model this process is asked for, at most `capacity` loaded.

    A model is loaded on its first batch and dropped, least recently used first, when one
    more would exceed the capacity (its memory goes with its last reference). Each model
    follows its own active link, as ActiveModel does.

    A batch may also name a version other than the active one: a rollout's candidate (in
    shadow or as a canary). Such pinned versions are kept apart, as many as `capacity`, the
    least recently used dropped first: a candidate never takes the place of a live model.
    """

    def __init__(self, catalog: Catalog, capacity: int):
        self._catalog = catalog
        self._capacity = max(capacity, 1)
        self._loaded: OrderedDict[str, ActiveModel] = OrderedDict()
        self._pinned: OrderedDict[tuple[str, str], ModelRuntime] = OrderedDict()
        self._lock = threading.Lock()

    def current(self, name: str, version: str = "") -> ModelRuntime:
        """Return the runtime of a model's active version (or of the version named), loading
        it if need be."""
        name = name or self._catalog.default_name
        active = self._model(name).current()
        if not version or version == active.version:
            return active
        return self._pinned_version(name, version)

    def _pinned_version(self, name: str, version: str) -> ModelRuntime:
        """The runtime of a stored version that is not the active one (loaded once)."""
        key = (name, version)
        with self._lock:
            runtime = self._pinned.get(key)
            if runtime is not None:
                self._pinned.move_to_end(key)
                return runtime
        stored = self._catalog.registry(name).get(version)  # an unknown one: RegistryError
        if stored.version != version:
            raise NoActiveModel(f"model {name} has no version {version} (only a longer one)")
        runtime = ModelRuntime.load(stored.path, trust_cached_plan=True)
        log.info("now also serving model %s %s (%s), a rollout's candidate", name, version,
                 runtime.kind)
        with self._lock:
            self._pinned[key] = runtime
            self._pinned.move_to_end(key)
            while len(self._pinned) > self._capacity:
                self._pinned.popitem(last=False)
        return runtime

    def loaded(self) -> list[str]:
        """The models held, least recently used first."""
        with self._lock:
            return list(self._loaded)

    def _model(self, name: str) -> ActiveModel:
        """The ActiveModel of a name, made most recently used; the oldest beyond capacity goes."""
        with self._lock:
            model = self._loaded.get(name)
            if model is not None:
                self._loaded.move_to_end(name)
                return model
        if not self._catalog.exists(name):  # outside the lock: it reads the disk
            raise NoActiveModel(str(self._catalog.unknown(name)))
        with self._lock:
            model = self._loaded.setdefault(name, ActiveModel(self._catalog.path_of(name), name))
            self._loaded.move_to_end(name)
            while len(self._loaded) > self._capacity:
                dropped, _ = self._loaded.popitem(last=False)
                log.info("dropped model %s: %d models are loaded at most", dropped,
                         self._capacity)
        return model
