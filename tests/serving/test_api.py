"""The JSON API on a real stack: answers match the model, bad input gets a clear 4xx."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelserve.model.dataset import FEATURES
from serving.conftest import as_json, expected
from serving.stack_helpers import ROW, http, post_json

pytestmark = pytest.mark.slow  # the shared serving stack: RabbitMQ, Celery workers, gunicorn


def test_predict_rows_as_lists_match_the_active_model(stack, dataset, versions, runtimes):
    """Probabilities, labels and version match the model computed in this process."""
    rows = dataset.features[:25].tolist()
    answer = post_json(f"{stack.url}/api/v1/predict", {"rows": rows})
    assert answer.status == 200, answer.body
    body = as_json(answer)
    production = versions["production"]
    assert body["model_version"] == production
    want = expected(runtimes[production], rows)
    np.testing.assert_allclose(body["probabilities"], want, atol=1e-6)
    assert body["labels"] == (want >= 0.5).astype(int).tolist()
    assert body["worker"].count(":") == 1  # host:pid of the worker that computed it
    # A binary model keeps its fields; task and its two class names come along.
    assert set(body) == {"model", "model_version", "prediction_id", "probabilities", "labels",
                         "worker", "task", "classes"}
    assert body["model"] == "diabetes"  # the default model: the one a one-model home has
    assert body["task"] == "binary"
    assert body["classes"] == list(runtimes[production].spec.output.classes)


def test_rows_as_objects_keyed_by_feature_name(stack, versions, runtimes):
    """Objects may list the features in any order."""
    row = dict(reversed(list(zip(FEATURES, ROW, strict=True))))
    body = as_json(post_json(f"{stack.url}/api/v1/predict", {"rows": [row, row]}))
    want = expected(runtimes[versions["production"]], [ROW, ROW])
    np.testing.assert_allclose(body["probabilities"], want, atol=1e-6)


def test_open_inference_protocol_infer(stack, versions, runtimes):
    """A KServe v2 client's request and the answer it expects."""
    request = {"id": "req-7", "inputs": [{"name": "input", "shape": [2, 8], "datatype": "FP32",
                                          "data": [ROW, ROW]}]}
    answer = post_json(f"{stack.url}/v2/models/diabetes/infer", request)
    body = as_json(answer)
    assert answer.status == 200, body
    assert body["id"] == "req-7" and body["model_name"] == "diabetes"
    assert body["model_version"] == versions["production"]
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["probability"]["shape"] == [2, 1] and outputs["label"]["datatype"] == "INT8"
    want = expected(runtimes[versions["production"]], [ROW, ROW])
    np.testing.assert_allclose(outputs["probability"]["data"], want, atol=1e-6)


def test_infer_on_the_live_version_and_refusal_of_another(stack, versions):
    """/versions/{v}/infer serves the live version only; another one is a 404."""
    request = {"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP64", "data": ROW}],
               "outputs": [{"name": "label"}]}
    live = post_json(f"{stack.url}/v2/models/diabetes/versions/{versions['production']}/infer",
                     request)
    assert live.status == 200 and [o["name"] for o in as_json(live)["outputs"]] == ["label"]
    other = post_json(f"{stack.url}/v2/models/diabetes/versions/{versions['development']}/infer",
                      request)
    assert other.status == 404 and "not the live version" in as_json(other)["error"]


def test_health_and_metadata(stack, versions):
    """Liveness, readiness, server and model metadata."""
    assert as_json(http("GET", f"{stack.url}/v2/health/live")) == {"live": True}
    ready = as_json(http("GET", f"{stack.url}/v2/health/ready"))
    assert ready["ready"] is True and ready["workers"] == 2
    assert ready["active_version"] == versions["production"]
    assert as_json(http("GET", f"{stack.url}/v2"))["name"] == "modelserve"
    model = as_json(http("GET", f"{stack.url}/v2/models/diabetes"))
    assert model["versions"] == [versions["production"]]
    assert model["inputs"][0]["shape"] == [-1, 8]
    assert as_json(http("GET", f"{stack.url}/v2/models/diabetes/ready"))["ready"] is True
    assert http("GET", f"{stack.url}/v2/models/other").status == 404


def test_metrics_expose_latency_batches_queue_and_version(stack, versions):
    """Prometheus text with the four families the operators need."""
    post_json(f"{stack.url}/api/v1/predict", {"rows": [ROW]})
    answer = http("GET", f"{stack.url}/metrics")
    assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/plain")
    text = answer.body.decode()
    for family in ("modelserve_request_seconds_bucket", "modelserve_batch_rows_bucket",
                   'modelserve_queue_depth{model="diabetes"}',
                   'modelserve_workers{model="diabetes"} 2.0'):
        assert family in text
    live = f'model="diabetes",version="{versions["production"]}"'
    assert f"modelserve_active_model{{{live}}} 1.0" in text
    assert f"modelserve_rows_scored_total{{{live}}}" in text


def _body(value) -> bytes:
    """Encode a test body: bytes as given, anything else as JSON."""
    return value if isinstance(value, bytes) else json.dumps(value).encode()


