"""Judging a rollout on live evidence, as a pure function: promote, abort, or wait.

The candidate and the live version are compared on the same window (the rollout's own
time), on what each answered and on the feedback their rows got. Errors abort early, on a
few requests: a candidate that fails must not wait for the full count. Everything else waits
for the policy's minimum requests and labelled rows; a rollout that has not gathered them
within its maximum duration is aborted, since nothing shows it is better.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from modelserve.delivery.comparison import HEADLINE_HIGHER
from modelserve.predlog.live import VersionLive
from modelserve.rollout.state import Rollout

# Requests enough to abort on errors before min_requests (an always-failing candidate).
EARLY_ERROR_REQUESTS = 20
# Milliseconds of p99 always allowed above live's times the ratio: at 2 ms a doubling is noise.
LATENCY_SLACK_SECONDS = 0.010


class Decision(StrEnum):
    """What the judge says."""

    PROMOTE = "promote"
    ABORT = "abort"
    WAIT = "wait"


@dataclass(frozen=True)
class Verdict:
    """A decision, the policy rule that made it, and the figures behind it, in one line."""

    decision: Decision
    rule: str
    reason: str


def judge(rollout: Rollout, live: VersionLive | None, candidate: VersionLive | None,
          now: float) -> Verdict:
    """The verdict on a rollout's evidence so far (None: a version answered nothing yet)."""
    policy = rollout.policy
    hours = (now - rollout.started_at) / 3600
    requests = 0 if candidate is None else candidate.requests
    if candidate is not None and requests >= min(EARLY_ERROR_REQUESTS, policy.min_requests):
        live_rate = 0.0 if live is None else live.error_rate
        if candidate.error_rate - live_rate > policy.max_error_rate_increase:
            return Verdict(Decision.ABORT, "max_error_rate_increase",
                           f"error rate {candidate.error_rate:.1%} against live's "
                           f"{live_rate:.1%} over {requests} requests (at most "
                           f"+{policy.max_error_rate_increase:.1%})")
    waiting = _still_waiting(rollout, live, candidate)
    if waiting is not None or live is None or candidate is None:
        waiting = waiting or Verdict(Decision.WAIT, "min_requests", "no answers yet")
        if hours >= policy.max_hours:
            return Verdict(Decision.ABORT, "max_hours",
                           f"{waiting.reason} after {hours:.1f} h (at most "
                           f"{policy.max_hours:g} h)")
        return waiting
    regressed = _latency_regression(rollout, live, candidate) or \
        _metric_regression(rollout, live, candidate)
    if regressed is not None:
        return regressed
    return Verdict(Decision.PROMOTE, "evidence", _summary(live, candidate))


def _still_waiting(rollout: Rollout, live: VersionLive | None,
                   candidate: VersionLive | None) -> Verdict | None:
    """A WAIT verdict while requests or labelled rows are short of the policy, else None."""
    policy = rollout.policy
    requests = 0 if candidate is None else candidate.requests
    if candidate is None or live is None or requests < policy.min_requests:
        return Verdict(Decision.WAIT, "min_requests",
                       f"{requests} of {policy.min_requests} requests answered by the candidate")
    fewest = min(candidate.labelled, live.labelled)
    if fewest < policy.min_labelled:
        return Verdict(Decision.WAIT, "min_labelled",
                       f"{candidate.labelled} rows with feedback for the candidate and "
                       f"{live.labelled} for live, of {policy.min_labelled} each")
    return None


def _latency_regression(rollout: Rollout, live: VersionLive, candidate: VersionLive
                        ) -> Verdict | None:
    """An ABORT verdict if the candidate's p99 is past the policy's ratio of live's."""
    if candidate.latency_p99 is None or live.latency_p99 is None:
        return None
    bound = live.latency_p99 * rollout.policy.max_latency_ratio + LATENCY_SLACK_SECONDS
    if candidate.latency_p99 <= bound:
        return None
    return Verdict(Decision.ABORT, "max_latency_ratio",
                   f"p99 latency {candidate.latency_p99 * 1000:.1f} ms against live's "
                   f"{live.latency_p99 * 1000:.1f} ms (at most {bound * 1000:.1f} ms)")


