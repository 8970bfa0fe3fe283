"""The rollout judge: each rule of the policy decides, with its figures, in its order."""

from __future__ import annotations

import pytest

from modelserve.predlog.live import VersionLive
from modelserve.predlog.records import Role
from modelserve.rollout.policy import Decision, judge, progress
from modelserve.rollout.state import Mode, Policy, Rollout

START = 1_800_000_000.0
POLICY = Policy(min_requests=100, min_labelled=40, max_error_rate_increase=0.01,
                max_latency_ratio=2.0, max_metric_regression=0.02, max_hours=2)


def rollout(policy: Policy = POLICY) -> Rollout:
    """A shadow rollout of version b against a."""
    return Rollout("diabetes", "b", "a", Mode.SHADOW, 100, START, "test", policy)


def figures(version: str = "a", requests: int = 500, errors: int = 0, p99: float = 0.020,
            labelled: int = 100, value: float | None = 0.78, metric: str = "accuracy",
            role: Role = Role.LIVE) -> VersionLive:
    """One version's live figures."""
    return VersionLive(version, role, requests, requests, errors, p99 / 2, p99, metric,
                       labelled, value, ())


def candidate(**changes) -> VersionLive:
    """The candidate's figures: by default as good as live's."""
    return figures(**{"version": "b", "role": Role.SHADOW, **changes})


def test_agreeing_evidence_promotes_with_its_figures():
    """Enough requests and labels, nothing worse: promote, and the line says on what."""
    verdict = judge(rollout(), figures(), candidate(value=0.77), START + 60)
    assert verdict.decision is Decision.PROMOTE and verdict.rule == "evidence"
    assert "accuracy 0.7700 on 100 rows against live's 0.7800" in verdict.reason


def test_errors_abort_early_on_few_requests():
    """An always-failing candidate is out after 20 requests, long before min_requests."""
    verdict = judge(rollout(), figures(), candidate(requests=20, errors=20, labelled=0,
                                                    value=None), START + 1)
    assert verdict.decision is Decision.ABORT and verdict.rule == "max_error_rate_increase"
    assert "100.0%" in verdict.reason
    assert judge(rollout(), figures(), candidate(requests=19, errors=19), START + 1).decision \
        is Decision.WAIT
    # Errors within the allowance over live's own do not abort.
    assert judge(rollout(), figures(errors=10), candidate(errors=14), START).decision \
        is Decision.PROMOTE


@pytest.mark.parametrize(("live", "cand", "rule"), [
    (figures(), candidate(requests=99), "min_requests"),
    (None, candidate(), "min_requests"),
    (figures(), None, "min_requests"),
    (figures(), candidate(labelled=39), "min_labelled"),
    (figures(labelled=39), candidate(), "min_labelled"),
])
def test_short_evidence_waits_then_aborts_at_max_hours(live, cand, rule):
    """Too few requests or labels: wait; past max_hours the same shortage aborts."""
    waiting = judge(rollout(), live, cand, START + 3600)
    assert waiting.decision is Decision.WAIT and waiting.rule == rule
    late = judge(rollout(), live, cand, START + 2 * 3600)
    assert late.decision is Decision.ABORT and late.rule == "max_hours"
    assert waiting.reason in late.reason and "after 2.0 h" in late.reason


def test_latency_and_metric_regressions_abort():
    """p99 past ratio x live + slack, or the metric past its allowance: abort, saying which."""
    slow = judge(rollout(), figures(p99=0.020), candidate(p99=0.051), START)
    assert slow.decision is Decision.ABORT and slow.rule == "max_latency_ratio"
    assert "51.0 ms against live's 20.0 ms (at most 50.0 ms)" in slow.reason
    assert judge(rollout(), figures(p99=0.020), candidate(p99=0.049), START).decision \
        is Decision.PROMOTE
    worse = judge(rollout(), figures(value=0.78), candidate(value=0.75), START)
    assert worse.decision is Decision.ABORT and worse.rule == "max_metric_regression"


def test_rmse_regression_is_relative_and_lower_is_better():
    """For regression a 2% rise of RMSE is allowed, 3% is not; a fall always passes."""
    live = figures(metric="rmse", value=10.0)
    for value, decision in ((10.19, Decision.PROMOTE), (10.3, Decision.ABORT),
                            (5.0, Decision.PROMOTE)):
        assert judge(rollout(), live, candidate(metric="rmse", value=value),
                     START).decision is decision


def test_progress_says_how_far_each_rule_is():
    """The page's table: requests and labels short, duration, errors, latency, metric."""
    shown = {item.rule: item for item in progress(
        rollout(), figures(), candidate(requests=60, labelled=10, value=0.70), START + 1800)}
    assert (shown["min_requests"].now, shown["min_requests"].met) == ("60", False)
    assert (shown["min_labelled"].now, shown["min_labelled"].met) == ("10", False)
    assert shown["max_hours"].now == "0.50 h" and shown["max_hours"].met
    assert shown["max_error_rate_increase"].met and shown["max_latency_ratio"].met
    assert not shown["max_metric_regression"].met
    assert [item.rule for item in progress(rollout(), None, None, START)] == [
        "min_requests", "min_labelled", "max_hours"]
