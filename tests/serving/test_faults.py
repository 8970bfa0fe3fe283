"""Faults on the queue path: a worker killed mid-task, a stuck worker, a broker that leaves."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from faults import conftest as faults
from faults.conftest import stack_on_external_broker, wait_for_new_workers

from serving.conftest import as_json
from serving.stack_helpers import ROW, alive, post_json, start_stack, wait_until_answering

home = faults.home  # the fault suite's fixture: a home with the production seed model active


def _predict_later(pool: ThreadPoolExecutor, url: str):
    """Send a prediction from another thread; the future holds its answer."""
    return pool.submit(post_json, f"{url}/api/v1/predict", {"rows": [ROW]}, 30)


@pytest.mark.slow
def test_work_of_a_worker_killed_mid_task_is_done_by_another(home):
    """Both workers hold a task; one is killed -9: both callers still get their answer."""
    stack = start_stack(home, "--workers", "2", env={"MODELSERVE_REQUEST_TIMEOUT": "20"})
    try:
        stack.wait_ready(workers=2)
        first, second = stack.worker_pids()
        for pid in (first, second):
            os.kill(pid, signal.SIGSTOP)  # each will take one message and sit on it
        with ThreadPoolExecutor(2) as pool:
            answers = [_predict_later(pool, stack.url) for _ in range(2)]
            time.sleep(1.0)  # the broker hands one message to each (prefetch 1)
            os.kill(first, signal.SIGKILL)
            os.kill(second, signal.SIGCONT)
            results = [answer.result(30) for answer in answers]
        assert [r.status for r in results] == [200, 200], [r.body for r in results]
        served_by = {as_json(r)["worker"].split(":")[1] for r in results}
        assert str(first) not in served_by
        wait_for_new_workers(stack, {first}, 2)  # the supervisor replaced the dead worker
        assert "worker 1 exited (code -9); restarting it" in stack.log()
    finally:
        assert stack.stop() == 0
    assert not any(alive(pid) for pid in stack.children())


@pytest.mark.slow
def test_no_answer_within_the_deadline_is_a_504_not_a_hang(home):
    """With every worker frozen, the caller gets 504 at its deadline; then service resumes."""
    stack = start_stack(home, "--workers", "1", env={"MODELSERVE_REQUEST_TIMEOUT": "2"})
    try:
        stack.wait_ready(workers=1)
        (worker,) = stack.worker_pids()
        os.kill(worker, signal.SIGSTOP)
        started = time.monotonic()
        answer = post_json(f"{stack.url}/api/v1/predict", {"rows": [ROW]}, timeout=20)
        waited = time.monotonic() - started
        os.kill(worker, signal.SIGCONT)
        assert answer.status == 504 and "no answer within 2 s" in as_json(answer)["error"]
        assert waited < 4, "the deadline must be kept, not exceeded by much"
        assert post_json(f"{stack.url}/api/v1/predict", {"rows": [ROW]}).status == 200
    finally:
        assert stack.stop() == 0


@pytest.fixture
def broker_and_stack(home):
    """A stack (one worker) on an external broker the test controls."""
    with stack_on_external_broker(home, 1) as both:
        yield both


@pytest.mark.slow
def test_broker_down_means_fast_503_with_retry_after_then_recovery(broker_and_stack):
    """An external broker stops: 503 + Retry-After at once; it returns: service resumes."""
    broker, stack = broker_and_stack
    pids = set(stack.children())
    broker.stop()
    answers, elapsed = [], []
    for _ in range(5):
        started = time.monotonic()
        answers.append(post_json(f"{stack.url}/api/v1/predict", {"rows": [ROW]}))
        elapsed.append(time.monotonic() - started)
    assert {a.status for a in answers} == {503}, [a.body for a in answers]
    assert all(a.headers.get("Retry-After") == "2" for a in answers)
    assert "broker" in as_json(answers[-1])["error"]
    assert max(elapsed) < 1.0, elapsed
    broker.start()
    wait_until_answering(stack.url, 60)
    assert set(stack.children()) >= pids, "web and workers were not restarted"


@pytest.mark.slow
def test_after_a_quiet_broker_restart_the_first_requests_succeed(broker_and_stack):
    """No request while the broker restarts: the web's old publishing connection must not
    turn the first request after it into a 503, nor leave the web refusing (found by Ansible:
    a config change restarts RabbitMQ, and the web then answered 503 for minutes)."""
    broker, stack = broker_and_stack
    assert post_json(f"{stack.url}/api/v1/predict", {"rows": [ROW]}).status == 200
    broker.stop()
    broker.start()
    stack.wait_ready(workers=1)  # the reply connection and the worker are back
    answers = [post_json(f"{stack.url}/api/v1/predict", {"rows": [ROW]}) for _ in range(10)]
    assert [a.status for a in answers] == [200] * 10, [a.body for a in answers]
