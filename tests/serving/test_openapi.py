"""The OpenAPI document of a real stack: valid, complete, and honoured by every operation.

The schemathesis CLI, run as a user would, sends valid and invalid generated requests to every
documented operation and checks each answer against the document.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import jsonschema_rs
import pytest
import schemathesis

from modelserve.config import load_settings
from modelserve.web import create_app, openapi
from serving.stack_helpers import free_port, http

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
SEED = 20261125
MAX_EXAMPLES = 25  # per operation and phase: about 900 requests, 15 s on 2 cores
API_ROUTES = ("/api/", "/v2", "/metrics")
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}

# Only the checks below, and stricter than schemathesis' defaults, which would also let a valid
# request be refused with 404/409/5xx and an invalid one be answered 401/403/405/409/422/5xx.
# The API has no authentication and creates no resources, so the auth and stateful-resource
# checks (ignored_auth, use_after_free, ...) have nothing to look at.
CONFIG = """
[checks]
enabled = false

[checks.not_a_server_error]
enabled = true

[checks.status_code_conformance]
enabled = true

[checks.content_type_conformance]
enabled = true

[checks.response_schema_conformance]
enabled = true

[checks.response_headers_conformance]
enabled = true

[checks.negative_data_rejection]
enabled = true
# 400 a bad body, 404 a model name or version other than the enumerated live ones,
# 413 more rows than maxItems, 415 not JSON.
expected-statuses = ["400", "404", "413", "415"]

[checks.positive_data_acceptance]
enabled = true
# The stack is ready: every request the document calls valid must be answered.
expected-statuses = ["200"]

