"""The quick tier (`./dev quick`: the tests not marked slow) and the guard that keeps it honest.

A test that is not marked slow may not need root, a service (RabbitMQ, gunicorn, Celery
workers, sshd, Docker, a network namespace, Chromium), the network, model training or a package
only ./dev test installs (and should take seconds). The guard holds in every run, the full one
included, so that CI keeps the tier clean: such a test fails with one line saying what it needs
and to mark it slow.
- A fixture that brings up such a thing is declared with `@needs("what")` (under
  `@pytest.fixture`); a quick test that uses it, even indirectly, fails before it starts (or
  before the test's body, when a slow test of the full run started it first).
- While a quick test sets up and runs, an audit hook refuses, in the test process, the programs
  of those services, `python -m modelserve up|web|worker|train|...`, and connections off
  loopback; a refusal the test catches still fails it.
Children are not watched: a CLI subprocess that reaches the sandbox fails on its own when the
quick tier runs as an account other than root, as it must be able to.
(PYTEST_DONT_REWRITE: conftest.py imports `needs` before pytest loads this as a plugin.)
"""

from __future__ import annotations

import ipaddress
import math
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import PurePath
from typing import TypeVar

import pytest

F = TypeVar("F", bound=Callable)
NEEDS_ATTRIBUTE = "modelserve_needs"
SANDBOX = "root (the model sandbox)"
EXAMPLES_VARIABLE = "MODELSERVE_TEST_EXAMPLES"
MIN_EXAMPLES = 20
# Programs that start a service, need root or reach another host, and what to call them.
PROGRAMS = {
    "rabbitmq-server": "RabbitMQ", "rabbitmqctl": "RabbitMQ", "rabbitmq-diagnostics": "RabbitMQ",
    "gunicorn": "gunicorn", "celery": "a Celery worker", "sshd": "sshd",
    "ssh": "another host (ssh)", "docker": "Docker", "dockerd": "Docker",
    "docker-compose": "Docker", "debootstrap": "root (debootstrap)",
    "ip": "a network namespace (ip)", "unshare": "root (unshare)", "nsenter": "root (nsenter)",
    "chromium": "Chromium", "chromedriver": "Chromium", "wrk": "a load generator (wrk)",
    "sudo": "root (sudo)", "runuser": "root (runuser)", "useradd": "root (useradd)",
    "userdel": "root (userdel)", "usermod": "root (usermod)", "systemd-run": "root (systemd-run)",
    "systemctl": "systemd",
    # Debian packages that only ./dev test installs (./dev quick installs nothing).
    "cloud-init": "cloud-init (a package ./dev test installs)",
    "rsync": "rsync (a package ./dev test installs)",
}
PYTHON_MODULES = {"gunicorn": "gunicorn", "celery": "a Celery worker",
                  "playwright": "Chromium (playwright)"}
# `python -m modelserve ...` commands that start a service, train, or check a model in the sandbox.
MODELSERVE_COMMANDS = {
    ("up",): "the serving stack (RabbitMQ, Celery workers, gunicorn)",
    ("web",): "gunicorn", ("worker",): "a Celery worker and RabbitMQ",
    ("train",): "model training", ("sandbox",): SANDBOX, ("models", "add"): SANDBOX,
    ("model", "import"): SANDBOX, ("model", "import-legacy"): SANDBOX,
}


def scaled_examples(budget: int) -> int:
    """A property test's examples: its budget times MODELSERVE_TEST_EXAMPLES (./dev quick: 0.2)."""
    text = os.environ.get(EXAMPLES_VARIABLE, "1")
    try:
        scale = float(text)
    except ValueError:
        scale = math.nan
    if not 0 < scale <= 1:  # also refuses NaN
        raise pytest.UsageError(f"{EXAMPLES_VARIABLE}={text!r}: give a fraction in (0, 1] of "
                                "each property test's examples")
    return max(MIN_EXAMPLES, round(budget * scale))


def needs(what: str) -> Callable[[F], F]:
    """Declare that a fixture needs `what` (a service, root, training): slow tests only."""

    def declare(function: F) -> F:
        setattr(function, NEEDS_ATTRIBUTE, what)
        return function

    return declare


