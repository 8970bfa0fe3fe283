"""A model's rollout as a typed record, kept beside its registry in rollout.json.

One model has at most one rollout: a candidate version that either shadows the live one
(gets a copy of a share of its requests; its answers go to nobody) or is a canary (answers
that share itself). The file is the truth every web process reads: written whole with
os.replace, removed when the rollout ends (the history says how it ended), so a restart
finds the rollout where it was.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from modelserve.errors import UserError
from modelserve.fsutil import atomic_write_text

ROLLOUT_FILE = "rollout.json"
MAX_FILE_BYTES = 64 * 1024  # a rollout is a few hundred bytes: anything larger is not ours


class RolloutError(UserError):
    """A rollout that cannot be started, changed or read, in one line."""


class Mode(StrEnum):
    """How the candidate meets live traffic."""

    SHADOW = "shadow"  # a copy of `percent` of the requests; its answers go to nobody
    CANARY = "canary"  # it answers `percent` of the requests itself

    def share(self, percent: float) -> str:
        """What the candidate gets, in words: "answers 10% of the requests"."""
        what = "gets a copy of" if self is Mode.SHADOW else "answers"
        return f"{what} {percent:g}% of the requests"


@dataclass(frozen=True)
class Policy:
    """When the evidence is in, and what it must show for the candidate to be promoted."""

    min_requests: int = 200  # the candidate's answered requests before anything is decided
    min_labelled: int = 50  # rows with feedback, for the candidate and for live alike
    max_error_rate_increase: float = 0.01  # candidate error rate minus live's, at most
    max_latency_ratio: float = 2.0  # candidate p99 over live p99, at most (plus LATENCY_SLACK)
    max_metric_regression: float = 0.02  # accuracy points lost, or RMSE's relative rise
    max_hours: float = 24.0  # without a decision by then, the rollout is aborted

    def __post_init__(self) -> None:
        """Refuse figures no rollout could be judged by."""
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or \
                    not math.isfinite(value) or value < 0:
                raise RolloutError(f"policy {item.name} must be a number of 0 or more, "
                                   f"not {value!r}")
        if self.max_hours <= 0:
            raise RolloutError("policy max_hours must be above 0")

    @classmethod
    def from_options(cls, options: dict[str, str], base: Policy | None = None) -> Policy:
        """A policy from name=value options (CLI, push options), over a base policy."""
        known = {item.name: item.type for item in fields(cls)}
        changes: dict[str, Any] = {}
        for name, text in options.items():
            key = name.replace("-", "_")
            if key not in known:
                raise RolloutError(f"unknown policy setting {name!r}; the settings are "
                                   f"{', '.join(sorted(known))}")
            try:
                changes[key] = int(text) if known[key] == "int" else float(text)
            except ValueError:
                raise RolloutError(f"policy {name} must be a number, not {text!r}") from None
        return replace(base or cls(), **changes)


@dataclass(frozen=True)
class Rollout:
    """A candidate version on its way to being live, or out."""

    model: str
    candidate: str
    live: str  # the version live when it began: what the candidate is judged against
    mode: Mode
    percent: float  # of requests: copied to a shadow, or answered by a canary
    started_at: float  # seconds since the epoch
    source: str = ""  # who began it: cli, push
    policy: Policy = field(default_factory=Policy)

    def __post_init__(self) -> None:
        """Refuse a share outside (0, 100]."""
        if not (isinstance(self.percent, int | float) and 0 < self.percent <= 100):
            raise RolloutError(f"the share of requests must be above 0 and at most 100 "
                               f"percent, not {self.percent!r}")

    def to_json(self) -> str:
        """The record as the file holds it."""
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Rollout:
        """Read a record back, checking every field; a bad one is a RolloutError."""
        try:
            data = json.loads(text)
            policy = Policy(**data.pop("policy"))
            return cls(**{**data, "mode": Mode(data["mode"]), "policy": policy})
        except RolloutError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise RolloutError(f"not a rollout record ({error})") from None


class RolloutStore:
    """The rollout file of one model's registry directory."""

    def __init__(self, registry_root: Path):
        self.path = registry_root / ROLLOUT_FILE

    def read(self) -> Rollout | None:
        """The rollout under way, None if there is none; a damaged file is a RolloutError."""
        try:
            with self.path.open("rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise RolloutError(f"cannot read {self.path.name}: {error.strerror}") from None
        if len(data) > MAX_FILE_BYTES:
            raise RolloutError(f"{self.path.name} is over {MAX_FILE_BYTES} bytes: not a rollout")
        try:
            return Rollout.from_json(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise RolloutError(f"{self.path.name} is not UTF-8 text") from None

    def write(self, rollout: Rollout) -> None:
        """Make a rollout the one under way (whole, atomically)."""
        atomic_write_text(self.path, rollout.to_json())

    def clear(self) -> None:
        """End the rollout under way, if any."""
        self.path.unlink(missing_ok=True)