BAD_REQUESTS = [
    # (body, content type, status, words the error must contain)
    (b'{"rows": [[1, 2', "application/json", 400, "malformed JSON"),
    (b"", "application/json", 400, "empty"),
    (b"   ", "application/json", 400, "empty"),
    (b"\xff\xfe{}", "application/json", 400, "UTF-8"),
    (b'{"rows": [[1,2,3,4,5,6,7,8]]}', "text/plain", 415, "application/json"),
    (b'{"rows": [[1,2,3,4,5,6,7,8]]}', None, 415, "application/json"),
    (b'{"rows": [[NaN,2,3,4,5,6,7,8]]}', "application/json", 400, "NaN"),
    (b'{"rows": [[Infinity,2,3,4,5,6,7,8]]}', "application/json", 400, "Infinity"),
    ({"rows": [[1, 2, 3]]}, "application/json", 400, "expected 8 values"),
    ({"rows": [[1, 2, 3, 4, 5, 6, 7, 8, 9]]}, "application/json", 400, "got 9"),
    ({"rows": [[1, 2, 3, 4, 5, 6, 7, "8"]]}, "application/json", 400, "is not a number"),
    ({"rows": [[1, 2, 3, 4, 5, 6, 7, True]]}, "application/json", 400, "true is not a number"),
    ({"rows": [[1, 2, 3, 4, 5, 6, 7, None]]}, "application/json", 400, "null is not a number"),
    ({"rows": [[1, 2, 3, 4, 5, 6, 7, 1e39]]}, "application/json", 400, "float32"),
    ({"rows": [[1, 2, 3, 4, 5, 6, 7, 10**400]]}, "application/json", 400, "float32"),
    ({"rows": [{"glucose": 1}]}, "application/json", 400, "missing pregnancies"),
    ({"rows": [dict(zip(FEATURES, ROW, strict=True)) | {"x": 1}]}, "application/json", 400,
     "unknown 'x'"),
    ({"rows": []}, "application/json", 400, "no rows"),
    ({"rows": "all"}, "application/json", 400, "must be a list"),
    ({"rows": [ROW], "extra": 1}, "application/json", 400, "unknown field"),
    ([ROW], "application/json", 400, "JSON object"),
    ({"rows": [ROW] * 10_001}, "application/json", 413, "10000 allowed"),
    (b"[" * 100_000, "application/json", 400, "nested too deeply"),
    # Python refuses to read an integer of over 4,300 digits; that was a 500.
    (b'{"rows": [[1' + b"0" * 4400 + b", 2, 3, 4, 5, 6, 7, 8]]}", "application/json", 400,
     "more than 4300 digits"),
    (b'{"rows": [' + b"[1,2,3,4,5,6,7,8]," * 70_000 + b"[1,2,3,4,5,6,7,8]]}",
     "application/json", 413, "larger than"),
]


@pytest.mark.parametrize(("body", "content_type", "status", "words"), BAD_REQUESTS,
                         ids=[f"{i}-{case[3]}" for i, case in enumerate(BAD_REQUESTS)])
def test_bad_input_gets_a_clear_json_error(stack, body, content_type, status, words):
    """Each kind of bad input: its 4xx status and a JSON error naming the problem."""
    answer = http("POST", f"{stack.url}/api/v1/predict", _body(body), content_type)
    assert answer.status == status, answer.body[:300]
    assert answer.headers["Content-Type"] == "application/json"
    message = as_json(answer)["error"]
    assert words in message and "Traceback" not in message


BAD_V2 = [
    ({"inputs": []}, "exactly 1 input"),
    ({"inputs": [{"name": "x", "shape": [1, 8], "datatype": "BYTES", "data": ROW}]}, "numeric"),
    ({"inputs": [{"name": "x", "shape": [1, 7], "datatype": "FP32", "data": ROW[:7]}]},
     "8 features"),
    ({"inputs": [{"name": "x", "shape": [2, 8], "datatype": "FP32", "data": ROW}]}, "needs 16"),
    ({"inputs": [{"name": "x", "shape": [1, 8], "datatype": "FP32"}]}, "lacks 'data'"),
    ({"inputs": [{"name": "x", "shape": [1, 8], "datatype": "FP32", "data": ROW}],
      "outputs": [{"name": "logits"}]}, "unknown output"),
]


@pytest.mark.parametrize(("payload", "words"), BAD_V2, ids=[case[1] for case in BAD_V2])
def test_bad_open_inference_requests(stack, payload, words):
    """The protocol's own mistakes get a 400 that says what is wrong."""
    answer = post_json(f"{stack.url}/v2/models/diabetes/infer", payload)
    assert answer.status == 400, answer.body[:300]
    assert words in as_json(answer)["error"]


def test_unknown_paths_and_methods(stack):
    """404 and 405 in JSON on the API; 405 names the allowed methods."""
    missing = http("GET", f"{stack.url}/api/v1/nothing")
    assert missing.status == 404 and "error" in as_json(missing)
    wrong_method = http("GET", f"{stack.url}/api/v1/predict")
    assert wrong_method.status == 405 and "POST" in wrong_method.headers["Allow"]
    assert "error" in as_json(wrong_method)
