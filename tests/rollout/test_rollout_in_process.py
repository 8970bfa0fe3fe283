"""Rollouts through the app in one process: the commands begin them, requests meet the
candidate, feedback arrives, the judge promotes or aborts, and a restart carries on.

Scoring is in-process (the shadow's copies on a thread of their own); the same paths over
RabbitMQ and the workers are tests/serving/test_rollout.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from modelserve.commands.models import models
from modelserve.config import Settings, load_settings
from modelserve.model.check import check_bundle
from modelserve.model.dataset import import_dataset
from modelserve.predlog.records import Role
from modelserve.registry import Registry
from modelserve.rollout.policy import Decision
from modelserve.rollout.state import RolloutError, RolloutStore
from modelserve.web import create_app, metrics

PREDICT = "/api/v1/models/diabetes/predict"
FEEDBACK = "/api/v1/models/diabetes/feedback"


def check_here(staged: Path) -> None:
    """The sandbox's check and plan, run in this process (the seeds are our test data)."""
    check_bundle(staged, plan_out=staged / "plan.npz")


@pytest.fixture
def home(tmp_path: Path, legacy_bundle: Path, development_bundle: Path, pima_csv: Path):
    """A home: the Pima data, the production seed live, the development seed stored; the
    judge is run by the tests, not by a thread."""
    settings = load_settings({"MODELSERVE_HOME": str(tmp_path / "home"),
                              "MODELSERVE_ROLLOUT_JUDGE_SECONDS": "0"})
    import_dataset(pima_csv, settings.data_dir)
    registry = Registry(settings.registry_dir, checker=check_here)
    live = registry.add(legacy_bundle, source="test").version
    registry.activate(live, source="test")
    candidate = registry.add(development_bundle, source="test").version
    return settings, registry, live, candidate


def cli(settings: Settings, *args: str) -> str:
    """`modelserve models ARGS` in-process; its output (a refusal raises)."""
    result = CliRunner().invoke(models, list(args), obj=settings)
    if result.exception is not None:
        raise result.exception
    return result.output


def serve(settings: Settings):
    """An in-process app on the home, and its service."""
    app = create_app(settings, inline=True)
    return app.test_client(), app.extensions["modelserve"]


def predict(client, rows: np.ndarray, key: str | None = None) -> dict:
    """One named-model answer (200 expected)."""
    headers = {"X-Routing-Key": key} if key else {}
    answer = client.post(PREDICT, json={"rows": rows.tolist()}, headers=headers)
    assert answer.status_code == 200, answer.data
    return answer.get_json()


def copies(version: str, outcome: str = "answered") -> float:
    """This process's count of shadow copies of a version with an outcome."""
    return metrics.REGISTRY.get_sample_value("modelserve_shadow_copies_total", {
        "model": "diabetes", "version": version, "outcome": outcome}) or 0.0


def logged(service, role: Role, count: int) -> int:
    """Wait (10 s at most) until the log holds `count` answers in a role; how many it has."""
    deadline = time.monotonic() + 10
    while True:
        service.log_writer().flush()
        found = sum(item.requests for item in service.prediction_log.traffic("diabetes", 0)
                    if item.role is role)
        if found >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_a_shadow_that_does_well_on_feedback_is_promoted(home, dataset):
    """Every request copied; callers only ever see live; labels arrive; the judge promotes,
    and the history says on which figures."""
    settings, registry, live, candidate = home
    said = cli(settings, "shadow", "diabetes", candidate[:8], "--policy", "min_requests=50",
               "--policy", "min_labelled=500")
    assert "gets a copy of 100% of the requests" in said
    client, service = serve(settings)
    copied_before = copies(candidate)
    try:
        answers = [predict(client, dataset.features[i:i + 10]) for i in range(0, 760, 10)]
        assert {answer["model_version"] for answer in answers} == {live}
        assert logged(service, Role.SHADOW, len(answers)) == len(answers)
        waiting = service.judge_rollouts()
        assert [(s.verdict.decision, s.verdict.rule) for s in waiting] == [
            (Decision.WAIT, "min_labelled")]
        feedback = [{"prediction_id": answer["prediction_id"], "row": row,
                     "label": int(dataset.labels[i * 10 + row])}
                    for i, answer in enumerate(answers) for row in range(10)]
        assert client.post(FEEDBACK, json={"feedback": feedback}).status_code == 200
        shown = cli(settings, "rollout", "diabetes")
        assert "agreement on 760 rows" in shown and "760 labelled rows" in shown
        rollout = client.get("/api/v1/models/diabetes/live").get_json()["rollout"]
        assert (rollout["mode"], rollout["candidate"], rollout["live"]) == (
            "shadow", candidate, live)
        assert rollout["agreement"]["rows"] == 760 and rollout["verdict"]["decision"] == "promote"
        assert 'id="rollout-notice"' in client.get("/models/diabetes/accuracy").get_data(
            as_text=True)
        page = client.get("/models/diabetes/rollout").get_data(as_text=True)
        assert 'id="rollout" data-mode="shadow" data-decision="promote"' in page
        assert "Agreement with live on 760 rows" in page
        assert page.count('data-met="true"') == 6  # every rule of the policy
        assert '<tr data-side="candidate">' in page
        exposed = client.get("/metrics").get_data(as_text=True)
        assert (f'modelserve_rollout_percent{{candidate="{candidate}",live="{live}",'
                f'mode="shadow",model="diabetes"}} 100.0') in exposed
        assert copies(candidate) - copied_before == 76
        judged = service.judge_rollouts()
    finally:
        service.close()
    status = judged[0]
    assert status.verdict.decision is Decision.PROMOTE, status.verdict
    assert status.candidate is not None and status.live is not None
    assert status.candidate.value >= status.live.value - 0.02
    assert registry.active_version() == candidate
    last = registry.history()[-1]
    assert last["action"] == "activate" and last["source"] == "rollout"
    assert last["reason"].startswith("promoted from shadow: evidence: accuracy")
    assert RolloutStore(registry.root).read() is None
    client, service = serve(settings)
    try:
        page = client.get("/models/diabetes/rollout").get_data(as_text=True)
    finally:
        service.close()
    assert 'id="no-rollout"' in page and "promoted from shadow: evidence" in page


