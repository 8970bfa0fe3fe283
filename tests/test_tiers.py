"""The quick tier's guard (tests/tiers.py): what needs a service cannot pass unmarked."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tiers import EXAMPLES_VARIABLE, needed_by_command, needed_by_connection, scaled_examples

TESTS = Path(__file__).resolve().parent

# An inner session: each test is one way of reaching for what the quick tier may not have.
INNER = '''
import os
import socket
import subprocess
import sys

import pytest
from tiers import needs

STARTED = os.environ["INNER_STARTED"]


@pytest.fixture(scope="session")
@needs("a pretend broker")
def broker():
    open(STARTED, "w").close()  # the fixture's body: it must never run for a quick test
    return "broker"


@pytest.fixture
def uses_broker(broker):
    return broker


@pytest.mark.slow
def test_slow_may_use_it(uses_broker):
    assert uses_broker == "broker"


def test_quick_using_it_after_a_slow_test_set_it_up(uses_broker):
    pass


def test_quick_starting_a_program_of_root():
    subprocess.run(["sudo", "-n", "true"], check=False)


def test_quick_starting_the_stack():
    subprocess.run([sys.executable, "-m", "modelserve", "up", "--workers", "1"], check=False)


def test_quick_swallowing_the_refusal():
    try:
        subprocess.run(["ip", "netns", "list"], check=False)
    except BaseException:
        pass


def test_quick_connecting_off_loopback():
    with socket.socket() as sock:
        sock.settimeout(0.01)
        sock.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed


def test_quick_on_loopback_and_plain_programs():
    with socket.create_server(("127.0.0.1", 0)) as server:
        socket.create_connection(server.getsockname()).close()
    assert subprocess.run([sys.executable, "-c", "pass"], check=False).returncode == 0


@pytest.mark.slow
def test_slow_may_start_programs():
    done = subprocess.run([sys.executable, "-m", "gunicorn", "--version"], check=False)
    assert done.returncode == 0
'''


# Writes each test's outcome and failure text, where it failed (setup or call), as JSON lines.
REPORTER = '''
import json
import os


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":
        with open(os.environ["INNER_REPORT"], "a") as out:
            out.write(json.dumps([report.head_line, report.when, report.outcome,
                                  report.longreprtext]) + "\\n")
'''


def run_inner(tmp_path: Path, source: str, *args: str) -> dict[str, tuple[str, str]]:
    """Run an inner pytest session; by test name, where it ended and its failure text."""
    (tmp_path / "test_inner.py").write_text(source)
    (tmp_path / "conftest.py").write_text(REPORTER)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: not in the quick tier\n")
    report = tmp_path / "report.jsonl"
    env = dict(os.environ, PYTHONPATH=str(TESTS), INNER_STARTED=str(tmp_path / "started"),
               INNER_REPORT=str(report))
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "tiers", "-p", "no:cacheprovider",
                           "-q", *args, "test_inner.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert report.is_file(), done.stdout + done.stderr
    outcomes = {}
    for line in report.read_text().splitlines():
        name, when, outcome, text = json.loads(line)
        outcomes[name] = ("passed", "") if outcome == "passed" else (when, text)
    return outcomes


def test_what_a_quick_test_may_not_need_is_refused_in_one_line(tmp_path: Path):
    """Declared fixtures, programs, `modelserve up` and connections off loopback all fail a
    test not marked slow with one line naming the need; slow tests are left alone."""
    outcomes = run_inner(tmp_path, INNER)
    mark = "; mark it slow (@pytest.mark.slow), or drop the need"
    assert outcomes == {
        "test_slow_may_use_it": ("passed", ""),
        "test_quick_using_it_after_a_slow_test_set_it_up": (
            "call", f"this test needs a pretend broker (fixture 'broker'){mark}"),
        "test_quick_starting_a_program_of_root": ("call", f"this test needs root (sudo){mark}"),
        "test_quick_starting_the_stack": (
            "call", "this test needs the serving stack (RabbitMQ, Celery workers, gunicorn)"
            + mark),
        "test_quick_swallowing_the_refusal": (
            "call", f"this test needs a network namespace (ip){mark} (the refusal was caught)"),
        "test_quick_connecting_off_loopback": (
            "call", f"this test needs the network (a connection to 192.0.2.1){mark}"),
        "test_quick_on_loopback_and_plain_programs": ("passed", ""),
        "test_slow_may_start_programs": ("passed", ""),
    }


def test_the_quick_selection_never_runs_a_declared_fixture(tmp_path: Path):
    """With `-m "not slow"` the first user of the fixture is a quick test: refused at setup,
    before the fixture's body starts anything."""
    outcomes = run_inner(tmp_path, INNER, "-m", "not slow")
    assert "test_slow_may_use_it" not in outcomes
    assert outcomes["test_quick_using_it_after_a_slow_test_set_it_up"] == (
        "setup", "this test needs a pretend broker (fixture 'broker'); mark it slow "
        "(@pytest.mark.slow), or drop the need")
    assert not (tmp_path / "started").exists()


@pytest.mark.parametrize(("argv", "need"), [
    (["/usr/sbin/rabbitmq-server"], "RabbitMQ"),
    (["ip", "netns", "exec", "h1", "sshd"], "a network namespace (ip)"),
    ([sys.executable, "-m", "gunicorn", "app"], "gunicorn"),
    (["python3", "-m", "modelserve", "worker", "--name", "w1"], "a Celery worker and RabbitMQ"),
    ([sys.executable, "-m", "modelserve", "models", "add", "b"], "root (the model sandbox)"),
    ([Path(sys.executable), "-m", "modelserve", "train"], "model training"),
    ([sys.executable, "-m", "modelserve", "models", "list"], None),
    (["git", "push", "production"], None),
    (["ssh-keygen", "-t", "ed25519"], None),
    ([], None),
])
def test_commands_are_told_by_what_they_start(argv, need):
    """Programs and `modelserve` commands are named by what they need; others pass."""
    assert needed_by_command(argv) == need


@pytest.mark.parametrize(("family", "address", "refused"), [
    (socket.AF_INET, ("127.0.0.1", 5672), False),
    (socket.AF_INET6, ("::1", 80, 0, 0), False),
    (socket.AF_INET, ("localhost", 80), False),
    (socket.AF_UNIX, "/run/docker.sock", False),
    (socket.AF_INET, ("10.0.0.5", 22), True),
    (socket.AF_INET, ("pypi.org", 443), True),
])
def test_connections_off_loopback_are_the_network(family, address, refused):
    """Loopback and local sockets are the machine itself; anything else is the network."""
    assert (needed_by_connection(family, address) is not None) == refused



def test_property_budgets_scale_down_for_the_quick_tier(monkeypatch):
    """MODELSERVE_TEST_EXAMPLES scales each budget (never below 20); nonsense is refused."""
    monkeypatch.delenv(EXAMPLES_VARIABLE, raising=False)
    assert scaled_examples(1500) == 1500
    monkeypatch.setenv(EXAMPLES_VARIABLE, "0.2")
    assert (scaled_examples(1500), scaled_examples(50)) == (300, 20)
    for nonsense in ("0", "1.5", "nan", "a fifth"):
        monkeypatch.setenv(EXAMPLES_VARIABLE, nonsense)
        with pytest.raises(pytest.UsageError, match=EXAMPLES_VARIABLE):
            scaled_examples(100)
