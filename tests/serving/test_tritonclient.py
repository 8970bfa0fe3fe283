"""The Open Inference Protocol with a real client: tritonclient.http, unchanged, on a real stack.

tritonclient in JSON mode (binary_data=False) sends no Content-Type; before issue 14 every
infer call of it was a 415. Here it checks health and metadata, infers and gets what
/api/v1/predict answers for the same rows, and hears a clear refusal for what the server does
not support (its binary default, BYTES). What the client cannot send (a wrong datatype, a
foreign page's request) goes over plain HTTP. The pure rules: tests/web/test_inference.py.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import numpy as np
import pytest
import tritonclient.http as triton
from tiers import needs
from tritonclient.utils import InferenceServerException

from modelserve.predlog import ids
from modelserve.stack.ports import wait_for_port
from modelserve.stack.rabbitmq import BrokerNode
from serving.auth_helpers import bearer, create_token
from serving.conftest import as_json
from serving.stack_helpers import (
    ROW,
    STARTUP_SECONDS,
    Response,
    RunningStack,
    free_port,
    post_json,
)

pytestmark = pytest.mark.slow
MODEL = "diabetes"
ROWS = 32
OUTPUTS = {"probability": "FP32", "label": "INT8"}  # today's binary model


def client_for(url: str) -> triton.InferenceServerClient:
    """A tritonclient for a base URL, as its users make one (host:port, no scheme)."""
    return triton.InferenceServerClient(urlsplit(url).netloc, connection_timeout=10,
                                        network_timeout=30)


@pytest.fixture(scope="module")
def client(stack: RunningStack) -> Iterator[triton.InferenceServerClient]:
    """tritonclient for the shared stack (on loopback: no token needed)."""
    made = client_for(stack.url)
    yield made
    made.close()


def json_input(rows: np.ndarray, datatype: str) -> triton.InferInput:
    """The model's input tensor in JSON mode."""
    tensor = triton.InferInput("input", list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows, binary_data=False)
    return tensor


def json_outputs(*names: str) -> list[triton.InferRequestedOutput]:
    """Outputs asked for by name, answered in JSON."""
    return [triton.InferRequestedOutput(name, binary_data=False) for name in names]


def predict_v1(stack: RunningStack, rows: np.ndarray) -> dict:
    """What the JSON API answers for the same rows."""
    answer = post_json(f"{stack.url}/api/v1/predict", {"rows": rows.tolist()})
    assert answer.status == 200, answer.body[:300]
    return as_json(answer)


def test_health_and_metadata_describe_the_served_model(client, dataset, versions):
    """Live, ready, the model ready (by name and live version) and its real tensors."""
    production = versions["production"]
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, production)
    assert not client.is_model_ready("other")
    assert not client.is_model_ready(MODEL, versions["development"])  # not the live one
    assert client.get_server_metadata()["name"] == "modelserve"
    metadata = client.get_model_metadata(MODEL)
    assert metadata["name"] == MODEL and metadata["versions"] == [production]
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32",
                                   "shape": [-1, dataset.features.shape[1]]}]
    assert {out["name"]: out["datatype"] for out in metadata["outputs"]} == OUTPUTS
    assert [out["shape"] for out in metadata["outputs"]] == [[-1, 1], [-1, 1]]
    assert client.get_model_metadata(MODEL, production) == metadata


def test_infer_gives_the_json_apis_probabilities(client, stack, dataset, versions, reliability):
    """FP32 rows in JSON mode: only the requested output, equal to /api/v1/predict's."""
    rows = dataset.features[:ROWS].astype(np.float32)
    result = client.infer(MODEL, [json_input(rows, "FP32")], outputs=json_outputs("probability"),
                          request_id="tc-1")
    v1 = predict_v1(stack, rows)
    probabilities = result.as_numpy("probability")
    assert probabilities.shape == (ROWS, 1) and probabilities.dtype == np.float32
    difference = float(np.max(np.abs(probabilities[:, 0] - np.float32(v1["probabilities"]))))
    assert difference <= 1e-6
    answer = result.get_response()
    assert answer["id"] == "tc-1" and answer["model_version"] == versions["production"]
    assert ids.is_id(answer["parameters"]["prediction_id"])  # what feedback names
    assert [out["name"] for out in answer["outputs"]] == ["probability"]
    assert result.as_numpy("label") is None
    # Both outputs, in the order asked for, from the version named.
    both = client.infer(MODEL, [json_input(rows, "FP32")], versions["production"],
                        outputs=json_outputs("label", "probability"))
    assert [out["name"] for out in both.get_response()["outputs"]] == ["label", "probability"]
    np.testing.assert_array_equal(both.as_numpy("label")[:, 0], v1["labels"])
    reliability.record("Bad input", "tritonclient.http (JSON mode) against the stack",
                       "metadata, readiness, infer; probabilities compared with /api/v1/predict",
                       rows=ROWS, max_abs_difference=f"{difference:.1e}")


