"""A gunicorn web worker killed -9 under load: the master replaces it and serving goes on."""

from __future__ import annotations

import os
import signal
import time

import pytest
from serving.stack_helpers import LOST, BoundedLoad, start_stack

from faults.conftest import (
    LOAD_THREADS,
    LOAD_TIMEOUT,
    expected_probability,
    processes_by_role,
    tail_run_start,
    wait_for_answers,
    wait_for_successes,
)
from modelserve.registry import Registry

RECOVERY_BOUND_SECONDS = 10.0
SUCCESSES_AFTER = 50  # consecutive right answers that show serving goes on


@pytest.mark.slow
def test_a_killed_web_worker_is_replaced_and_serving_goes_on(home, reliability):
    """Kill -9 the gunicorn worker: at most the requests in flight on it are lost (their
    connections reset), none is wrong, and within 10 s every request succeeds again."""
    version = Registry(home / "registry").active_version()
    probability = expected_probability(home, version)
    stack = start_stack(home, "--workers", "2")
    try:
        stack.wait_ready(workers=2)
        before = processes_by_role(stack)
        (victim,) = before["web workers"]
        with BoundedLoad(stack.url, threads=LOAD_THREADS, seconds=120,
                         request_timeout=LOAD_TIMEOUT) as load:
            wait_for_answers(load, 20)
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            wait_for_successes(load, killed_at, SUCCESSES_AFTER)
        after = processes_by_role(stack)
        log = stack.log()
    finally:
        assert stack.stop() == 0
    answers = load.answers
    lost = [a for a in answers if a.status == LOST]
    in_flight = [a for a in answers if a.started < killed_at < a.ended]
    recovered = tail_run_start([a for a in answers if a.started >= killed_at])
    assert recovered is not None, answers[-5:]
    recovery = recovered.ended - killed_at
    tally = load.tally(probability)
    reliability.record(
        "Faults", "gunicorn web worker killed -9 under load",
        note=f"{LOAD_THREADS} client threads; requests in flight on the killed process have "
             "their connection reset, which nothing in the server can prevent (a prediction "
             "has no side effect: a client may send it again)",
        sent=tally["sent"], correct=tally["correct"], wrong=tally["wrong"], lost=len(lost),
        hung=tally["hung"], failed=tally["sent"] - tally["correct"],
        **{"web workers killed": 1, "in flight at the kill": len(in_flight),
           "recovery": f"{recovery:.1f} s"},
    )
    assert f"Worker (pid:{victim}) was sent SIGKILL" in log, log
    assert len(after["web workers"]) == 1 and victim not in after["web workers"]
    assert after["web master"] == before["web master"] and after["workers"] == before["workers"]
    # Only requests the killed process was serving are lost, never a later one.
    assert all(a.started < killed_at < a.ended for a in lost), lost  # so at most LOAD_THREADS
    assert tally["hung"] == tally["wrong"] == 0, tally
    assert tally["correct"] + len(lost) == tally["sent"], tally  # every other answer is right
    assert {a.body["model_version"] for a in answers if a.status == 200} == {version}
    assert recovery <= RECOVERY_BOUND_SECONDS, f"{recovery:.1f} s"

