"""Prediction ids: 32 hex digits, the first 12 the milliseconds since the epoch it was made.

The time in the id lets feedback that arrives right after its answer tell "not written to
the log yet" (wait a moment) from "never answered here" (refuse), without asking anyone.
"""

from __future__ import annotations

import os
import re
import time

ID_PATTERN = re.compile(r"[0-9a-f]{32}")


def new_id(now: float | None = None) -> str:
    """A fresh id: the time in milliseconds, then 80 random bits."""
    millis = int((time.time() if now is None else now) * 1000)
    return f"{millis & 0xFFFFFFFFFFFF:012x}{os.urandom(10).hex()}"


def is_id(text: object) -> bool:
    """Whether a value is written as a prediction id."""
    return isinstance(text, str) and ID_PATTERN.fullmatch(text) is not None


def minted_at(prediction_id: str) -> float:
    """When an id was made, in seconds since the epoch."""
    return int(prediction_id[:12], 16) / 1000


def wait_for(prediction_id: str, now: float, settle: float) -> float:
    """How long to wait for an id the log does not have yet: the rest of its settling time if
    it was made in the last `settle` seconds, else 0. An id dated in the future was not made
    here (clocks are not that far apart), so it is not waited for either."""
    age = now - minted_at(prediction_id)
    return settle - age if 0 <= age < settle else 0.0
