"""A rollout asked for by `git push -o ...`, read as a pure function of the push options.

    -o shadow            the candidate shadows live, on a copy of every request
    -o shadow=25         ... of a quarter of them
    -o canary=10         the candidate answers 10% of the requests
    -o policy.NAME=VALUE a policy setting (min_requests, max_hours, ...), repeatable
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from modelserve.rollout.state import Mode, Policy, RolloutError

POLICY_PREFIX = "policy."
DEFAULT_PERCENT = {Mode.SHADOW: 100.0, Mode.CANARY: 10.0}


@dataclass(frozen=True)
class Planned:
    """How a pushed candidate is to meet live traffic instead of replacing it at once."""

    mode: Mode
    percent: float
    policy: Policy = field(default_factory=Policy)

    def to_note(self) -> dict:
        """As the gate's note keeps it for post-receive."""
        return {"mode": self.mode.value, "percent": self.percent, "policy": asdict(self.policy)}

    @classmethod
    def from_note(cls, note: dict) -> Planned:
        """Back from the note (written by the gate itself)."""
        return cls(Mode(note["mode"]), float(note["percent"]), Policy(**note["policy"]))


def planned_rollout(options: dict[str, str]) -> Planned | None:
    """The rollout the options ask for; None: go live at once, as without them."""
    modes = [mode for mode in Mode if mode.value in options]
    settings = {name[len(POLICY_PREFIX):]: value for name, value in options.items()
                if name.startswith(POLICY_PREFIX)}
    if len(modes) > 1:
        raise RolloutError("push with -o shadow or -o canary=PERCENT, not both")
    if not modes:
        if settings:
            raise RolloutError("-o policy.* settings go with -o shadow or -o canary=PERCENT")
        return None
    mode = modes[0]
    text = options[mode.value]
    if not text and mode is Mode.CANARY:
        raise RolloutError("-o canary needs its share: -o canary=PERCENT, e.g. canary=10")
    try:
        percent = float(text) if text else DEFAULT_PERCENT[mode]
    except ValueError:
        raise RolloutError(f"-o {mode.value}={text}: the share must be a percent, e.g. "
                           f"{mode.value}=10") from None
    if not 0 < percent <= 100:
        raise RolloutError(f"-o {mode.value}={text}: the share must be above 0 and at most 100")
    return Planned(mode, percent, Policy.from_options(settings))
