"""`git push -o shadow` and `-o canary=N` on the real production stack: the candidate passes
the same gate, meets live traffic instead of replacing it, and the judge in the web
processes promotes it once the evidence (feedback included) is in."""

from __future__ import annotations

import time

import numpy as np
import pytest
from cli_helpers import run_cli
from serving.stack_helpers import ROW, post_json

from delivery import pushes
from delivery.gitops import commit_and_push, registry_state
from modelserve.registry import Registry
from modelserve.rollout.state import RolloutStore

pytestmark = pytest.mark.slow  # the production stack


def new_candidate(shared_data, checkout) -> None:
    """The development seed with new files (a version not stored yet) in the checkout."""
    pushes.copy_seed(shared_data, "development", checkout)
    pushes.nudged(checkout, float(np.random.default_rng().uniform(1e-4, 1e-3)))


def candidate_of(home) -> str:
    """The version the rollout under way is about."""
    rollout = RolloutStore(home / "registry").read()
    assert rollout is not None, "no rollout under way"
    return rollout.candidate


def test_a_shadow_push_answers_nobody_then_is_promoted_on_feedback(production, checkout,
                                                                   shared_data, dataset):
    """Accepted, not live; every caller gets live's answers while the shadow gets copies;
    labels arrive; within seconds the judge activates the candidate, on the record."""
    live = registry_state(production.home)[0]
    new_candidate(shared_data, checkout)
    result = commit_and_push(checkout, "shadow it first", "shadow", "policy.min_requests=40",
                             "policy.min_labelled=300", "policy.max_metric_regression=0.05")
    assert result.returncode == 0, result.stderr
    assert "rollout: not live yet" in result.stderr and "shadow: " in result.stderr, \
        result.stderr
    candidate = candidate_of(production.home)
    assert registry_state(production.home)[0] == live
    answers = [post_json(f"{production.url}/api/v1/predict",
                         {"rows": dataset.features[i:i + 10].tolist()}).json()
               for i in range(0, 400, 10)]
    assert {answer["model_version"] for answer in answers} == {live}
    feedback = [{"prediction_id": answer["prediction_id"], "row": row,
                 "label": int(dataset.labels[i * 10 + row])}
                for i, answer in enumerate(answers) for row in range(10)]
    sent = post_json(f"{production.url}/api/v1/models/diabetes/feedback",
                     {"feedback": feedback})
    assert sent.status == 200, sent.body
    registry = Registry(production.home / "registry")
    deadline = time.monotonic() + 60
    while registry.active_version() != candidate and time.monotonic() < deadline:
        time.sleep(0.5)
    event = registry.history()[-1]
    assert registry.active_version() == candidate, (event, run_cli(
        "models", "rollout", "diabetes", home=production.home).stdout)
    assert event["source"] == "rollout"
    assert event["reason"].startswith("promoted from shadow: evidence: accuracy"), event
    assert post_json(f"{production.url}/api/v1/predict", {"rows": [ROW]}).json()[
        "model_version"] == candidate


def test_a_canary_push_answers_its_share_then_is_aborted_by_hand(production, checkout,
                                                                 shared_data):
    """-o canary=30: about 30% of answers are the candidate's, stamped with its version;
    `modelserve models abort` ends it and live answers everything again."""
    live = registry_state(production.home)[0]
    new_candidate(shared_data, checkout)
    result = commit_and_push(checkout, "canary it", "canary=30")
    assert result.returncode == 0, result.stderr
    candidate = candidate_of(production.home)
    versions = [post_json(f"{production.url}/api/v1/predict", {"rows": [ROW]}).json()[
        "model_version"] for _ in range(300)]
    assert set(versions) == {live, candidate}
    assert 0.22 <= versions.count(candidate) / len(versions) <= 0.38, versions.count(candidate)
    aborted = run_cli("models", "abort", "diabetes", "--reason", "seen enough",
                      home=production.home)
    assert aborted.returncode == 0 and "is aborted" in aborted.stdout, aborted.stderr
    time.sleep(0.5)  # the web processes re-read the rollout every 0.25 s
    after = {post_json(f"{production.url}/api/v1/predict", {"rows": [ROW]}).json()[
        "model_version"] for _ in range(50)}
    assert after == {live}
    assert Registry(production.home / "registry").history()[-1]["action"] == "abort"


def test_bad_rollout_options_are_refused_before_anything_is_stored(production, checkout,
                                                                   shared_data):
    """-o canary without a share, or both modes: one `remote:` line; nothing changes."""
    state = registry_state(production.home)
    new_candidate(shared_data, checkout)
    for options, words in ((("canary",), "needs its share"),
                           (("shadow", "canary=5"), "not both")):
        result = commit_and_push(checkout, "bad options", *options)
        assert result.returncode != 0 and words in result.stderr, result.stderr
        assert registry_state(production.home) == state