def test_a_failing_shadow_is_aborted_and_costs_live_nothing(home, dataset):
    """A candidate whose files are damaged after it was stored: its copies fail, every live
    answer is still 200, and the judge aborts on errors after a few requests."""
    settings, registry, live, candidate = home
    cli(settings, "shadow", "diabetes", candidate)
    stored = registry.get(candidate).path
    for damaged in ("plan.npz", "model.keras"):
        (stored / damaged).write_bytes(b"not a model")
    client, service = serve(settings)
    try:
        answers = [predict(client, dataset.features[i:i + 1]) for i in range(30)]
        assert {answer["model_version"] for answer in answers} == {live}
        assert logged(service, Role.SHADOW, 30) == 30
        judged = service.judge_rollouts()
    finally:
        service.close()
    assert judged[0].live is not None and judged[0].live.errors == 0
    assert judged[0].candidate is not None and judged[0].candidate.errors == 30
    assert (judged[0].verdict.decision, judged[0].verdict.rule) == (
        Decision.ABORT, "max_error_rate_increase")
    assert registry.active_version() == live
    assert registry.history()[-1]["action"] == "abort"
    assert RolloutStore(registry.root).read() is None


def test_a_canary_answers_its_share_keys_stick_and_a_restart_carries_on(home, dataset):
    """10%: 10% +- 3% of 1,000 answers come from the candidate, stamped with its version; a
    routing key always gets one version; a new process serves the same rollout."""
    settings, registry, live, candidate = home
    cli(settings, "canary", "diabetes", candidate, "--percent", "10")
    client, service = serve(settings)
    try:
        row = dataset.features[:1]
        versions = [predict(client, row)["model_version"] for _ in range(1000)]
        by_key = {f"client-{i}": {predict(client, row, f"client-{i}")["model_version"]
                                  for _ in range(4)} for i in range(40)}
        assert logged(service, Role.CANARY, 70) >= 70
    finally:
        service.close()
    assert set(versions) == {live, candidate}
    assert 70 <= versions.count(candidate) <= 130
    assert all(len(seen) == 1 for seen in by_key.values())
    client, service = serve(settings)  # a restart: the rollout is read from its file again
    try:
        again = [predict(client, row)["model_version"] for _ in range(300)]
        judged = service.judge_rollouts()
    finally:
        service.close()
    assert candidate in again and live in again
    assert judged[0].verdict.decision is Decision.WAIT  # 200 canary requests not all in yet
    assert registry.active_version() == live


def test_the_commands_refuse_in_one_line(home):
    """No second rollout, no rollout of the live version, nothing to end: one line each."""
    settings, _registry, live, candidate = home
    with pytest.raises(RolloutError, match="already the live version"):
        cli(settings, "canary", "diabetes", live)
    with pytest.raises(RolloutError, match="no rollout is under way"):
        cli(settings, "abort", "diabetes")
    with pytest.raises(RolloutError, match="unknown policy setting 'speed'"):
        cli(settings, "shadow", "diabetes", candidate, "--policy", "speed=1")
    cli(settings, "shadow", "diabetes", candidate)
    with pytest.raises(RolloutError, match="already has a shadow rollout"):
        cli(settings, "canary", "diabetes", candidate)
    assert "no answers yet" in cli(settings, "rollout", "diabetes")
    assert "is aborted" in cli(settings, "abort", "diabetes", "--reason", "changed my mind")
    assert "no rollout under way" in cli(settings, "rollout", "diabetes")
