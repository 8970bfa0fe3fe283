"""What the prediction log holds, as typed records: one answer, one piece of feedback."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from modelserve.errors import UserError


class Role(StrEnum):
    """How a version answered a request."""

    LIVE = "live"  # its answer went back to the caller
    CANARY = "canary"  # the same, as the candidate of a canary rollout
    SHADOW = "shadow"  # a copy of the request; the answer went to nobody


@dataclass(frozen=True, eq=False)
class Answered:
    """One request's answer (or failure) by one version, as the log keeps it."""

    prediction_id: str
    model: str
    version: str
    role: Role
    at: float  # seconds since the epoch, when the request arrived
    latency: float  # seconds from the request's arrival at the model to its answer
    rows: np.ndarray  # float32 (rows, features): the inputs
    outputs: np.ndarray | None  # float32 (rows, width); None when it failed
    error: str = ""


@dataclass(frozen=True)
class Truth:
    """The true answer of one row of one prediction: a class index, or a regression value."""

    prediction_id: str
    row: int
    value: float


class FeedbackRefused(UserError):
    """Feedback that cannot be taken; status is the HTTP status that says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
