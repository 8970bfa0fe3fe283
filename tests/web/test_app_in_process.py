"""The Flask app in this process: pages and API over a real seed model, scored in-process.

The app is the one gunicorn serves (create_app), with the in-process predictor (`modelserve up
--inline`) over the production seed model's plan: no broker, workers or browser, so this runs
in the quick tier. Answers are checked against Keras' own on the model file. The same requests
through the whole stack: tests/serving/test_api.py and test_pages.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from modelserve.config import Settings, load_settings
from modelserve.model.check import check_bundle
from modelserve.model.dataset import Dataset, import_dataset
from modelserve.model.holdout import held_out
from modelserve.registry import Registry
from modelserve.web import create_app, format_metric

TOKEN_FIELD = re.compile(r'name="csrf-token" value="([0-9a-f]{64})"')
MODEL = "diabetes"


def check_here(staged: Path) -> None:
    """The sandbox's check and plan, run in this process (the seed model is our test data)."""
    check_bundle(staged, plan_out=staged / "plan.npz")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, legacy_bundle: Path,
             pima_csv: Path) -> Settings:
    """A home with the Pima data stored and the production seed model active."""
    settings = load_settings({"MODELSERVE_HOME": str(tmp_path_factory.mktemp("app") / "home")})
    import_dataset(pima_csv, settings.data_dir)
    registry = Registry(settings.registry_dir, checker=check_here)
    registry.activate(registry.add(legacy_bundle, source="test").version, source="test")
    return settings


@pytest.fixture(scope="module")
def keras_model(legacy_bundle: Path):
    """The seed model as Keras itself loads it: the expected answers."""
    import keras

    return keras.saving.load_model(legacy_bundle / "model.keras", compile=False)


@pytest.fixture
def client(settings: Settings):
    """A test client of the app as gunicorn would serve it, scoring in-process."""
    app = create_app(settings, inline=True)
    yield app.test_client()
    app.extensions["modelserve"].close()


def keras_probabilities(model, rows) -> np.ndarray:
    """What Keras computes for rows."""
    return np.asarray(model.predict(np.asarray(rows, dtype=np.float32), verbose=0)).ravel()


def active_version(settings: Settings) -> str:
    """The version the home serves."""
    version = Registry(settings.registry_dir).active_version()
    assert version is not None
    return version


def test_the_api_answers_what_keras_computes(client, settings, keras_model, dataset: Dataset):
    """/api/v1/predict on 25 real rows: Keras' probabilities within 1e-5, their labels."""
    rows = dataset.features[:25].tolist()
    answer = client.post("/api/v1/predict", json={"rows": rows})
    assert answer.status_code == 200, answer.json
    want = keras_probabilities(keras_model, rows)
    np.testing.assert_allclose(answer.json["probabilities"], want, atol=1e-5)
    assert answer.json["labels"] == (want >= 0.5).astype(int).tolist()
    assert answer.json["model_version"] == active_version(settings)
    assert answer.json["worker"] == "in-process"


def test_open_inference_protocol_metadata_readiness_and_infer(client, settings, keras_model,
                                                              dataset: Dataset):
    """v2: ready, metadata of the live version, an infer answered as Keras computes it."""
    version = active_version(settings)
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json["ready"] is True, ready.json
    metadata = client.get(f"/v2/models/{MODEL}").json
    assert metadata["versions"] == [version] and metadata["inputs"][0]["shape"] == [-1, 8]
    rows = dataset.features[:2].tolist()
    body = {"id": "r1", "inputs": [{"name": "input", "shape": [2, 8], "datatype": "FP32",
                                    "data": rows}]}
    answer = client.post(f"/v2/models/{MODEL}/infer", json=body)
    assert answer.status_code == 200, answer.json
    outputs = {output["name"]: output for output in answer.json["outputs"]}
    np.testing.assert_allclose(outputs["probability"]["data"],
                               keras_probabilities(keras_model, rows), atol=1e-5)
    assert answer.json["id"] == "r1" and answer.json["model_version"] == version


