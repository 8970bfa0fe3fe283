"""Where the delivery repository lives and the rules its gate applies."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from modelserve.config import Settings
from modelserve.errors import UserError
from modelserve.fsutil import atomic_write_text

OTHER_REFS = ("refuse", "store")


@dataclass(frozen=True)
class DeliveryConfig:
    """The gate's rules, chosen at `modelserve delivery init`."""

    branch: str = "master"
    folder: str = ""
    tolerance: float = 0.02
    max_bytes: int = 50 << 20
    live_timeout: float = 10.0
    web_url: str = "http://127.0.0.1:5100"
    # The certificate (or CA) an https web_url is verified with; "": the system's CAs.
    web_ca: str = ""
    # Refs other than the deployed branch: refused, or stored under the same limits.
    other_refs: str = "refuse"
    # Files and folders a pushed commit's whole tree may hold (counted before anything else).
    max_tree_entries: int = 1000


def delivery_dir(settings: Settings) -> Path:
    """The delivery state: repository, pending candidates, config."""
    return settings.home / "delivery"


def repository(settings: Settings) -> Path:
    """The bare repository pushes go to."""
    return delivery_dir(settings) / "models.git"


def load_config(settings: Settings) -> DeliveryConfig:
    """Read the config written by `delivery init`."""
    path = delivery_dir(settings) / "config.json"
    if not path.is_file():
        raise UserError("delivery is not set up here: run `modelserve delivery init`")
    stored = json.loads(path.read_text())
    known = {field.name for field in fields(DeliveryConfig)}
    return DeliveryConfig(**{key: value for key, value in stored.items() if key in known})


def save_config(settings: Settings, config: DeliveryConfig) -> bool:
    """Write the config; return whether anything changed."""
    path = delivery_dir(settings) / "config.json"
    text = json.dumps(asdict(config), indent=2) + "\n"
    if path.is_file() and path.read_text() == text:
        return False
    atomic_write_text(path, text)
    return True