def needed_by_command(argv: Sequence[str | os.PathLike]) -> str | None:
    """What a command line needs that the quick tier may not have, or None."""
    words = [os.fspath(word) for word in argv]
    if not words:
        return None
    program = PurePath(words[0]).name
    if program in PROGRAMS:
        return PROGRAMS[program]
    if not program.startswith("python") or "-m" not in words:
        return None
    module, *rest = words[words.index("-m") + 1:] or [""]
    if module.split(".")[0] in PYTHON_MODULES:
        return PYTHON_MODULES[module.split(".")[0]]
    if module != "modelserve":
        return None
    command = tuple(word for word in rest if not word.startswith("-"))
    return MODELSERVE_COMMANDS.get(command[:1]) or MODELSERVE_COMMANDS.get(command[:2])


def needed_by_connection(family: int, address: object) -> str | None:
    """'the network' for a TCP/UDP connection off loopback, else None."""
    if family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple):
        return None
    host = str(address[0])
    if host == "localhost":
        return None
    try:
        loopback = ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        loopback = False
    return None if loopback else f"the network (a connection to {host})"


class Guard:
    """The audit hook's state: on while a test not marked slow sets up and runs."""

    def __init__(self) -> None:
        self.active = False
        self.refused: list[str] = []
        self._lock = threading.Lock()

    def audit(self, event: str, args: tuple) -> None:
        """Refuse, while active, what the quick tier may not need (sys.addaudithook)."""
        if not self.active or event not in ("subprocess.Popen", "os.posix_spawn", "os.exec",
                                            "os.system", "socket.connect"):
            return
        what = self._needed(event, args)
        if what is not None:
            with self._lock:
                self.refused.append(what)
            pytest.fail(refusal(what), pytrace=False)

    @staticmethod
    def _needed(event: str, args: tuple) -> str | None:
        """What the audited operation needs, or None."""
        if event == "socket.connect":
            return needed_by_connection(args[0].family, args[1])
        if event == "os.system":
            return needed_by_command(os.fsdecode(args[0]).split()[:1])
        argv = args[1] or [args[0]]
        if isinstance(argv, (str, bytes)):  # a shell command line
            argv = os.fsdecode(argv).split()
        return needed_by_command(list(argv))


def refusal(what: str) -> str:
    """The one line a test not marked slow gets when it reaches for `what`."""
    return f"this test needs {what}; mark it slow (@pytest.mark.slow), or drop the need"


GUARD = Guard()
sys.addaudithook(GUARD.audit)


def declared_need(item: pytest.Item) -> str | None:
    """The first `@needs` among the fixtures a test uses, directly or not, as one phrase."""
    info = getattr(item, "_fixtureinfo", None)  # pytest's record of the definitions it uses
    if info is None:  # not a test function: no fixtures
        return None
    for name in info.names_closure:
        definitions = info.name2fixturedefs.get(name)
        if definitions:
            what = getattr(definitions[-1].func, NEEDS_ATTRIBUTE, None)
            if what is not None:
                return f"{what} (fixture {name!r})"
    return None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """Watch the setup of a test not marked slow (pytest_fixture_setup refuses declared needs)."""
    if item.get_closest_marker("slow") is not None:
        return (yield)
    with _watching():
        return (yield)


@pytest.hookimpl(tryfirst=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef) -> None:
    """Refuse a declared need before its fixture starts anything, for a test not marked slow."""
    what = getattr(fixturedef.func, NEEDS_ATTRIBUTE, None)
    if GUARD.active and what is not None:
        pytest.fail(refusal(f"{what} (fixture {fixturedef.argname!r})"), pytrace=False)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Refuse a declared need that a slow test set up before (the full run), then watch."""
    if item.get_closest_marker("slow") is not None:
        return (yield)
    what = declared_need(item)
    if what is not None:
        pytest.fail(refusal(what), pytrace=False)
    with _watching():
        return (yield)


@contextmanager
def _watching() -> Iterator[None]:
    """Turn the guard on for a block; fail the block if something refused was swallowed."""
    GUARD.refused.clear()
    GUARD.active = True
    try:
        yield
    finally:
        GUARD.active = False
    if GUARD.refused:
        pytest.fail(refusal(GUARD.refused[0]) + " (the refusal was caught)", pytrace=False)
