"""Settings from MODELSERVE_* environment variables, read when asked for, never at import."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _default_home() -> Path:
    """Return the XDG data directory for modelserve."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "modelserve"


@dataclass(frozen=True)
class Settings:
    """Where modelserve keeps its state."""

    home: Path

    @property
    def data_dir(self) -> Path:
        """Imported or fetched datasets."""
        return self.home / "data"

    @property
    def registry_dir(self) -> Path:
        """The versioned model store."""
        return self.home / "registry"


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read settings from the environment (MODELSERVE_HOME)."""
    env = os.environ if environ is None else environ
    home = env.get("MODELSERVE_HOME")
    return Settings(home=Path(home).expanduser() if home else _default_home())
