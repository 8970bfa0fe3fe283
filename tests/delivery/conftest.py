"""The production side of the delivery tests: a home, delivery set up, a live stack."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cli_helpers import run_cli
from serving.conftest import prepare_home
from serving.stack_helpers import start_stack
from tiers import needs


@pytest.fixture(scope="session")
@needs("the production stack (RabbitMQ, Celery workers, gunicorn) and root")
def production(tmp_path_factory, shared_data: Path, pima_csv: Path):
    """A production home (seed model live), delivery set up, and its serving stack running."""
    home = tmp_path_factory.mktemp("production") / "home"
    # The session's template with that `models activate` already run on it (serving/conftest).
    prepare_home(home, shared_data, pima_csv, active="production")
    stack = start_stack(home, "--workers", "2")
    try:
        stack.wait_ready(workers=2)
        result = run_cli("delivery", "init", "--web-url", stack.url, home=home)
        assert result.returncode == 0, result.stderr
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def checkout(production, tmp_path: Path) -> Path:
    """A development clone of the production repository."""
    repo = production.home / "delivery" / "models.git"
    subprocess.run(["git", "clone", "-q", str(repo), str(tmp_path / "dev")], check=True,
                   capture_output=True)
    return tmp_path / "dev"
