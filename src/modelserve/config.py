"""Settings from MODELSERVE_* environment variables, read when asked for, never at import."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from modelserve.errors import UserError


def _default_home() -> Path:
    """Return the XDG data directory for modelserve."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "modelserve"


@dataclass(frozen=True)
class Settings:
    """Where modelserve keeps its state, and how it serves (MODELSERVE_<FIELD> overrides)."""

    home: Path
    broker_url: str = ""
    # amqps:// only: the CA that signed the broker's certificate (else the system's), and this
    # host's client certificate and key (both or neither; production's broker requires them).
    broker_ca: str = ""
    broker_cert: str = ""
    broker_key: str = ""
    queue: str = "modelserve.predict"
    # The home's default model: where a one-model home keeps it, what /api/v1/predict serves.
    model_name: str = "diabetes"
    # Models with a queue (and workers) of their own: `modelserve worker --models a,b`.
    own_queues: str = ""
    # Models a worker keeps loaded at once; the least recently used is dropped beyond it.
    max_loaded_models: int = 8
    batch_window_ms: float = 0.0
    max_batch_rows: int = 1024
    max_inflight_batches: int = 4
    max_body_bytes: int = 1 << 20
    max_upload_bytes: int = 16 << 20
    max_request_rows: int = 10_000
    # Access: auth `auto` (required off loopback), `required` or `off`; rate_limit per token
    # (or client address) per web process, "" = 600/minute where auth is required; uploads.
    auth: str = "auto"
    rate_limit: str = ""
    max_upload_rows: int = 10_000
    results_quota_bytes: int = 256 << 20
    result_lifetime_seconds: int = 3600
    request_timeout: float = 5.0
    # The prediction log (inputs, answers, feedback): "on" or "off"; its SQLite file ("":
    # log/predictions.sqlite under home); requests older than the retention are forgotten
    # (0: kept for ever); answers waiting to be written past the buffer are dropped, counted.
    prediction_log: str = "on"
    prediction_log_path: str = ""
    prediction_log_retention_hours: float = 168.0
    prediction_log_buffer_bytes: int = 64 << 20
    rollout_judge_seconds: float = 2.0  # how often a web process judges the rollouts under way
    retry_after_seconds: int = 2

    @property
    def data_dir(self) -> Path:
        """Imported or fetched datasets."""
        return self.home / "data"

    @property
    def registry_dir(self) -> Path:
        """The versioned model store."""
        return self.home / "registry"

    def model_data_dir(self, name: str) -> Path:
        """A model's stored dataset: data/ for the default model (as a one-model home has
        it), data/models/<name>/ for any other."""
        return self.data_dir if name == self.model_name else self.data_dir / "models" / name

    @property
    def own_queue_models(self) -> frozenset[str]:
        """The models named in MODELSERVE_OWN_QUEUES."""
        return frozenset(name.strip() for name in self.own_queues.split(",") if name.strip())

    @property
    def prediction_log_file(self) -> Path | None:
        """The prediction log's SQLite file; None when the log is off."""
        mode = self.prediction_log.strip().lower()
        if mode not in ("on", "off"):
            raise UserError(f"MODELSERVE_PREDICTION_LOG={self.prediction_log!r}: say on or off")
        if mode == "off":
            return None
        if self.prediction_log_path:
            return Path(self.prediction_log_path).expanduser()
        return self.home / "log" / "predictions.sqlite"

    @property
    def results_dir(self) -> Path:
        """Scored CSV files waiting to be downloaded from the web pages."""
        return self.home / "results"


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from MODELSERVE_* environment variables, refusing malformed values."""
    env = os.environ if environ is None else environ
    home = env.get("MODELSERVE_HOME")
    # Any: _convert gives each value its field's declared type, which the dict cannot express.
    values: dict[str, Any] = {}
    for field in fields(Settings):
        raw = env.get(f"MODELSERVE_{field.name.upper()}")
        if field.name == "home" or raw is None:
            continue
        values[field.name] = _convert(field.name, field.type, raw)
    return Settings(home=Path(home).expanduser() if home else _default_home(), **values)


def _convert(name: str, kind: object, raw: str) -> object:
    """Convert one environment value to its field's type."""
    converters = {"int": int, "float": float, "str": str}
    try:
        value = converters[str(kind)](raw)
    except (KeyError, ValueError):
        raise UserError(f"MODELSERVE_{name.upper()}={raw!r} is not a valid {kind}") from None
    if isinstance(value, int | float) and value < 0:
        raise UserError(f"MODELSERVE_{name.upper()}={raw!r} must not be negative")
    return value
