"""Run a command in a fresh wrapper process and measure it: peak memory and wall time.

The wrapper's RUSAGE_CHILDREN covers only the command and the processes it waited for (a
checker it started, say), not whatever else the test session ran before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

_WRAPPER = """
import json, resource, subprocess, sys, time
started = time.monotonic()
done = subprocess.run(sys.argv[3:], timeout=float(sys.argv[2]), check=False)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
with open(sys.argv[1], "w") as out:
    json.dump({"peak_kib": peak, "seconds": time.monotonic() - started}, out)
sys.exit(done.returncode)
"""


@dataclass(frozen=True)
class Measured:
    """A finished command: its exit code, output, peak resident memory and wall time."""

    returncode: int
    stdout: str
    stderr: str
    peak_mib: float
    seconds: float


def run_modelserve_measured(*args: str | Path, home: Path, timeout: float = 300) -> Measured:
    """Run `python -m modelserve ARGS` with its own home; measure it and its children."""
    env = dict(os.environ, MODELSERVE_HOME=str(home))
    with tempfile.TemporaryDirectory() as scratch:
        figures = Path(scratch) / "figures.json"
        command = [sys.executable, "-m", "modelserve", *map(str, args)]
        done = subprocess.run(  # noqa: S603 - our own interpreter, an argument list
            [sys.executable, "-c", _WRAPPER, str(figures), str(timeout), *command],
            capture_output=True, text=True, env=env, timeout=timeout + 30, check=False,
        )
        measured = json.loads(figures.read_text())
    return Measured(done.returncode, done.stdout, done.stderr, measured["peak_kib"] / 1024,
                    measured["seconds"])
