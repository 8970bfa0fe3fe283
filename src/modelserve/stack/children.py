"""Child processes of `modelserve up`: started in their own groups, stopped in order."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field


@dataclass
class Child:
    """One supervised process and how to start it again."""

    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen | None = field(default=None, repr=False)
    restarts: int = 0

    def start(self) -> subprocess.Popen:
        """Start (or restart) the process in a session of its own, so Ctrl-C reaches us only."""
        self.process = subprocess.Popen(  # noqa: S603 (our own interpreter, argument list)
            self.argv, env=self.env, start_new_session=True
        )
        return self.process

    def exited(self) -> int | None:
        """The exit code if the process has ended, else None."""
        return None if self.process is None else self.process.poll()

    def signal(self, sig: int) -> None:
        """Signal the process group, if it still runs."""
        if self.process is not None and self.process.poll() is None:
            signal_group(self.process.pid, sig)

    def wait_or_kill(self, deadline: float) -> None:
        """Wait for the process until a monotonic deadline, then kill its group."""
        if self.process is not None:
            wait_or_kill(self.process, max(deadline - time.monotonic(), 0.01))


def stop_all(children: list[Child], timeout: float = 10.0) -> None:
    """Ask every child to stop at once (SIGTERM), then kill those still running at the deadline."""
    for child in children:
        child.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        child.wait_or_kill(deadline)


def wait_or_kill(process: subprocess.Popen, grace: float) -> None:
    """Wait for a process up to `grace` seconds, then kill its whole group."""
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        signal_group(process.pid, signal.SIGKILL)
        process.wait(5)


def signal_group(pid: int, sig: int) -> None:
    """Signal a process group, ignoring one that is already gone."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def modelserve_argv(*args: str) -> list[str]:
    """The command line that runs `modelserve ARGS` with this very interpreter."""
    return [sys.executable, "-m", "modelserve", *args]
