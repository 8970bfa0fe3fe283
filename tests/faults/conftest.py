"""The fault suite's pieces: a home with a model active, expected answers, the stack's processes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kombu import Connection
from serving.conftest import expected, prepare_home
from serving.stack_helpers import (
    ROW,
    Answer,
    BoundedLoad,
    RunningStack,
    alive,
    cmdline,
    parent_pid,
    start_stack,
)
from tiers import needs

from modelserve.config import load_settings
from modelserve.model.runtime import ModelRuntime
from modelserve.registry import Registry
from modelserve.stack.rabbitmq import BrokerNode, free_broker_port

LOAD_THREADS = 4
LOAD_TIMEOUT = 30.0  # well past the stack's deadline: a HUNG request is one the server dropped


@pytest.fixture
@needs("root (the model sandbox checks the seed model it registers)")
def home(tmp_path: Path, shared_data: Path, pima_csv: Path) -> Path:
    """A home with the production seed model active."""
    home = tmp_path / "home"
    prepare_home(home, shared_data, pima_csv, active="production")
    return home


@pytest.fixture
@needs("root (the model sandbox checks the seed models it registers)")
def two_model_home(tmp_path: Path, shared_data: Path, pima_csv: Path) -> Path:
    """A home with both seed models registered; production is active."""
    home = tmp_path / "home"
    prepare_home(home, shared_data, pima_csv, ("production", "development"), active="production")
    return home


def expected_probability(home: Path, version: str) -> float:
    """The probability a version must answer for ROW, computed here without the stack."""
    runtime = ModelRuntime.load(Registry(home / "registry").get(version).path)
    return float(expected(runtime, [ROW])[0])


def wait_for_answers(load: BoundedLoad, count: int, timeout: float = 60,
                     accept: Callable[[dict], bool] | None = None) -> float:
    """Wait until the load has had `count` more answers than now (only 200s whose body passes
    `accept`, if given); return how long that took."""
    started, seen = time.monotonic(), len(load.snapshot())
    while True:
        fresh = load.snapshot()[seen:]
        if accept is not None:
            fresh = [a for a in fresh if a.status == 200 and accept(a.body)]
        if len(fresh) >= count:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, (
            f"the load got no {count} such answers in {timeout} s: {load.snapshot()[-3:]}")
        time.sleep(0.1)


def wait_for_successes(load: BoundedLoad, since: float, count: int, timeout: float = 60) -> None:
    """Wait until `count` requests sent after `since` have succeeded in a row, up to now."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        later = [a for a in load.snapshot() if a.started >= since]
        first = tail_run_start(later)
        if first is not None and sum(a.started >= first.started for a in later) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"not {count} successes in a row within {timeout} s")


def wait_for_new_workers(stack: RunningStack, old: set[int], count: int,
                         timeout: float = 60) -> list[int]:
    """Wait until the stack runs `count` Celery workers, none of them in `old`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [pid for pid in stack.worker_pids() if alive(pid)]
        if len(pids) == count and not old & set(pids):
            return pids
        time.sleep(0.1)
    raise AssertionError(f"workers not replaced: {stack.worker_pids()}\n{stack.log()}")


def queue_consumers(stack: RunningStack) -> int:
    """How many workers consume the prediction queue now, as RabbitMQ counts them (uncached)."""
    settings = load_settings(stack.env)
    url = settings.broker_url or BrokerNode(stack.home / "broker", stack.broker_port).url()
    with Connection(url, connect_timeout=5) as connection:
        declared = connection.default_channel.queue_declare(settings.queue, passive=True)
    return declared.consumer_count


def wait_for_consumers(stack: RunningStack, count: int, timeout: float = 60) -> None:
    """Wait until `count` workers consume the prediction queue."""
    deadline = time.monotonic() + timeout
    while (seen := queue_consumers(stack)) != count:
        assert time.monotonic() < deadline, f"{seen} consumers, not {count}\n{stack.log()}"
        time.sleep(0.1)


def processes_by_role(stack: RunningStack) -> dict[str, set[int]]:
    """The stack's live processes: 'web master', 'web workers', 'workers' and 'other'."""
    roles: dict[str, set[int]] = {"web master": set(), "web workers": set(), "workers": set(),
                                  "other": set()}
    pids = [pid for pid in stack.children() if alive(pid)]
    masters = {pid for pid in pids
               if _is_gunicorn(pid) and parent_pid(pid) == stack.process.pid}
    for pid in pids:
        if pid in masters:
            roles["web master"].add(pid)
        elif parent_pid(pid) in masters:
            roles["web workers"].add(pid)  # gunicorn forks its workers: same command line
        elif b"modelserve\x00worker" in cmdline(pid):
            roles["workers"].add(pid)
        else:
            roles["other"].add(pid)
    return roles


def tail_run_start(answers: list[Answer]) -> Answer | None:
    """The first answer of the run of 200s (in send order) that lasts to the end, if any."""
    first = None
    for answer in sorted(answers, key=lambda a: a.started, reverse=True):
        if answer.status != 200:
            break
        first = answer
    return first


def _is_gunicorn(pid: int) -> bool:
    """Tell whether a process runs gunicorn (`python -m gunicorn ...`)."""
    return b"-m\x00gunicorn\x00" in cmdline(pid)


class ExternalBroker:
    """A RabbitMQ node of the test's own, which it may stop and start again."""

    def __init__(self, folder: Path):
        self.node = BrokerNode(folder, free_broker_port())
        self.process = None

    def start(self) -> None:
        """Start the node and wait for its port."""
        self.process = self.node.start()
        self.node.wait_until_listening(self.process, 60)

    def stop(self) -> None:
        """Stop the node."""
        self.node.stop(self.process)


@contextmanager
def stack_on_external_broker(home: Path, workers: int, env: dict[str, str] | None = None
                             ) -> Iterator[tuple[ExternalBroker, RunningStack]]:
    """A stack with `workers` workers on a broker of the test's own, which it may stop."""
    broker = ExternalBroker(home.parent / "external-broker")
    broker.start()
    stack = start_stack(home, "--workers", str(workers),
                        env={"MODELSERVE_BROKER_URL": broker.node.url(), **(env or {})})
    try:
        stack.wait_ready(workers=workers)
        yield broker, stack
    finally:
        stack.stop()
        broker.stop()
