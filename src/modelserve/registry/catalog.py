"""Many models in one registry: each name is a Registry of its own, with its own versions.

Layout under the registry root (Settings.registry_dir):

    versions/, active, history.jsonl   the home's default model (MODELSERVE_MODEL_NAME,
                                       "diabetes" unless set): a single-model home written
                                       before names existed is this model, as it is
    models/<name>/                     every other model: the same layout, its own lock

Nothing is moved or rewritten to take an old home over: its files already are the default
model's. Each model keeps every guarantee of Registry on its own (atomic activation,
crash-safe adds, history); no operation spans two models, so no lock does either.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from modelserve.config import Settings
from modelserve.fsutil import fsync_dir
from modelserve.registry.store import (
    ACTIVE_LINK,
    HISTORY_FILE,
    LOCK_FILE,
    Checker,
    Registry,
    RegistryError,
)

MODELS_DIR = "models"
# Lower case, digits, - and _: safe in a URL path, a queue name, a folder and a label value.
NAME_PATTERN = r"[a-z0-9][a-z0-9_-]{0,47}"
_NAME_RE = re.compile(NAME_PATTERN)


class UnknownModel(RegistryError):
    """A model name no model has; the message names the models there are."""


def check_name(name: str) -> str:
    """Return a model name as given if it is one, else refuse it in one line."""
    if not _NAME_RE.fullmatch(name):
        raise RegistryError(
            f"{name!r} is not a model name: use 1-48 lower-case letters, digits, - or _, "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class Catalog:
    """The registries of every model under one root, found by name."""

    root: Path
    default_name: str = "diabetes"
    checker: Checker | None = None

    @classmethod
    def of(cls, settings: Settings, checker: Checker | None = None) -> Catalog:
        """The catalog of a home (its registry_dir, its default model's name)."""
        return cls(settings.registry_dir, check_name(settings.model_name), checker)

    def path_of(self, name: str) -> Path:
        """Where a model's registry lives (whether or not it exists yet)."""
        check_name(name)
        if name == self.default_name:
            return Path(self.root)
        return Path(self.root) / MODELS_DIR / name

    def names(self) -> list[str]:
        """Every model with a registry here, sorted."""
        found = {name for name in self._stored_names() if name != self.default_name}
        if _is_registry(Path(self.root)):
            found.add(self.default_name)
        return sorted(found)

    def exists(self, name: str) -> bool:
        """Tell whether a model of this name has a registry here."""
        return _NAME_RE.fullmatch(name) is not None and _is_registry(self.path_of(name))

    def registry(self, name: str) -> Registry:
        """The registry of an existing model; an unknown name is refused naming the others."""
        if not self.exists(name):
            raise self.unknown(name)
        return self._open(name)

    def unknown(self, name: str) -> UnknownModel:
        """The refusal for a name that is not a model here, naming the ones that are."""
        there = ", ".join(self.names()) or "none yet"
        return UnknownModel(f"no model named {name!r}; the models here: {there}")

    def registry_for_new(self, name: str) -> Registry:
        """The registry of a model, created on its first add if it does not exist yet."""
        return self._open(name)

    def registries(self) -> Iterator[tuple[str, Registry]]:
        """Every model's name and registry, sorted by name."""
        for name in self.names():
            yield name, self._open(name)

    def served(self) -> dict[str, str]:
        """The active version of every model that has one (a retired model has none)."""
        active = {name: registry.active_version() for name, registry in self.registries()}
        return {name: version for name, version in active.items() if version}

    def resolve_default(self) -> str | None:
        """The model /api/v1/predict and the plain pages serve: the default name if it is
        served, else the only served model, else none."""
        served = self.served()
        if self.default_name in served:
            return self.default_name
        return next(iter(served)) if len(served) == 1 else None

    def remove(self, name: str) -> None:
        """Delete a retired model and all its versions (the default model is only retired)."""
        registry = self.registry(name)
        if name == self.default_name:
            raise RegistryError(f"{name} is the default model (MODELSERVE_MODEL_NAME): retire "
                                "it; its files are the home's registry itself")
        gone = Path(self.root) / MODELS_DIR / f".removed-{secrets.token_hex(8)}"
        fd = os.open(registry.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # no activation may slip in between check and rename
            if registry.active_version() is not None:
                raise RegistryError(f"{name} is served: retire it first (`modelserve models "
                                    f"retire {name}`)")
            # One rename takes it out of every listing at once; the deletion can then be slow.
            os.rename(registry.root, gone)
            fsync_dir(gone.parent)
        finally:
            os.close(fd)
        shutil.rmtree(gone, ignore_errors=True)

    def _open(self, name: str) -> Registry:
        """A Registry object for a model's directory (nothing is created until it mutates)."""
        return Registry(self.path_of(name), checker=self.checker)

    def _stored_names(self) -> list[str]:
        """The names of the model directories under models/."""
        try:
            entries = os.listdir(Path(self.root) / MODELS_DIR)
        except FileNotFoundError:
            return []
        return [name for name in entries if _NAME_RE.fullmatch(name)]


def _is_registry(path: Path) -> bool:
    """Tell whether a directory holds a model registry (a version, an active link, a history)."""
    return (path / "versions").is_dir() or (path / ACTIVE_LINK).is_symlink() or (
        path / HISTORY_FILE).is_file()