def test_integer_and_bool_tensors_are_read_as_their_values(client, stack, dataset):
    """INT32 rows (whole numbers) and a BOOL tensor score as the same rows sent to /api/v1."""
    whole = np.rint(dataset.features[:8]).astype(np.int32)
    result = client.infer(MODEL, [json_input(whole, "INT32")], outputs=json_outputs("probability"))
    np.testing.assert_allclose(result.as_numpy("probability")[:, 0],
                               predict_v1(stack, whole)["probabilities"], atol=1e-6)
    flags = np.array([[True, False] * 4], dtype=bool)
    result = client.infer(MODEL, [json_input(flags, "BOOL")], outputs=json_outputs("label"))
    assert result.as_numpy("label")[:, 0].tolist() == predict_v1(stack, flags.astype(int))["labels"]


def test_what_the_server_does_not_support_is_refused_clearly(client, dataset, reliability):
    """tritonclient's binary defaults and BYTES: 415/400 saying what to send instead."""
    rows = dataset.features[:2].astype(np.float32)
    binary = triton.InferInput("input", list(rows.shape), "FP32")
    binary.set_data_from_numpy(rows)  # the client's default: binary tensor data
    as_bytes = triton.InferInput("input", list(rows.shape), "BYTES")
    as_bytes.set_data_from_numpy(rows.astype(str).astype(np.object_), binary_data=False)
    cases = [
        ([binary], json_outputs("probability"), "415", "binary tensor extension"),
        ([json_input(rows, "FP32")], None, "400", "binary_data=False"),  # binary outputs
        ([json_input(rows, "FP32")], [triton.InferRequestedOutput("probability")], "400",
         '"binary_data": false'),
        ([as_bytes], json_outputs("probability"), "400", "BYTES is not supported"),
        ([json_input(rows, "FP32")], json_outputs("logits"), "400",
         "unknown output \"logits\"; this model has 'probability', 'label'"),
    ]
    for inputs, outputs, status, words in cases:
        with pytest.raises(InferenceServerException) as caught:
            client.infer(MODEL, inputs, outputs=outputs)
        assert caught.value.status() == status, caught.value
        assert words in caught.value.message() and "Traceback" not in caught.value.message()
    reliability.record("Bad input", "tritonclient.http: unsupported requests",
                       "binary inputs, binary outputs (the client's default), BYTES, unknown "
                       "output: each a 400/415 naming what is supported", refused=len(cases))