# An inference tensor holds shape[0] x shape[1] values and shape[1] is the model's feature
# count: relations JSON Schema cannot state, so schema-valid tensors are often, rightly,
# refused with 400. The documented example and the generated tensors that happen to agree
# with their shape still reach the model (test_every_operation_gets_valid_and_invalid_requests).
[[operations]]
include-path-regex = "/infer$"
checks.positive_data_acceptance.enabled = false
"""


@pytest.fixture(scope="module")
def document(stack) -> dict:
    """The OpenAPI document the live stack serves."""
    answer = http("GET", f"{stack.url}/openapi.json")
    assert answer.status == 200, answer.body[:300]
    return answer.json()


@pytest.fixture(scope="module")
def fuzz_run(stack, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """Run the schemathesis CLI once against the live document: the run and its event report."""
    workdir = tmp_path_factory.mktemp("schemathesis")
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    report = workdir / "events.ndjson"
    command = [
        str(SCHEMATHESIS), "--config-file", str(config), "--no-color",
        "run", f"{stack.url}/openapi.json",
        "--mode", "all", "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES),
        "--generation-database", "none", "--continue-on-failure", "--request-timeout", "10",
        # One worker: with several, Hypothesis failed inside CPython 3.11's ast module
        # ("AST constructor recursion depth mismatch") while describing its strategies.
        "--workers", "1",
        "--report", "ndjson", "--report-ndjson-path", str(report),
    ]
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True,
                            timeout=300, check=False)
    return result, report


def operations(document: dict) -> dict[str, dict]:
    """Every documented operation, keyed "METHOD /path/{param}"."""
    return {f"{method.upper()} {path}": operation
            for path, item in document["paths"].items()
            for method, operation in item.items() if method in HTTP_METHODS}


def openapi_path(rule: str) -> str:
    """A Flask rule written as an OpenAPI path: /v2/models/<name> -> /v2/models/{name}."""
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)


def answers_by_operation(report: Path) -> dict[str, set[tuple[str, int]]]:
    """(generation mode, status class) of every answered request, by operation label."""
    seen: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for line in report.read_text().splitlines():
        recorder = json.loads(line).get("ScenarioFinished", {}).get("recorder", {})
        for case_id, case in recorder.get("cases", {}).items():
            response = recorder["interactions"].get(case_id, {}).get("response")
            if response is None:
                continue
            value = case["value"]
            mode = ((value.get("meta") or {}).get("generation") or {}).get("mode")
            seen[f"{value['method']} {value['path']}"].add((mode, response["status_code"] // 100))
    return seen


def test_schemathesis_finds_no_failure(fuzz_run, stack, versions):
    """Every generated request gets an answer the document allows; production stays live."""
    result, _report = fuzz_run
    assert result.returncode == 0, f"{result.stdout[-30000:]}\n{result.stderr[-5000:]}"
    ready = http("GET", f"{stack.url}/v2/health/ready").json()
    assert ready["active_version"] == versions["production"]


def test_every_operation_gets_valid_and_invalid_requests(fuzz_run, document):
    """Each operation answers a valid request with 2xx and, if it takes input, refuses bad input."""
    _result, report = fuzz_run
    seen = answers_by_operation(report)
    for label, operation in operations(document).items():
        assert ("positive", 2) in seen[label], f"{label}: no valid request answered: {seen[label]}"
        if operation.get("parameters") or operation.get("requestBody"):
            assert ("negative", 4) in seen[label], f"{label}: no invalid request refused"


def test_document_is_valid_openapi(document, stack):
    """The live document, and the one served before any model is active, are valid OpenAPI 3."""
    assert document["openapi"].startswith("3.0.")
    schemathesis.openapi.from_url(f"{stack.url}/openapi.json").validate()
    without_model = openapi.document(load_settings({"MODELSERVE_HOME": str(stack.home)}))
    schemathesis.openapi.from_dict(without_model).validate()


def test_request_examples_match_their_schemas(document):
    """Each documented request example is valid against its own body schema."""
    bodies = {label: op["requestBody"]["content"]["application/json"]
              for label, op in operations(document).items() if "requestBody" in op}
    assert bodies, "no operation documents a request body"
    for label, media in bodies.items():
        validator = jsonschema_rs.Draft4Validator(
            {**media["schema"], "components": document["components"]})
        assert "example" in media, f"{label}: no example"
        errors = [error.message for error in validator.iter_errors(media["example"])]
        assert not errors, f"{label}: {errors}"


def test_every_api_route_is_documented(document, stack):
    """The Flask app's /api, /v2 and /metrics routes and the documented operations are the same."""
    app = create_app(load_settings({"MODELSERVE_HOME": str(stack.home)}), inline=True)
    served = {f"{method} {openapi_path(rule.rule)}"
              for rule in app.url_map.iter_rules() if rule.rule.startswith(API_ROUTES)
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert served == set(operations(document))


def test_answers_when_not_ready_match_the_document(stack):
    """With the broker gone: readiness 503s with its usual body, predictions 503 + Retry-After."""
    broker = f"amqp://guest:guest@127.0.0.1:{free_port()}//"  # nobody listens there
    app = create_app(load_settings({"MODELSERVE_HOME": str(stack.home),
                                    "MODELSERVE_BROKER_URL": broker}))
    client = app.test_client()
    served = client.get("/openapi.json").json
    schema = schemathesis.openapi.from_dict(served)
    predict = served["paths"]["/api/v1/predict"]["post"]["requestBody"]["content"]
    infer = served["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]
    calls = [("GET", "/v2/health/ready", "/v2/health/ready", None),
             ("GET", "/v2/models/{name}/ready", "/v2/models/diabetes/ready", None),
             ("POST", "/api/v1/predict", "/api/v1/predict", predict["application/json"]),
             ("POST", "/v2/models/{name}/infer", "/v2/models/diabetes/infer",
              infer["application/json"])]
    try:
        for method, template, path, media in calls:
            body = media["example"] if media else None
            response = client.open(path, method=method, json=body)
            assert response.status_code == 503, (path, response.json)
            assert_documented(schema, served, method, template, response)
    finally:
        app.extensions["modelserve"].close()


def assert_documented(schema, document: dict, method: str, template: str, response) -> None:
    """The status, the required headers and the body of an answer are the documented ones."""
    documented = document["paths"][template][method.lower()]["responses"]
    answer = documented.get(str(response.status_code))
    assert answer is not None, f"{method} {template}: {response.status_code} is not documented"
    for name, header in answer.get("headers", {}).items():
        assert not header.get("required") or name in response.headers, f"{name} missing"
    schema[template][method].validate_response(response)
