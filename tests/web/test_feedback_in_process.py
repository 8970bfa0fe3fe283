"""Prediction ids, feedback and live figures in the app itself, scored in-process.

The app is create_app with the in-process predictor over the production seed model, and a
real prediction log (SQLite) under its home: no broker or workers, so this runs in the quick
tier. The same through the whole stack (two web processes, Celery workers):
tests/serving/test_feedback.py.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest

from modelserve.config import Settings, load_settings
from modelserve.model.check import check_bundle
from modelserve.model.dataset import import_dataset
from modelserve.predlog import ids
from modelserve.registry import Registry
from modelserve.web import create_app

TOKEN_FIELD = re.compile(r'name="csrf-token" value="([0-9a-f]{64})"')
FEEDBACK = "/api/v1/models/diabetes/feedback"
LIVE = "/api/v1/models/diabetes/live"


def check_here(staged: Path) -> None:
    """The sandbox's check and plan, run in this process (the seed model is our test data)."""
    check_bundle(staged, plan_out=staged / "plan.npz")


def home_with_model(root: Path, legacy_bundle: Path, pima_csv: Path, **env: str) -> Settings:
    """A home with the Pima data and the production seed model active."""
    settings = load_settings({"MODELSERVE_HOME": str(root / "home"), **env})
    import_dataset(pima_csv, settings.data_dir)
    registry = Registry(settings.registry_dir, checker=check_here)
    registry.activate(registry.add(legacy_bundle, source="test").version, source="test")
    return settings


@pytest.fixture
def client(tmp_path: Path, legacy_bundle: Path, pima_csv: Path):
    """A test client of a fresh home's app, scoring in-process, its log on."""
    app = create_app(home_with_model(tmp_path, legacy_bundle, pima_csv), inline=True)
    yield app.test_client()
    app.extensions["modelserve"].close()


def predict(client, rows) -> dict:
    """One /api/v1/predict answer."""
    answer = client.post("/api/v1/predict", json={"rows": rows})
    assert answer.status_code == 200, answer.data
    return answer.get_json()


def test_every_answer_has_an_id_and_feedback_gives_the_independent_metric(client, dataset):
    """v1 and v2 answers carry ids; accuracy over fed-back rows equals numpy's own count."""
    answers = [predict(client, dataset.features[i:i + 10].tolist()) for i in range(0, 60, 10)]
    infer = client.post("/v2/models/diabetes/infer", json={"inputs": [{
        "name": "input", "shape": [1, 8], "datatype": "FP32",
        "data": dataset.features[60].tolist()}]}).get_json()
    assert all(ids.is_id(a["prediction_id"]) for a in answers)
    assert ids.is_id(infer["parameters"]["prediction_id"])
    assert len({a["prediction_id"] for a in answers}) == len(answers)
    items, right = [], 0
    for i, answer in enumerate(answers):
        for row in range(0, 10, 2 if i % 2 else 3):  # a share of each answer's rows
            truth = int(dataset.labels[i * 10 + row])
            items.append({"prediction_id": answer["prediction_id"], "row": row,
                          "label": truth})
            right += answer["labels"][row] == truth
    items.append({"prediction_id": infer["parameters"]["prediction_id"], "label": "diabetes"})
    right += infer["outputs"][1]["data"][0] == 1
    recorded = client.post(FEEDBACK, json={"feedback": items})
    assert recorded.status_code == 200, recorded.data
    assert recorded.get_json() == {"model": "diabetes", "accepted": len(items)}
    [version] = client.get(LIVE).get_json()["versions"]
    assert version["requests"] == 7 and version["rows"] == 61 and version["errors"] == 0
    assert version["labelled"] == len(items) and version["metric"] == "accuracy"
    assert version["value"] == pytest.approx(right / len(items))
    assert version["held_out"] is not None and version["role"] == "live"
    assert sum(point["labelled"] for point in version["over_time"]) == len(items)