def _metric_regression(rollout: Rollout, live: VersionLive, candidate: VersionLive
                       ) -> Verdict | None:
    """An ABORT verdict if the candidate's metric on fed-back rows is worse than the policy
    allows: accuracy points for a classifier, a relative rise of RMSE for regression."""
    if candidate.value is None or live.value is None:
        return None
    allowed = rollout.policy.max_metric_regression
    if HEADLINE_HIGHER.get(candidate.metric, True):
        worse = live.value - candidate.value > allowed
    else:
        worse = candidate.value > live.value * (1 + allowed)
    if not worse:
        return None
    return Verdict(Decision.ABORT, "max_metric_regression",
                   f"{candidate.metric} {candidate.value:.4f} on {candidate.labelled} rows "
                   f"against live's {live.value:.4f} on {live.labelled} (regression of at most "
                   f"{allowed:g})")


def _summary(live: VersionLive, candidate: VersionLive) -> str:
    """The figures a promotion rests on, in one line."""
    def value(item: VersionLive) -> str:
        return "none" if item.value is None else f"{item.value:.4f}"
    def p99(item: VersionLive) -> str:
        return "none" if item.latency_p99 is None else f"{item.latency_p99 * 1000:.1f} ms"
    return (f"{candidate.metric} {value(candidate)} on {candidate.labelled} rows against "
            f"live's {value(live)} on {live.labelled}; errors {candidate.error_rate:.1%} "
            f"against {live.error_rate:.1%}; p99 {p99(candidate)} against {p99(live)}; "
            f"{candidate.requests} requests")


@dataclass(frozen=True)
class Requirement:
    """One rule of the policy: what it asks, where the evidence stands, whether it is met."""

    rule: str
    wanted: str
    now: str
    met: bool


def progress(rollout: Rollout, live: VersionLive | None, candidate: VersionLive | None,
             now: float) -> list[Requirement]:
    """How far the evidence is, rule by rule (what the rollout page shows)."""
    policy = rollout.policy
    requests = 0 if candidate is None else candidate.requests
    fewest = min(0 if candidate is None else candidate.labelled,
                 0 if live is None else live.labelled)
    hours = (now - rollout.started_at) / 3600
    found = [
        Requirement("min_requests", f"{policy.min_requests}", f"{requests}",
                    requests >= policy.min_requests),
        Requirement("min_labelled", f"{policy.min_labelled} each", f"{fewest}",
                    fewest >= policy.min_labelled),
        Requirement("max_hours", f"{policy.max_hours:g} h", f"{hours:.2f} h",
                    hours < policy.max_hours),
    ]
    if candidate is not None and live is not None:
        increase = candidate.error_rate - live.error_rate
        found.append(Requirement("max_error_rate_increase",
                                 f"+{policy.max_error_rate_increase:.1%}", f"{increase:+.1%}",
                                 increase <= policy.max_error_rate_increase))
        if candidate.latency_p99 is not None and live.latency_p99 is not None:
            bound = live.latency_p99 * policy.max_latency_ratio + LATENCY_SLACK_SECONDS
            found.append(Requirement("max_latency_ratio", f"p99 <= {bound * 1000:.1f} ms",
                                     f"{candidate.latency_p99 * 1000:.1f} ms",
                                     candidate.latency_p99 <= bound))
        if candidate.value is not None and live.value is not None:
            regressed = _metric_regression(rollout, live, candidate)
            found.append(Requirement("max_metric_regression",
                                     f"{policy.max_metric_regression:g} at most",
                                     f"{candidate.value:.4f} against {live.value:.4f}",
                                     regressed is None))
    return found
