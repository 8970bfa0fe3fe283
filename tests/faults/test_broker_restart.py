"""RabbitMQ stopped and started again under load: fast 503s while it is away, then recovery
without restarting anything, and no request accepted before the outage left without an answer."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
from serving.stack_helpers import Answer, BoundedLoad

from faults.conftest import (
    LOAD_THREADS,
    LOAD_TIMEOUT,
    expected_probability,
    processes_by_role,
    stack_on_external_broker,
    tail_run_start,
    wait_for_answers,
    wait_for_successes,
)
from modelserve.registry import Registry

DEADLINE = 5.0  # MODELSERVE_REQUEST_TIMEOUT of the stack
DOWN_SECONDS = 8.0
FAST_SECONDS = 2.0  # a refusal while the broker is away takes at most this long
RECOVERY_BOUND_SECONDS = 30.0  # broker port open again -> requests succeed again
SUCCESSES_AFTER = 50  # consecutive 200s that count as recovered
SERVING_ROLES = ("web master", "web workers", "workers")


@dataclass
class Outage:
    """When the broker was told to stop, was gone, was told to start, and listened again."""

    stop: float = 0.0
    down: float = 0.0
    start: float = 0.0
    up: float = 0.0

    def phase(self, answer: Answer) -> str:
        """When a request was sent: before, stopping, down, starting or after."""
        for name, until in (("before", self.stop), ("stopping", self.down),
                            ("down", self.start), ("starting", self.up)):
            if answer.started < until:
                return name
        return "after"


@pytest.fixture
def broker_and_stack(home):
    """A stack (two workers, 5 s deadline) on an external broker the test controls."""
    with stack_on_external_broker(home, 2, {"MODELSERVE_REQUEST_TIMEOUT": str(DEADLINE)}) as both:
        yield both


@pytest.mark.slow
def test_broker_restart_under_load(broker_and_stack, home, reliability):
    """Stop RabbitMQ for 8 s under load, then start it: while it is away every request gets a
    503 with Retry-After within 2 s; every request gets an answer within its 5 s deadline (a
    200, or a 503/504 for those caught by the outage); the same web and worker processes serve
    again within 30 s of the broker's port opening."""
    broker, stack = broker_and_stack
    probability = expected_probability(home, Registry(home / "registry").active_version())
    before = processes_by_role(stack)
    outage = Outage()
    with BoundedLoad(stack.url, threads=LOAD_THREADS, seconds=180,
                     request_timeout=LOAD_TIMEOUT) as load:
        wait_for_answers(load, 20)
        outage.stop = time.monotonic()
        broker.stop()
        outage.down = time.monotonic()
        time.sleep(max(outage.down + DOWN_SECONDS - time.monotonic(), 0))  # the outage itself
        outage.start = time.monotonic()
        broker.start()
        outage.up = time.monotonic()
        wait_for_successes(load, outage.up, SUCCESSES_AFTER, RECOVERY_BOUND_SECONDS + 30)
    after = processes_by_role(stack)
    answers = sorted(load.answers, key=lambda a: a.started)
    recovered = tail_run_start([a for a in answers if a.started >= outage.down])
    assert recovered is not None, _odd(answers[-5:])
    first_200 = min(a.ended for a in answers if a.started >= outage.down and a.status == 200)
    _record(reliability, load, probability, outage, recovered, first_200)

    assert {a.status for a in answers} <= {200, 503, 504}, _odd(answers)  # no LOST, no HUNG
    assert load.tally(probability)["wrong"] == 0, "a 200 with another probability"
    assert all(a.seconds <= DEADLINE + 1 for a in answers), _slowest(answers)
    assert all("Retry-After" in a.headers for a in answers if a.status == 503)
    while_down = [a for a in answers if outage.phase(a) == "down"]
    assert while_down and all(a.status == 503 for a in while_down), _odd(while_down)
    assert max(a.seconds for a in while_down) <= FAST_SECONDS, _slowest(while_down)
    assert recovered.ended - outage.up <= RECOVERY_BOUND_SECONDS
    assert {role: after[role] for role in SERVING_ROLES} == {
        role: before[role] for role in SERVING_ROLES}, "web or workers were restarted"


def _record(reliability, load: BoundedLoad, probability: float, outage: Outage,
            recovered: Answer, first_200: float) -> None:
    """Write the scenario's figures into the report."""
    answers = load.answers
    tally = load.tally(probability)
    refused = [a for a in answers if a.status == 503]
    while_down = [a for a in answers if outage.phase(a) == "down"]
    tally_504 = tally.get("status 504", 0)
    reliability.record(
        "Faults", f"RabbitMQ stopped {DOWN_SECONDS:g} s and restarted under load",
        note=f"{LOAD_THREADS} client threads, 2 workers, deadline {DEADLINE:g} s; bounds: "
             f"503 within {FAST_SECONDS:g} s while down, recovery within "
             f"{RECOVERY_BOUND_SECONDS:g} s of the port opening, no process restarted",
        sent=tally["sent"], correct=tally["correct"], wrong=tally["wrong"],
        failed=tally["sent"] - tally["correct"],
        **{"503": len(refused),
           "503 with Retry-After": sum("Retry-After" in a.headers for a in refused),
           "504": tally_504,
           "other failures": tally["sent"] - tally["correct"] - tally["wrong"] - len(refused)
           - tally_504 - tally["lost"] - tally["hung"],
           "lost": tally["lost"], "hung": tally["hung"],
           "sent before the stop": _outcomes([a for a in answers if outage.phase(a) == "before"]),
           "in flight at the stop": _outcomes(
               [a for a in answers if a.started < outage.stop < a.ended]),
           "longest answer while down": f"{max(a.seconds for a in while_down):.2f} s",
           "longest answer": f"{max(a.seconds for a in answers):.2f} s",
           "recovery": f"{recovered.ended - outage.up:.1f} s after the port opened",
           "first 200 after the stop": f"{first_200 - outage.stop:.1f} s (broker away "
                                       f"{outage.up - outage.stop:.1f} s)"},
    )


def _outcomes(answers: list[Answer]) -> str:
    """'N: a x 200, b x 503' for a group of answers."""
    counts: dict[int, int] = {}
    for answer in answers:
        counts[answer.status] = counts.get(answer.status, 0) + 1
    parts = ", ".join(f"{n} x {status}" for status, n in sorted(counts.items()))
    return f"{len(answers)}: {parts}" if answers else "0"


def _odd(answers: list[Answer]) -> list[tuple[int, object]]:
    """The first few answers that are not 200s, for a failure message."""
    return [(a.status, a.body) for a in answers if a.status != 200][:5]


def _slowest(answers: list[Answer]) -> list[tuple[float, int, object]]:
    """The slowest answers, for a failure message."""
    return sorted(((a.seconds, a.status, a.body) for a in answers), key=lambda t: -t[0])[:5]
