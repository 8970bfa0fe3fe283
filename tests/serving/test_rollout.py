"""Shadow and canary rollouts through the whole stack: two web processes, Celery workers
scoring a named version beside the active one, RabbitMQ, the prediction log, the judge."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli
from conftest import TEST_EPOCHS
from delivery import pushes
from tiers import needs

from modelserve.config import load_settings
from modelserve.model.runtime import ModelRuntime
from modelserve.predlog.records import Role
from modelserve.predlog.store import PredictionLog
from modelserve.registry import Registry
from serving.conftest import as_json, prepare_home, version_of_seed
from serving.stack_helpers import http, post_json, running_stack

pytestmark = pytest.mark.slow  # real stacks: RabbitMQ, Celery workers, gunicorn
PREDICT = "/api/v1/predict"


@pytest.fixture(scope="module")
def home(tmp_path_factory, shared_data: Path, pima_csv: Path) -> Path:
    """A home of this module's own (its rollouts change nothing elsewhere)."""
    made = tmp_path_factory.mktemp("rollout") / "home"
    prepare_home(made, shared_data, pima_csv, ("production", "development"), active="production")
    return made


@pytest.fixture(scope="module")
def stack(home: Path):
    """Two web processes (a rollout is read, and judged, by each), two workers."""
    with running_stack(home, "--web-processes", "2", workers=2) as running:
        yield running


@pytest.fixture
def seeds(home: Path) -> tuple[str, str]:
    """The live (production) and the candidate (development) versions."""
    return version_of_seed(home, "production"), version_of_seed(home, "development")


def prediction_log(home: Path) -> PredictionLog:
    """The stack's prediction log, read from the test."""
    path = load_settings({"MODELSERVE_HOME": str(home)}).prediction_log_file
    assert path is not None
    return PredictionLog(path)


def answers(url: str, rows: list[np.ndarray], key: str | None = None) -> list[dict]:
    """One answer per row block, 8 at a time (all must be 200)."""
    headers = {"X-Routing-Key": key} if key else None

    def one(block: np.ndarray) -> dict:
        answer = post_json(f"{url}{PREDICT}", {"rows": block.tolist()}, headers=headers)
        assert answer.status == 200, answer.body
        return as_json(answer)

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, rows))


def shadow_answers(home: Path, count: int, timeout: float = 30) -> dict[str, np.ndarray]:
    """Wait until the log holds `count` shadow answers; their outputs by prediction id."""
    deadline = time.monotonic() + timeout
    while True:
        with prediction_log(home).connect() as connection:
            found = {pid: np.frombuffer(blob, np.float32).reshape(-1, width)
                     for pid, width, blob in connection.execute(
                         "SELECT prediction_id, width, outputs FROM answers WHERE role = ? "
                         "AND outputs IS NOT NULL", (Role.SHADOW.value,))}
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def last_event(home: Path, action: str, timeout: float = 60) -> dict:
    """Wait until the model's last history event is `action`; that event."""
    registry = Registry(home / "registry")
    deadline = time.monotonic() + timeout
    while registry.history()[-1]["action"] != action and time.monotonic() < deadline:
        time.sleep(0.5)
    return registry.history()[-1]


def test_a_shadow_is_scored_by_the_workers_and_answers_nobody(stack, home, seeds, dataset):
    """Every caller gets live's answer; the workers score each copy with the candidate,
    exactly as the candidate scores those rows here; the evidence shows their agreement."""
    live, candidate = seeds
    begun = run_cli("models", "shadow", "diabetes", candidate, "--policy",
                    "min_requests=100000", home=home)
    assert begun.returncode == 0, begun.stderr
    time.sleep(0.5)  # each web process re-reads the rollout every 0.25 s
    blocks = [dataset.features[i:i + 1 + i % 3] for i in range(0, 240, 4)]
    given = answers(stack.url, blocks)
    assert {answer["model_version"] for answer in given} == {live}
    shadowed = shadow_answers(home, len(given))
    assert len(shadowed) == len(given)
    expected = ModelRuntime.load(Registry(home / "registry").get(candidate).path)
    for block, answer in zip(blocks, given, strict=True):
        assert np.allclose(shadowed[answer["prediction_id"]],
                           expected.score(block).outputs, atol=1e-6)
    shown = run_cli("models", "rollout", "diabetes", home=home)
    assert f"agreement on {sum(len(b) for b in blocks)} rows" in shown.stdout, shown.stdout
    assert "verdict: wait (min_requests" in shown.stdout, shown.stdout
    roles = {(item["version"], item["role"]) for item in as_json(http(
        "GET", f"{stack.url}/api/v1/models/diabetes/live"))["versions"]}
    assert {(live, "live"), (candidate, "shadow")} <= roles
    assert run_cli("models", "abort", "diabetes", home=home).returncode == 0


