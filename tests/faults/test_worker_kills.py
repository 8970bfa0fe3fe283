"""Celery workers killed -9 under load: their work is redone elsewhere, nothing is lost."""

from __future__ import annotations

import os
import signal
import time

import pytest
from serving.stack_helpers import BoundedLoad, start_stack

from faults.conftest import (
    LOAD_THREADS,
    LOAD_TIMEOUT,
    expected_probability,
    wait_for_answers,
    wait_for_consumers,
    wait_for_new_workers,
)
from modelserve.registry import Registry

WORKERS = 3
AFTER_SECONDS = 3.0  # load kept on the replaced workers before counting


@pytest.mark.slow
def test_killing_workers_under_load_loses_no_request(home, reliability):
    """Kill -9 one worker, then (once replaced) all but one: every request gets its right 200."""
    probability = expected_probability(home, Registry(home / "registry").active_version())
    stack = start_stack(home, "--workers", str(WORKERS))
    try:
        stack.wait_ready(workers=WORKERS)
        with BoundedLoad(stack.url, threads=LOAD_THREADS, seconds=180,
                         request_timeout=LOAD_TIMEOUT) as load:
            wait_for_answers(load, 20)
            one = _kill_and_wait(stack, stack.worker_pids()[:1])
            all_but_one = _kill_and_wait(stack, stack.worker_pids()[1:])
            time.sleep(AFTER_SECONDS)  # the replacements carry the load for a while
            wait_for_answers(load, 20)
        log = stack.log()
    finally:
        assert stack.stop() == 0
    tally = load.tally(probability)
    reliability.record(
        "Faults", "Celery workers killed -9 under load",
        note=f"{WORKERS} workers, {LOAD_THREADS} client threads; one killed, then all but one",
        sent=tally["sent"], correct=tally["correct"], wrong=tally["wrong"], lost=tally["lost"],
        hung=tally["hung"], failed=tally["sent"] - tally["correct"],
        **{"workers killed": 1 + (WORKERS - 1),
           "recovery": f"1 killed: {one:.1f} s; {WORKERS - 1} killed: {all_but_one:.1f} s"},
    )
    assert log.count("exited (code -9); restarting it") == WORKERS
    assert tally["correct"] == tally["sent"], (tally, load.wrong(probability)[:5])


def _kill_and_wait(stack, victims: list[int]) -> float:
    """Kill workers -9; return the seconds until replacements run and consume again."""
    killed_at = time.monotonic()
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    wait_for_new_workers(stack, set(victims), WORKERS)
    wait_for_consumers(stack, WORKERS)  # the replacements take work
    return time.monotonic() - killed_at