@pytest.mark.parametrize(("body", "content_type", "status", "words"), [
    (b'{"rows": [[1, 2', "application/json", 400, "malformed JSON"),
    (b'{"rows": [[1, 2, 3]]}', "application/json", 400, "expected 8 values"),
    (b'{"rows": [[1,2,3,4,5,6,7,8]]}', "text/plain", 415, "application/json"),
    (b'{"rows": [[NaN,2,3,4,5,6,7,8]]}', "application/json", 400, "NaN"),
])
def test_a_bad_body_is_one_clear_line(client, body, content_type, status, words):
    """A refused body gets its status and one line of JSON saying why, no traceback."""
    answer = client.post("/api/v1/predict", data=body, content_type=content_type)
    assert answer.status_code == status, answer.data
    message = answer.json["error"]
    assert words in message and "\n" not in message and "Traceback" not in message


def test_the_pages_show_the_models_own_features(client, settings):
    """Every page answers; the form asks for the active model's features, by name."""
    for path in ("/", "/predictions", "/accuracy", "/models"):
        page = client.get(path)
        assert page.status_code == 200, (path, page.data[:300])
        assert b"Traceback" not in page.data, path
    form = client.get("/").get_data(as_text=True)
    spec = Registry(settings.registry_dir).get(active_version(settings)).spec
    assert spec is not None
    for name in spec.feature_names:
        assert f'<input name="{name}"' in form, name


def test_the_form_scores_one_patient_as_keras_does(client, settings, keras_model,
                                                   dataset: Dataset):
    """The form with its CSRF token: the probability Keras computes, to 4 decimals."""
    form = client.get("/").get_data(as_text=True)
    token = TOKEN_FIELD.search(form)
    assert token is not None, form[:500]
    spec = Registry(settings.registry_dir).get(active_version(settings)).spec
    assert spec is not None
    row = dataset.features[0].tolist()
    fields = dict(zip(spec.feature_names, map(repr, row), strict=True))
    page = client.post("/", data={**fields, "csrf-token": token.group(1)})
    assert page.status_code == 200, page.data[:500]
    want = keras_probabilities(keras_model, [row])[0]
    shown = re.search(r'id="probability">([0-9.]+)<', page.get_data(as_text=True))
    assert shown is not None and abs(float(shown.group(1)) - want) <= 5e-5, page.data[-800:]


def test_the_form_without_its_token_is_refused(client, dataset: Dataset):
    """A form post without the CSRF token is a 403, not a prediction."""
    page = client.post("/", data={"glucose": "148"})
    assert page.status_code == 403 and b'id="probability"' not in page.data


def test_the_predictions_page_shows_the_held_out_accuracy_keras_gets(client, settings,
                                                                      keras_model):
    """/predictions scores the model's held-out rows: the accuracy Keras gets on them."""
    manifest = Registry(settings.registry_dir).get(active_version(settings)).manifest
    rows = held_out(settings.data_dir, manifest)
    labels = (keras_probabilities(keras_model, rows.features) >= 0.5).astype(int)
    accuracy = float(np.mean(labels == rows.labels))
    page = client.get("/predictions").get_data(as_text=True)
    assert f'<strong id="accuracy">{format_metric(accuracy)}</strong>' in page, page[:800]
    assert f'<span id="row-count">{len(rows.labels)}</span>' in page


def test_metrics_name_the_active_version(client, settings):
    """/metrics: Prometheus text naming the live version and timing the requests."""
    client.post("/api/v1/predict", json={"rows": [[6, 148, 72, 35, 0, 33.6, 0.627, 50]]})
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.content_type.startswith("text/plain")
    text = answer.get_data(as_text=True)
    version = active_version(settings)
    assert f'modelserve_active_model{{model="{MODEL}",version="{version}"}} 1.0' in text
    assert f'modelserve_rows_scored_total{{model="{MODEL}",version="{version}"}}' in text
    assert "modelserve_request_seconds_bucket" in text