def test_bad_feedback_is_a_clear_4xx(client, dataset):
    """Unknown id, wrong type, duplicates, a row it never had, another model: one line each."""
    answer = predict(client, dataset.features[:2].tolist())
    pid = answer["prediction_id"]
    assert client.post(FEEDBACK, json={"feedback": [{"prediction_id": pid,
                                                     "label": 1}]}).status_code == 200
    cases = [
        ({"feedback": [{"prediction_id": ids.new_id(0), "label": 1}]}, 404, "unknown prediction"),
        ({"feedback": [{"prediction_id": pid, "row": 1, "label": "maybe"}]}, 400, "not a class"),
        ({"feedback": [{"prediction_id": pid, "row": 1, "value": 0.3}]}, 400, "give 'label'"),
        ({"feedback": [{"prediction_id": pid, "label": 0}]}, 409, "already given"),
        ({"feedback": [{"prediction_id": pid, "row": 1, "label": 0}] * 2}, 409, "twice"),
        ({"feedback": [{"prediction_id": pid, "row": 2, "label": 0}]}, 400, "no row 2"),
        ({"rows": []}, 400, "send {"),
        # Ids dated in the future (far, or past the year 9999) are unknown, not waited for.
        ({"feedback": [{"prediction_id": "02" + "0" * 30, "label": 0}]}, 404, "unknown"),
        ({"feedback": [{"prediction_id": "b04d2f6c175a" + "0" * 20, "label": 0}]}, 404,
         "unknown"),
    ]
    for body, status, words in cases:
        answer = client.post(FEEDBACK, json=body)
        assert answer.status_code == status, (body, answer.data)
        assert words in answer.get_json()["error"], answer.get_json()
    assert client.post("/api/v1/models/nosuch/feedback", json=cases[0][0]).status_code == 404
    assert client.post(FEEDBACK, data=b"{}", content_type="text/plain").status_code == 415
    for hours in ("-1", "null", "nan", "inf", "1e400", "8761", "1&hours=2"):
        refused = client.get(f"{LIVE}?hours={hours}")
        assert refused.status_code == 400 and "hours must be" in refused.get_json()["error"]
    assert client.get(f"{LIVE}?hours=0.5").get_json()["hours"] == 0.5
    # Nothing of the refused requests was kept: row 1 still takes its one truth.
    assert client.post(FEEDBACK, json={"feedback": [{"prediction_id": pid, "row": 1,
                                                     "label": 0}]}).status_code == 200


def test_a_feedback_csv_on_the_metric_page(client, dataset):
    """The page's form records a CSV of truths and shows the live figure it gives."""
    answer = predict(client, dataset.features[:4].tolist())
    page = client.get("/accuracy").get_data(as_text=True)
    assert 'id="feedback-form"' in page and 'id="live-versions"' in page
    token = TOKEN_FIELD.search(page)
    assert token is not None
    truths = [int(label) for label in dataset.labels[:4]]
    text = "prediction_id,row,label\n" + "".join(
        f"{answer['prediction_id']},{row},{truth}\n" for row, truth in enumerate(truths))
    sent = client.post("/feedback/upload", data={
        "csrf-token": token.group(1), "file": (io.BytesIO(text.encode()), "truth.csv")},
        content_type="multipart/form-data")
    page = sent.get_data(as_text=True)
    assert sent.status_code == 201, page[-800:]
    assert "4 rows of feedback recorded from truth.csv" in page
    right = np.mean(np.array(answer["labels"]) == np.array(truths))
    shown = re.search(r'class="live-value">([0-9.]+)<', page)
    assert shown is not None and float(shown.group(1)) == pytest.approx(right, abs=5e-5)
    again = client.post("/feedback/upload", data={
        "csrf-token": token.group(1), "file": (io.BytesIO(text.encode()), "truth.csv")},
        content_type="multipart/form-data")
    assert again.status_code == 409 and "already given" in again.get_data(as_text=True)


def test_with_the_log_off_answers_keep_ids_and_feedback_says_why_not(tmp_path, legacy_bundle,
                                                                     pima_csv, dataset):
    """MODELSERVE_PREDICTION_LOG=off: no file is written; feedback is a 404 saying so."""
    settings = home_with_model(tmp_path, legacy_bundle, pima_csv,
                               MODELSERVE_PREDICTION_LOG="off")
    app = create_app(settings, inline=True)
    client = app.test_client()
    try:
        answer = predict(client, dataset.features[:1].tolist())
        refused = client.post(FEEDBACK, json={"feedback": [
            {"prediction_id": answer["prediction_id"], "label": 1}]})
        assert refused.status_code == 404 and "keeps no prediction log" in refused.get_json()[
            "error"]
        assert not (settings.home / "log").exists()
    finally:
        app.extensions["modelserve"].close()


def test_a_bad_log_setting_is_refused_in_one_line(tmp_path):
    """MODELSERVE_PREDICTION_LOG takes on or off."""
    settings = load_settings({"MODELSERVE_HOME": str(tmp_path),
                              "MODELSERVE_PREDICTION_LOG": "sometimes"})
    with pytest.raises(Exception, match="say on or off"):
        _ = settings.prediction_log_file