def raw_post(url: str, body: bytes, headers: dict[str, str]) -> Response:
    """POST with exactly these headers (urllib would add a form Content-Type of its own)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=15)
    try:
        connection.request("POST", parts.path, body=body, headers=headers)
        answer = connection.getresponse()
        return Response(answer.status, dict(answer.getheaders()), answer.read())
    finally:
        connection.close()


def _infer_body(datatype: str = "FP32", data: list | None = None, **fields) -> bytes:
    """A one-row infer request."""
    tensor = {"name": "input", "shape": [1, len(ROW)], "datatype": datatype,
              "data": ROW if data is None else data}
    return json.dumps({"inputs": [tensor], **fields}).encode()


JSON = {"Content-Type": "application/json"}
WHOLE_ROW = [6, 100, 72, 35, 0, 33, 1, 50]
REFUSED = [
    # (body, headers, status, words of the error)
    (_infer_body("INT8", [*WHOLE_ROW[:5], 33.6, *WHOLE_ROW[6:]]), JSON, 400,
     'input "input" (INT8) data[5]: 33.6 is not an integer'),
    (_infer_body("INT8", [300, *WHOLE_ROW[1:]]), JSON, 400,
     'input "input" (INT8) data[0]: 300 is outside INT8 (-128 to 127)'),
    (_infer_body("INT64", [10**60, *WHOLE_ROW[1:]]), JSON, 400,
     f"data[0]: {str(10**60)[:37]}... is outside INT64"),
    (_infer_body("UINT8", [-1, *WHOLE_ROW[1:]]), JSON, 400, "-1 is outside UINT8 (0 to 255)"),
    (_infer_body("BOOL", WHOLE_ROW), JSON, 400, "6 is not true or false"),
    (_infer_body("FP16", [70000, *ROW[1:]]), JSON, 400, "70000 is outside FP16"),
    (_infer_body(data=ROW * 2), JSON, 400, "has 16 values; shape [1, 8] needs 8"),
    (_infer_body(outputs=[{"name": "logits"}]), JSON, 400,
     "unknown output \"logits\"; this model has 'probability', 'label'"),
    (_infer_body(parameters={"binary_data_output": True}), JSON, 400, "binary_data_output"),
    (_infer_body(), {**JSON, "Inference-Header-Content-Length": "120"}, 415,
     "binary tensor extension is not supported"),
    (_infer_body(), {"Content-Type": "text/plain"}, 415, 'got "text/plain"'),
    (_infer_body(), {"Content-Encoding": "gzip"}, 415, "uncompressed"),
    # No Content-Type from another site's page: a body it could send without a preflight.
    (_infer_body(), {"Sec-Fetch-Site": "cross-site"}, 415, "another site"),
    (_infer_body(), {"Origin": "http://elsewhere.example"}, 415, "another site"),
]


@pytest.mark.parametrize(("body", "headers", "status", "words"), REFUSED,
                         ids=[f"{i}-{case[2]}" for i, case in enumerate(REFUSED)])
def test_refusals_over_plain_http(stack, body, headers, status, words):
    """Wrong datatypes, shapes and outputs, binary data, foreign pages: one clear line each."""
    answer = raw_post(f"{stack.url}/v2/models/{MODEL}/infer", body, headers)
    assert answer.status == status, answer.body[:300]
    message = as_json(answer)["error"]
    assert words in message and "Traceback" not in message


def test_no_content_type_is_json_on_v2_only(stack, versions):
    """v2 takes a body without Content-Type (same-origin or no browser); /api/v1 still 415s."""
    path = f"{stack.url}/v2/models/{MODEL}/versions/{versions['production']}/infer"
    for headers in ({}, {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}):
        answer = raw_post(path, _infer_body(), headers)
        assert answer.status == 200, (headers, answer.body[:300])
    v1 = raw_post(f"{stack.url}/api/v1/predict", json.dumps({"rows": [ROW]}).encode(), {})
    assert v1.status == 415 and "application/json" in as_json(v1)["error"]
    too_big = raw_post(path, b" " * (2 << 20) + _infer_body(), {})
    assert too_big.status == 413 and "larger than" in as_json(too_big)["error"]


@contextmanager
def web_front(stack: RunningStack, env: dict[str, str]) -> Iterator[str]:
    """`modelserve web` (gunicorn) beside the stack's broker and workers; yield its URL."""
    port = free_port()
    broker = BrokerNode(stack.home / "broker", stack.broker_port).url()
    web = subprocess.Popen(
        [sys.executable, "-m", "modelserve", "web", "--port", str(port)],
        env=dict(os.environ, MODELSERVE_HOME=str(stack.home), MODELSERVE_BROKER_URL=broker,
                 **env),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(port, 60, web, "modelserve web")
        yield f"http://127.0.0.1:{port}"
    finally:
        web.send_signal(signal.SIGTERM)
        try:
            web.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(web.pid, signal.SIGKILL)
            web.wait(10)


@pytest.fixture(scope="module")
@needs("gunicorn (modelserve web, authentication required)")
def guarded(stack: RunningStack) -> Iterator[str]:
    """A second front door on the shared stack that requires a token, as off loopback."""
    with web_front(stack, {"MODELSERVE_AUTH": "required"}) as url:
        probe = client_for(url)
        deadline = time.monotonic() + STARTUP_SECONDS
        # A new web process hears of the workers within a few seconds (readiness is open).
        while not probe.is_server_ready() and time.monotonic() < deadline:
            time.sleep(0.2)
        probe.close()
        yield url


def test_tritonclient_passes_a_token_where_one_is_required(guarded, stack, dataset, reliability):
    """Without a token: 401 (the probes stay open); with headers=Authorization: answers."""
    client = client_for(guarded)
    _name, token = create_token(stack.home)
    rows = dataset.features[:4].astype(np.float32)
    try:
        assert client.is_server_live()
        with pytest.raises(InferenceServerException) as caught:
            client.infer(MODEL, [json_input(rows, "FP32")], outputs=json_outputs("probability"))
        assert caught.value.status() == "401" and "Bearer" in caught.value.message()
        with pytest.raises(InferenceServerException) as caught:
            client.infer(MODEL, [json_input(rows, "FP32")], outputs=json_outputs("probability"),
                         headers=bearer("not-a-token"))
        assert caught.value.status() == "401"
        assert not client.is_model_ready(MODEL)
        headers = bearer(token)
        assert client.is_model_ready(MODEL, headers=headers)
        assert client.get_model_metadata(MODEL, headers=headers)["name"] == MODEL
        result = client.infer(MODEL, [json_input(rows, "FP32")],
                              outputs=json_outputs("probability"), headers=headers)
    finally:
        client.close()
    np.testing.assert_allclose(result.as_numpy("probability")[:, 0],
                               predict_v1(stack, rows)["probabilities"], atol=1e-6)
    reliability.record("Security", "tritonclient.http with authentication required",
                       "no token and a wrong token: 401; the token in headers=: answered",
                       refused=3, answered=3)
