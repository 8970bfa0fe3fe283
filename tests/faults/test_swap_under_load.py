"""A model swap and a rollback under load: no request fails, each answer is its version's."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from cli_helpers import run_cli
from serving.conftest import version_of_seed
from serving.stack_helpers import BoundedLoad, start_stack

from faults.conftest import LOAD_THREADS, LOAD_TIMEOUT, expected_probability, wait_for_answers


@pytest.mark.slow
def test_activate_and_rollback_under_load_fail_no_request(two_model_home, reliability):
    """Activate the development model, then roll back, while clients keep asking."""
    home = two_model_home
    production, development = (version_of_seed(home, name)
                                for name in ("production", "development"))
    wants = {version: expected_probability(home, version) for version in (production, development)}
    assert abs(wants[production] - wants[development]) > 1e-3, "the versions must be told apart"
    stack = start_stack(home, "--workers", "2")
    try:
        stack.wait_ready(workers=2)
        with BoundedLoad(stack.url, threads=LOAD_THREADS, seconds=120,
                         request_timeout=LOAD_TIMEOUT) as load:
            wait_for_answers(load, 20)
            _change(home, load, development, "models", "activate", development)
            _change(home, load, production, "models", "rollback")
    finally:
        assert stack.stop() == 0
    answers = load.answers
    failed = [a for a in answers if a.status != 200]
    by_version = Counter(a.body["model_version"] for a in answers if a.status == 200)
    wrong = [a for a in answers if a.status == 200
             and abs(a.body["probabilities"][0] - wants.get(a.body["model_version"], -1)) > 1e-4]
    reliability.record(
        "Faults", "model swap and rollback under load",
        note=f"{LOAD_THREADS} client threads, 2 workers; `models activate` then `models rollback`",
        sent=len(answers), correct=len(answers) - len(failed) - len(wrong), wrong=len(wrong),
        failed=len(failed),
        **{"answers per version": f"production {by_version[production]}, "
                                  f"development {by_version[development]}"},
    )
    assert not failed, failed[:5]
    assert not wrong, wrong[:5]
    assert set(by_version) == {production, development}, by_version


def _change(home, load: BoundedLoad, target: str, *command: str, timeout: float = 60) -> None:
    """Run a models command under load; wait until 20 answers in a row come from `target`."""
    result = run_cli(*command, home=home)
    assert result.returncode == 0, result.stderr
    changed_at = time.monotonic()
    deadline = changed_at + timeout
    while True:
        later = [a for a in load.snapshot() if a.started > changed_at]
        if len(later) >= 20 and all(_version(a) == target for a in later[-20:]):
            return
        assert time.monotonic() < deadline, f"{target} not served within {timeout} s"
        time.sleep(0.1)


def _version(answer) -> str | None:
    """The version an answer names (None for a failure)."""
    return answer.body.get("model_version") if isinstance(answer.body, dict) else None
