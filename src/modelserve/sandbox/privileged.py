"""The root entry point a non-root serving account reaches through its sudo rule.

`sudo -n python -I -m modelserve.sandbox.privileged JOB`: JOB is one of the fixed job names,
and nothing else comes from the caller but the job's stdin, passed through unread to the
confined job (whose stdout goes straight back). The limits are this side's own, and so is the
wall time: the caller, another uid, cannot kill what runs here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import FrameType

from modelserve.sandbox.policy import JOB_LIMITS, JOBS, Backend, Facts, choose_backend
from modelserve.sandbox.runner import TOOLS_PATH, backend_command, gather_facts

EXIT_REFUSED = 3


def root_facts() -> Facts:
    """The facts as root sees them; an override from the caller's environment is ignored."""
    facts = gather_facts({})
    return Facts(facts.uid, facts.user, facts.systemd_booted, facts.has_systemd_run,
                 facts.has_unshare, facts.has_sudo, sudo_rule=False)


def main(argv: list[str]) -> int:
    """Run one job confined, with this side's limits and wall time; return its exit status."""
    if len(argv) != 1 or argv[0] not in JOBS:
        print(f"refused: the job must be one of {', '.join(JOBS)}", file=sys.stderr)
        return EXIT_REFUSED
    if os.geteuid() != 0:
        print("refused: modelserve.sandbox.privileged runs as root (through sudo)",
              file=sys.stderr)
        return EXIT_REFUSED
    choice = choose_backend(root_facts())
    if choice.backend not in (Backend.SYSTEMD, Backend.NAMESPACES):
        print(choice.reason, file=sys.stderr)
        return EXIT_REFUSED
    limits = JOB_LIMITS[argv[0]]
    command = backend_command(choice.backend, argv[0], limits, "")
    # stdin, stdout and stderr are the caller's pipes: the job reads and answers on them.
    child = subprocess.Popen(command, env={"PATH": TOOLS_PATH, "LANG": "C.UTF-8"})  # noqa: S603
    _stop_child_on(child, (signal.SIGTERM, signal.SIGHUP, signal.SIGINT))
    deadline = time.monotonic() + limits.wall_seconds
    while child.poll() is None:
        if time.monotonic() > deadline:
            child.kill()  # the job, PID 1 of its namespace, dies with it (pdeathsig)
            child.wait()
            print(f"the model job took longer than {limits.wall_seconds:.0f} s; it was stopped",
                  file=sys.stderr)
            return 128 + signal.SIGKILL
        time.sleep(0.05)
    return child.returncode if child.returncode >= 0 else 128 - child.returncode


def _stop_child_on(child: subprocess.Popen, signals: tuple[int, ...]) -> None:
    """Kill the job when sudo relays the caller's stop (its timeout, a Ctrl-C)."""
    def stop(number: int, _frame: FrameType | None) -> None:
        child.kill()
        child.wait()
        sys.exit(128 + number)

    for number in signals:
        signal.signal(number, stop)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
