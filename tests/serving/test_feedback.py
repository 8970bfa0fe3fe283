"""Prediction ids, feedback and the live metric through the whole stack (two web processes,
Celery workers, RabbitMQ), and a prediction log on a full disk costing no prediction."""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from modelserve.predlog import ids
from serving.conftest import as_json, prepare_home
from serving.stack_helpers import http, post_json, running_stack, start_stack

pytestmark = pytest.mark.slow  # real stacks: RabbitMQ, Celery workers, gunicorn
REQUESTS = 240  # bounded: a few seconds of load


def answered(url: str, dataset, count: int = REQUESTS) -> list[tuple[int, dict]]:
    """`count` predictions of 1-3 Pima rows each, 8 at a time: (first row index, answer)."""
    def one(i: int) -> tuple[int, dict]:
        start = (i * 3) % (len(dataset.features) - 3)
        rows = dataset.features[start:start + 1 + i % 3].tolist()
        answer = post_json(f"{url}/api/v1/predict", {"rows": rows})
        assert answer.status == 200, answer.body
        return start, as_json(answer)

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared_data: Path, pima_csv: Path):
    """A stack of its own, on a home of its own (no other test's answers or feedback in its
    log), with two web processes: an answer and its feedback may meet different processes,
    each with its own writer of the log."""
    home = tmp_path_factory.mktemp("feedback") / "home"
    prepare_home(home, shared_data, pima_csv, ("production", "development"), active="production")
    with running_stack(home, "--web-processes", "2", workers=2) as running:
        yield running


def test_feedback_for_a_share_of_live_answers_gives_the_independent_metric(stack, dataset,
                                                                           versions):
    """Feedback posted at once (either web process may hold the answer) for a third of the
    rows: the live accuracy equals the count of right answers among them."""
    items, right = [], 0
    for n, (start, answer) in enumerate(answered(stack.url, dataset)):
        assert ids.is_id(answer["prediction_id"])
        for row, label in enumerate(answer["labels"]):
            if (n + row) % 3 == 0:
                truth = int(dataset.labels[start + row])
                items.append({"prediction_id": answer["prediction_id"], "row": row,
                              "label": truth})
                right += label == truth
    for chunk in range(0, len(items), 50):
        sent = post_json(f"{stack.url}/api/v1/models/diabetes/feedback",
                         {"feedback": items[chunk:chunk + 50]})
        assert sent.status == 200, sent.body
    figures = as_json(http("GET", f"{stack.url}/api/v1/models/diabetes/live"))
    by_version = {item["version"]: item for item in figures["versions"]}
    live = by_version[versions["production"]]
    assert live["labelled"] == len(items) and live["metric"] == "accuracy"
    assert live["value"] == pytest.approx(right / len(items))
    assert live["requests"] >= REQUESTS and live["latency_p99_ms"] > 0


def test_bad_feedback_through_the_stack_is_a_clear_4xx(stack, dataset):
    """Unknown id 404, wrong type 400, duplicate 409: one line each, nothing half-stored."""
    answer = as_json(post_json(f"{stack.url}/api/v1/predict",
                               {"rows": dataset.features[:1].tolist()}))
    pid, url = answer["prediction_id"], f"{stack.url}/api/v1/models/diabetes/feedback"
    for body, status, words in [
        ({"feedback": [{"prediction_id": ids.new_id(0), "label": 1}]}, 404, "unknown"),
        ({"feedback": [{"prediction_id": pid, "label": [1]}]}, 400, "not a class"),
        ({"feedback": [{"prediction_id": pid, "label": 1}]}, 200, ""),
        ({"feedback": [{"prediction_id": pid, "label": 0}]}, 409, "already given"),
    ]:
        sent = post_json(url, body)
        assert sent.status == status, sent.body
        assert words in sent.body.decode() and sent.body.count(b"\n") == 1


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 1 MiB file system, filled up: where the prediction log of the next stack lives."""
    mount = tmp_path / "full"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        with open(mount / "filler", "wb") as filler:
            try:
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()
            except OSError:
                pass
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_under_the_log_is_a_warning_not_an_outage(tmp_path, full_disk,
                                                              shared_data, pima_csv, dataset):
    """Every prediction answers; the log's losses are counted in /metrics and said in one
    warning line."""
    home = tmp_path / "home"
    prepare_home(home, shared_data, pima_csv, ("production",), active="production")
    running = start_stack(home, "--workers", "1", env={
        "MODELSERVE_PREDICTION_LOG_PATH": str(full_disk / "predictions.sqlite")})
    try:
        running.wait_ready(workers=1)
        answers = answered(running.url, dataset, 120)
        assert all(ids.is_id(answer["prediction_id"]) for _, answer in answers)
        metrics = http("GET", f"{running.url}/metrics").body.decode()
        dropped = re.search(r"^modelserve_prediction_log_dropped_total (\S+)$", metrics, re.M)
        assert dropped is not None and float(dropped.group(1)) > 0, metrics[-2000:]
        refused = post_json(f"{running.url}/api/v1/models/diabetes/feedback", {"feedback": [
            {"prediction_id": answers[0][1]["prediction_id"], "label": 1}]})
        assert refused.status == 503 and b"cannot be used now" in refused.body, refused.body
    finally:
        running.stop()
    warnings = [line for line in running.log().splitlines() if "prediction log" in line]
    assert any("predictions go on" in line for line in warnings), warnings
