"""One web app serves every model by name: its JSON API, v2 routes, index, metrics and pages.

The app as gunicorn serves it, scoring in-process (the quick tier), over one home with four
models: the Pima seed model as the default (binary, "diabetes"), an iris classifier
(multiclass) and a diabetes-progression model (regression) trained here for a few epochs on
their own stored data, and a retired model. Each answer is checked against Keras on that
model's own file. tritonclient talks to the app over real HTTP (a server thread).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path

import jsonschema_rs
import numpy as np
import pytest
import schemathesis
from flask import Flask
from tabular import write_table
from werkzeug.serving import make_server

from modelserve.config import Settings, load_settings
from modelserve.model.check import check_bundle
from modelserve.model.dataset import import_dataset, import_table
from modelserve.model.holdout import held_out
from modelserve.model.spec import ModelSpec
from modelserve.model.training import TrainingConfig, train_table_bundle
from modelserve.registry.catalog import Catalog
from modelserve.web import create_app

EPOCHS = 5  # the routing is under test, not the models: a few epochs make real ones
TOKEN_FIELD = re.compile(r'name="csrf-token" value="([0-9a-f]{64})"')
SERVED = ("diabetes", "iris", "progression")  # the default model first
RETIRED = "old"
FIRST_TENSOR = {"binary": "probability", "multiclass": "probabilities", "regression": "value"}


def check_here(staged: Path) -> None:
    """The sandbox's check and plan, run in this process (we trained the models ourselves)."""
    check_bundle(staged, plan_out=staged / "plan.npz")


@dataclass
class Model:
    """One served model: its version, spec, held-out rows and Keras' answers for them."""

    name: str
    version: str
    spec: ModelSpec
    rows: np.ndarray  # a few held-out rows of its own data
    keras: np.ndarray  # what Keras computes for them: (rows, output width)


@dataclass
class Home:
    """The home and its models by name."""

    settings: Settings
    models: dict[str, Model]


def _keras(bundle: Path, rows: np.ndarray) -> np.ndarray:
    """What Keras computes with a bundle's model.keras."""
    import keras

    model = keras.saving.load_model(bundle / "model.keras", compile=False)
    return np.asarray(model(np.asarray(rows, dtype=np.float32), training=False))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, legacy_bundle: Path, pima_csv: Path) -> Home:
    """Three served models of three tasks, each with its data stored, and a retired one."""
    root = tmp_path_factory.mktemp("many")
    settings = load_settings({"MODELSERVE_HOME": str(root / "home")})
    catalog = Catalog.of(settings, checker=check_here)
    import_dataset(pima_csv, settings.model_data_dir("diabetes"))
    bundles = {"diabetes": legacy_bundle}
    for name, task in (("iris", "multiclass"), ("progression", "regression")):
        csv, label = write_table(root, task)
        table = import_table(csv, settings.model_data_dir(name), label)
        bundles[name] = root / f"bundle-{name}"
        train_table_bundle(table, TrainingConfig(epochs=EPOCHS), bundles[name])
    models = {}
    for name, bundle in bundles.items():
        registry = catalog.registry_for_new(name)
        version = registry.add(bundle, source="test").version
        registry.activate(version, source="test")
        spec = registry.get(version).spec
        assert spec is not None
        held = held_out(settings.model_data_dir(name), dict(spec.document),
                        features=spec.feature_names).features[:5]
        models[name] = Model(name, version, spec, held, _keras(bundle, held))
    old = catalog.registry_for_new(RETIRED)
    old.activate(old.add(bundles["iris"], source="test").version, source="test")
    old.retire(source="test", reason="replaced")
    return Home(settings, models)


@pytest.fixture
def app(home: Home) -> Iterator[Flask]:
    """A fresh app (its own traffic counts) scoring in-process; its predictor closed after."""
    app = create_app(home.settings, inline=True)
    yield app
    app.extensions["modelserve"].close()


def model_answer(model: Model, answer: dict) -> np.ndarray:
    """A /api/v1 answer's outputs as (rows, width), whatever the task."""
    if model.spec.task.value == "regression":
        return np.asarray(answer["values"])[:, None]
    probabilities = np.asarray(answer["probabilities"])
    return probabilities if probabilities.ndim == 2 else probabilities[:, None]


