"""Run the real command line in a fresh process and check its refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_cli(*args: str | Path, home: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m modelserve ARGS` in a fresh process with its own MODELSERVE_HOME."""
    env = dict(os.environ, MODELSERVE_HOME=str(home))
    return subprocess.run(
        [sys.executable, "-m", "modelserve", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Assert a clean refusal: non-zero exit, one 'Error:' line naming the fragments."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert "Error:" in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
