"""Two pushes at once: one model goes live at a time, and the last one pushed stays live."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from delivery import pushes
from delivery.gitops import Load, commit, git, push, registry_state, reported_live_version
from modelserve.config import load_settings
from modelserve.delivery.activate import post_receive
from modelserve.delivery.config import load_config
from modelserve.delivery.gate import NOTE_FILE, Update, pending_dir
from modelserve.registry import Registry

FORCED = ("force-deploy", "reason=concurrency test")


def clone(production, into: Path) -> Path:
    """Another development checkout of the production repository."""
    repo = production.home / "delivery" / "models.git"
    subprocess.run(["git", "clone", "-q", str(repo), str(into)], check=True, capture_output=True)
    return into


def candidate(checkout: Path, shared_data: Path, label: str) -> str:
    """Commit the development seed, nudged so that its files are new: a full gate run."""
    pushes.copy_seed(shared_data, "development", checkout)
    pushes.nudged(checkout, float(np.random.default_rng().uniform(1e-4, 1e-3)))
    return commit(checkout, label)


def pushed_together(*checkouts: Path) -> list[subprocess.CompletedProcess]:
    """Push several checkouts at the same moment; their results in the same order."""
    results: list = [None] * len(checkouts)
    start = threading.Barrier(len(checkouts))

    def run(index: int) -> None:
        start.wait()
        results[index] = push(checkouts[index], *FORCED)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(checkouts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    return results


def master_of(production) -> str:
    """The commit the production repository's master points at."""
    repo = production.home / "delivery" / "models.git"
    return git("rev-parse", "--verify", "--quiet", "master", cwd=repo, check=False).stdout.strip()


@pytest.mark.slow
def test_racing_pushes_deploy_exactly_the_winner(production, checkout, tmp_path, shared_data):
    """Two developers push different commits at once: git lets one through, and it is live."""
    other = clone(production, tmp_path / "other")
    ours, theirs = candidate(checkout, shared_data, "ours"), candidate(other, shared_data, "theirs")
    with Load(production.url) as load:
        results = pushed_together(checkout, other)
        time.sleep(1)
    won = [result for result in results if result.returncode == 0]
    assert len(won) == 1, [result.stderr for result in results]
    winner = ours if won[0] is results[0] else theirs
    assert master_of(production) == winner
    assert reported_live_version(won[0]) == registry_state(production.home)[0]
    assert not load.failures, load.failures[:5]


@pytest.mark.slow
def test_a_push_made_while_another_deploys_goes_live_after_it(production, checkout, tmp_path,
                                                             shared_data):
    """Push B lands while push A's hooks still run: A goes live, then B, and B stays live."""
    first = candidate(checkout, shared_data, "first")
    other = clone(production, tmp_path / "other")
    # B builds on A's commit, which it takes from A's checkout (production keeps no branch
    # other than master).
    git("fetch", "-q", str(checkout), "HEAD", cwd=other)
    git("checkout", "-q", "-B", "master", "FETCH_HEAD", cwd=other)
    second = candidate(other, shared_data, "second")
    results = {}
    with Load(production.url) as load:
        first_push = threading.Thread(target=lambda: results.update(a=push(checkout, *FORCED)))
        first_push.start()
        deadline = time.monotonic() + 120
        while master_of(production) != first and time.monotonic() < deadline:
            time.sleep(0.05)  # A's gate is done and its ref is in: its post-receive runs now
        results["b"] = push(other, *FORCED)
        first_push.join(300)
        time.sleep(1)
    assert results["a"].returncode == 0 and results["b"].returncode == 0, results
    assert master_of(production) == second
    live = registry_state(production.home)[0]
    assert reported_live_version(results["b"]) == live
    activations = [event for event in _history(production) if event["action"] == "activate"]
    assert [event["source"] for event in activations[-2:]] == [
        f"git push {first[:12]}", f"git push {second[:12]}"]
    assert not load.failures, load.failures[:5]


@pytest.mark.slow  # the production stack
def test_a_hook_that_waited_behind_a_newer_push_does_not_deploy(production, monkeypatch):
    """The activation lock is taken in push order only by chance: the branch tip decides."""
    settings = load_settings({"MODELSERVE_HOME": str(production.home)})
    config = load_config(settings)
    stale = "1" * 40
    pending = pending_dir(settings, stale)
    pending.mkdir(parents=True)
    (pending / NOTE_FILE).write_text(json.dumps({"commit": stale, "received_at": 0}))
    monkeypatch.chdir(production.home / "delivery" / "models.git")
    state, said = registry_state(production.home), []
    post_receive(settings, config, [Update("0" * 40, stale, "refs/heads/master")], said.append)
    assert said == [f"{stale[:12]}: superseded by {master_of(production)[:12]}, pushed "
                    "meanwhile; that push deploys its own model"]
    assert registry_state(production.home) == state and not pending.exists()


def _history(production) -> list[dict]:
    """The production registry's history events."""
    return Registry(production.home / "registry").history()