def text_of(html: str, element_id: str) -> str:
    """The text inside the element with this id (its markup stripped)."""
    found = re.search(rf'id="{element_id}"[^>]*>(.*?)</', html, re.S)
    assert found is not None, f"no #{element_id} in {html[:600]}"
    return unescape(re.sub(r"<[^>]+>", "", found.group(1))).strip()


@pytest.mark.parametrize("name", SERVED)
def test_each_model_answers_its_own_predict_route(app, home, name):
    """/api/v1/models/<name>/predict: that model's task, version and Keras' outputs."""
    model = home.models[name]
    answer = app.test_client().post(f"/api/v1/models/{name}/predict",
                                    json={"rows": model.rows.tolist()})
    assert answer.status_code == 200, answer.data[:300]
    body = answer.json
    assert (body["model"], body["model_version"], body["task"]) == (
        name, model.version, model.spec.task.value)
    np.testing.assert_allclose(model_answer(model, body), model.keras, rtol=1e-4, atol=1e-5)


def test_the_plain_predict_route_serves_the_default_model(app, home):
    """/api/v1/predict keeps answering with the default model (diabetes, the Pima model)."""
    model = home.models["diabetes"]
    answer = app.test_client().post("/api/v1/predict", json={"rows": model.rows.tolist()})
    assert answer.status_code == 200 and answer.json["model"] == "diabetes"
    np.testing.assert_allclose(model_answer(model, answer.json), model.keras, rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("name", SERVED)
def test_each_model_answers_v2_infer_with_its_own_tensors(app, home, name):
    """/v2/models/<name>/infer and its /versions/<v>/ form: its tensors, as Keras computes."""
    model, client = home.models[name], app.test_client()
    tensor = {"name": "input", "shape": list(model.rows.shape), "datatype": "FP32",
              "data": model.rows.ravel().tolist()}
    for path in (f"/v2/models/{name}/infer", f"/v2/models/{name}/versions/{model.version}/infer"):
        answer = client.post(path, json={"inputs": [tensor]})
        assert answer.status_code == 200, answer.data[:300]
        assert (answer.json["model_name"], answer.json["model_version"]) == (name, model.version)
        outputs = {output["name"]: output for output in answer.json["outputs"]}
        first = outputs[FIRST_TENSOR[model.spec.task.value]]
        assert first["shape"] == [len(model.rows), model.spec.output.width]
        np.testing.assert_allclose(first["data"], model.keras.ravel(), rtol=1e-4, atol=1e-5)
    metadata = client.get(f"/v2/models/{name}").json
    assert metadata["versions"] == [model.version]
    assert metadata["inputs"][0]["shape"] == [-1, len(model.spec.feature_names)]
    assert client.get(f"/v2/models/{name}/ready").json == {"name": name, "ready": True}


def test_another_models_version_is_not_this_models(app, home):
    """A version of iris is no version of progression: 404 saying which one is live."""
    iris, progression = home.models["iris"], home.models["progression"]
    answer = app.test_client().get(f"/v2/models/progression/versions/{iris.version}")
    assert answer.status_code == 404
    assert progression.version in answer.json["error"] and "'progression'" in answer.json["error"]


@pytest.mark.parametrize("path", [
    "/api/v1/models/{name}/predict", "/v2/models/{name}/infer", "/v2/models/{name}",
    "/v2/models/{name}/ready"])
@pytest.mark.parametrize("name", ["nope", RETIRED, "Not-A-Name"])
def test_an_unknown_or_retired_model_is_a_404_naming_the_models(app, home, path, name):
    """One line naming the models there are (a retired one: that it has no active version)."""
    client = app.test_client()
    url = path.format(name=name)
    row = home.models["iris"].rows[:1]
    if url.endswith("predict"):
        answer = client.post(url, json={"rows": row.tolist()})
    elif url.endswith("infer"):
        answer = client.post(url, json={"inputs": [{"name": "input", "shape": [1, 4],
                                                    "datatype": "FP32",
                                                    "data": row.ravel().tolist()}]})
    else:
        answer = client.get(url)
    assert answer.status_code == 404, (url, answer.data[:300])
    error = answer.json["error"]
    assert "\n" not in error and "Traceback" not in error
    if name == RETIRED:
        assert "no active version" in error and "diabetes, iris, progression" in error
    else:
        assert "diabetes, iris, old, progression" in error


def test_the_repository_index_lists_every_model_and_its_state(app, home):
    """POST /v2/repository/index: each model, its live version, READY or UNAVAILABLE and why."""
    client = app.test_client()
    index = client.post("/v2/repository/index").json
    assert [entry["name"] for entry in index] == ["diabetes", "iris", RETIRED, "progression"]
    by_name = {entry["name"]: entry for entry in index}
    for name in SERVED:
        assert by_name[name] == {"name": name, "version": home.models[name].version,
                                 "state": "READY", "reason": ""}
    assert by_name[RETIRED]["state"] == "UNAVAILABLE" and by_name[RETIRED]["version"] == ""
    assert "no active version" in by_name[RETIRED]["reason"]
    ready = client.post("/v2/repository/index", json={"ready": True}).json
    assert [entry["name"] for entry in ready] == list(SERVED)
    refused = client.post("/v2/repository/index", json={"ready": "yes"})
    assert refused.status_code == 400 and "ready" in refused.json["error"]


def test_server_readiness_names_each_served_model(app):
    """/v2/health/ready: ready, and which served models are (a retired one is not served)."""
    answer = app.test_client().get("/v2/health/ready")
    assert answer.status_code == 200
    assert answer.json["ready"] is True
    assert answer.json["models"] == dict.fromkeys(SERVED, True)


def test_metrics_carry_the_model_label(app, home):
    """Rows scored and the live version per model and version; a retired model is not live."""
    client = app.test_client()
    for name in SERVED:
        client.post(f"/api/v1/models/{name}/predict",
                    json={"rows": home.models[name].rows.tolist()})
    text = client.get("/metrics").get_data(as_text=True)
    for name in SERVED:
        live = f'model="{name}",version="{home.models[name].version}"'
        assert f"modelserve_active_model{{{live}}} 1.0" in text, name
        assert f"modelserve_rows_scored_total{{{live}}}" in text, name
        assert f'modelserve_workers{{model="{name}"}} 1.0' in text, name
    assert f'modelserve_active_model{{model="{RETIRED}"' not in text


def test_the_start_page_lists_the_models_with_their_traffic(app, home):
    """/: each model's live version, task, headline metric and the rows answered here."""
    client = app.test_client()
    iris = home.models["iris"]
    client.post("/api/v1/models/iris/predict", json={"rows": iris.rows.tolist()})
    page = client.get("/").get_data(as_text=True)
    start = page.index('id="model-list"')
    table = page[start:page.index("</table>", start)]
    rows = dict(re.findall(r'<tr data-model="([^"]+)"[^>]*>(.*?)</tr>', table, re.S))
    assert sorted(rows) == ["diabetes", "iris", RETIRED, "progression"]
    for name in SERVED:
        model = home.models[name]
        assert model.version[:12] in rows[name] and model.spec.task.value in rows[name]
        assert f'href="/models/{name}"' in rows[name]
    assert "accuracy" in rows["iris"] and "RMSE" in rows["progression"]
    assert re.search(r'class="value">[0-9.]+<', rows["progression"])
    assert '<td class="traffic">5</td>' in rows["iris"]
    assert '<td class="traffic">0</td>' in rows["progression"]
    assert "not served" in rows[RETIRED]
    assert text_of(page, "model-name") == "diabetes"  # the default model's form below


@pytest.mark.parametrize("name", SERVED)
def test_each_model_has_its_own_pages(app, home, name):
    """/models/<name>, its predictions, accuracy and versions: 200, its own features."""
    model, client = home.models[name], app.test_client()
    for path in ("", "/predictions", "/accuracy", "/versions"):
        page = client.get(f"/models/{name}{path}")
        assert page.status_code == 200, (path, page.data[:600])
        assert b"Traceback" not in page.data
    form = client.get(f"/models/{name}").get_data(as_text=True)
    assert 'id="model-list"' not in form
    for feature in model.spec.feature_names:
        assert f'<input name="{feature}"' in form, feature
    assert f'action="/models/{name}"' in form and text_of(form, "model-name") == name
    assert f'href="/models/{name}/accuracy"' in form  # the menu stays on this model
    held = client.get(f"/models/{name}/predictions").get_data(as_text=True)
    assert text_of(held, "answer-version") == model.version
    versions = client.get(f"/models/{name}/versions").get_data(as_text=True)
    assert f'data-version="{model.version}"' in versions
    assert text_of(versions, "model-name") == name


def test_a_models_form_answers_with_that_model(app, home):
    """The iris form scores a row with iris: the species Keras gives, by name."""
    iris, client = home.models["iris"], app.test_client()
    form = client.get("/models/iris").get_data(as_text=True)
    token = TOKEN_FIELD.search(form)
    assert token is not None
    row = dict(zip(iris.spec.feature_names, map(repr, iris.rows[0].tolist()), strict=True))
    page = client.post("/models/iris", data={**row, "csrf-token": token.group(1)})
    assert page.status_code == 200, page.data[:600]
    text = page.get_data(as_text=True)
    assert text_of(text, "label") == iris.spec.output.classes[int(iris.keras[0].argmax())]
    assert text_of(text, "answer-version") == iris.version
    refused = client.post("/models/iris", data=row)  # without its token
    assert refused.status_code == 403


def test_an_unknown_models_page_is_a_404_naming_the_models(app):
    """/models/nope: a page saying which models there are, not a traceback."""
    page = app.test_client().get("/models/nope/accuracy")
    assert page.status_code == 404
    assert b"diabetes, iris, old, progression" in page.data and b"Traceback" not in page.data


def test_openapi_enumerates_the_models_and_each_answer_conforms(app, home):
    """The per-model paths name the served models; each model's answer fits its own schema."""
    client = app.test_client()
    document = client.get("/openapi.json").json
    schemathesis.openapi.from_dict(document).validate()
    parameter = document["paths"]["/api/v1/models/{name}/predict"]["post"]["parameters"][0]
    assert parameter["schema"]["enum"] == list(SERVED)
    assert "/v2/repository/index" in document["paths"]
    components = {"components": document["components"]}
    for name in SERVED:
        body = client.post(f"/api/v1/models/{name}/predict",
                           json={"rows": home.models[name].rows.tolist()}).json
        for schema in SERVED:
            validator = jsonschema_rs.Draft4Validator(
                {"$ref": f"#/components/schemas/PredictResponse.{schema}", **components})
            assert validator.is_valid(body) == (schema == name), (name, schema)
        assert jsonschema_rs.Draft4Validator(
            {"$ref": "#/components/schemas/Model.PredictResponse", **components}).is_valid(body)


@pytest.fixture
def served_url(app) -> Iterator[str]:
    """The app over real HTTP, in a thread."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_tritonclient_lists_and_scores_every_model(served_url, home):
    """tritonclient: the repository index, each model ready, and each one's own outputs."""
    import tritonclient.http as triton

    client = triton.InferenceServerClient(served_url)
    index = client.get_model_repository_index()
    assert {entry["name"]: entry["state"] for entry in index} == {
        **dict.fromkeys(SERVED, "READY"), RETIRED: "UNAVAILABLE"}
    assert not client.is_model_ready(RETIRED) and not client.is_model_ready("nope")
    for name in SERVED:
        model = home.models[name]
        assert client.is_model_ready(name)
        tensor = triton.InferInput("input", list(model.rows.shape), "FP32")
        tensor.set_data_from_numpy(model.rows.astype(np.float32), binary_data=False)
        first = FIRST_TENSOR[model.spec.task.value]
        result = client.infer(name, [tensor], outputs=[
            triton.InferRequestedOutput(first, binary_data=False)])
        np.testing.assert_allclose(result.as_numpy(first), model.keras, rtol=1e-4, atol=1e-5)
        assert result.get_response()["model_name"] == name