def test_a_failing_shadow_costs_no_live_error_and_is_aborted(stack, home, seeds, dataset,
                                                             shared_data, tmp_path):
    """A stored candidate whose files were damaged afterwards: every live answer is 200, the
    workers' copies fail, and the judge aborts on the error rate within seconds."""
    live, _ = seeds
    seed = tmp_path / "seed"
    seed.mkdir()
    pushes.copy_seed(shared_data, "development", seed)
    pushes.nudged(seed, 5e-4)
    added = run_cli("model", "import-legacy", seed / "model.json", seed / "model.h5",
                    home=home)
    assert added.returncode == 0, added.stderr
    registry = Registry(home / "registry")
    broken = registry.history()[-1]["version"]
    for name in ("plan.npz", "model.keras"):
        (registry.get(broken).path / name).write_bytes(b"not a model")
    assert run_cli("models", "shadow", "diabetes", broken, home=home).returncode == 0
    time.sleep(0.5)
    given = answers(stack.url, [dataset.features[i:i + 1] for i in range(60)])
    assert {answer["model_version"] for answer in given} == {live}
    event = last_event(home, "abort")
    assert event["action"] == "abort" and event["version"] == broken, event
    assert "max_error_rate_increase" in event["reason"], event
    assert registry.active_version() == live
    figures = {(item["version"], item["role"]): item for item in as_json(http(
        "GET", f"{stack.url}/api/v1/models/diabetes/live"))["versions"]}
    assert figures[(live, "live")]["errors"] == 0
    assert figures[(broken, "shadow")]["errors"] >= 20


@pytest.fixture(scope="module")
@needs("model training")
def shuffled_bundle(tmp_path_factory, dataset) -> Path:
    """A model trained, as ours are, on the Pima rows with their labels shuffled."""
    from modelserve.model.training import TrainingConfig, train_bundle

    labels = np.random.default_rng(11).permutation(dataset.labels)
    out = tmp_path_factory.mktemp("shuffled") / "bundle"
    train_bundle(replace(dataset, labels=labels, sha256="shuffled"),
                 TrainingConfig(epochs=TEST_EPOCHS), out)
    return out


def test_a_shadow_trained_on_shuffled_labels_is_aborted_on_feedback(stack, home, seeds,
                                                                    dataset, shuffled_bundle):
    """It answers every copy without an error, but the truth fed back shows it worse than
    live by more than the policy allows: the judge aborts it on the metric; live stays."""
    live, _ = seeds
    added = run_cli("models", "add", shuffled_bundle, home=home)
    assert added.returncode == 0, added.stderr
    shuffled = Registry(home / "registry").history()[-1]["version"]
    begun = run_cli("models", "shadow", "diabetes", shuffled, "--policy", "min_requests=50",
                    "--policy", "min_labelled=400", home=home)
    assert begun.returncode == 0, begun.stderr
    time.sleep(0.5)
    blocks = [dataset.features[i:i + 8] for i in range(0, 480, 8)]
    given = answers(stack.url, blocks)
    assert {answer["model_version"] for answer in given} == {live}
    feedback = [{"prediction_id": answer["prediction_id"], "row": row,
                 "label": int(dataset.labels[i * 8 + row])}
                for i, answer in enumerate(given) for row in range(8)]
    sent = post_json(f"{stack.url}/api/v1/models/diabetes/feedback", {"feedback": feedback})
    assert sent.status == 200, sent.body
    event = last_event(home, "abort")
    assert event["action"] == "abort" and event["version"] == shuffled, event
    assert "max_metric_regression" in event["reason"], event
    assert Registry(home / "registry").active_version() == live


def test_a_canary_answers_its_share_keys_stick_and_a_restart_carries_on(stack, home, seeds,
                                                                         dataset):
    """10%: 10% +- 3% of 1,000 answers are the candidate's (either web process); a routing
    key keeps to one version; after the stack restarts, the canary still answers."""
    live, candidate = seeds
    begun = run_cli("models", "canary", "diabetes", candidate, "--percent", "10", home=home)
    assert begun.returncode == 0, begun.stderr
    time.sleep(0.5)
    row = dataset.features[:1]
    versions = [answer["model_version"] for answer in answers(stack.url, [row] * 1000)]
    assert set(versions) == {live, candidate}
    assert 70 <= versions.count(candidate) <= 130, versions.count(candidate)
    for key in (f"client-{i}" for i in range(30)):
        assert len({a["model_version"] for a in answers(stack.url, [row] * 4, key)}) == 1, key
    stack.stop()
    with running_stack(home, "--web-processes", "2", workers=2) as again:
        after = [answer["model_version"] for answer in answers(again.url, [row] * 300)]
        assert candidate in after and live in after
        assert run_cli("models", "abort", "diabetes", home=home).returncode == 0
