"""The OpenAPI 3 document for the JSON API, built from the live settings and model."""

from __future__ import annotations

from modelserve import __version__
from modelserve.config import Settings
from modelserve.web.parsing import FLOAT32_MAX, V2_DATATYPES

N_FEATURES = 8


def _ref(name: str) -> dict:
    """A reference to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict) -> dict:
    """A JSON content entry."""
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    """Error responses, each a JSON {"error": "..."}."""
    reasons = {400: "invalid request", 404: "unknown model or version", 405: "method not allowed",
               413: "body or row count over the limit", 415: "not JSON",
               503: "broker, workers or model unavailable; see Retry-After",
               504: "no answer within the deadline"}
    return {str(code): {"description": reasons[code], **_json(_ref("Error"))} for code in codes}


def _schemas(settings: Settings, features: list[str]) -> dict:
    """Component schemas."""
    number = {"type": "number", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}
    row_list = {"type": "array", "items": number, "minItems": len(features),
                "maxItems": len(features)}
    row_object = {"type": "object", "properties": {name: number for name in features},
                  "required": features, "additionalProperties": False}
    return {
        "Error": {"type": "object", "required": ["error"],
                  "properties": {"error": {"type": "string"}}},
        "PredictRequest": {
            "type": "object", "required": ["rows"], "additionalProperties": False,
            "properties": {"rows": {"type": "array", "minItems": 1,
                                    "maxItems": settings.max_request_rows,
                                    "items": {"oneOf": [row_list, row_object]}}}},
        "PredictResponse": {
            "type": "object",
            "required": ["model_version", "probabilities", "labels", "worker"],
            "properties": {
                "model_version": {"type": "string"},
                "probabilities": {"type": "array",
                                  "items": {"type": "number", "minimum": 0, "maximum": 1}},
                "labels": {"type": "array", "items": {"type": "integer", "enum": [0, 1]}},
                "worker": {"type": "string", "description": "host:pid of the worker"}}},
        "Status": {
            "type": "object", "required": ["ready", "broker", "workers", "queue_depth"],
            "properties": {"ready": {"type": "boolean"}, "broker": {"type": "string"},
                           "workers": {"type": "integer"}, "queue_depth": {"type": "integer"},
                           "active_version": {"type": "string", "nullable": True}}},
        "Tensor": {
            "type": "object", "required": ["name", "shape", "datatype", "data"],
            "properties": {
                "name": {"type": "string"},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 0},
                          "minItems": 2, "maxItems": 2},
                "datatype": {"type": "string", "enum": list(V2_DATATYPES)},
                "data": {"type": "array", "items": {"oneOf": [number, {
                    "type": "array", "items": number}]}},
                "parameters": {"type": "object"}}},
        "InferRequest": {
            "type": "object", "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "inputs": {"type": "array", "minItems": 1, "maxItems": 1,
                           "items": _ref("Tensor")},
                "outputs": {"type": "array", "items": {
                    "type": "object", "required": ["name"],
                    "properties": {"name": {"type": "string", "enum": ["probability", "label"]},
                                   "parameters": {"type": "object"}}}}}},
        "InferResponse": {
            "type": "object", "required": ["model_name", "model_version", "outputs"],
            "properties": {"model_name": {"type": "string"}, "model_version": {"type": "string"},
                           "id": {"type": "string"},
                           "outputs": {"type": "array", "items": _ref("Tensor")}}},
        "ModelMetadata": {
            "type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"],
            "properties": {"name": {"type": "string"},
                           "versions": {"type": "array", "items": {"type": "string"}},
                           "platform": {"type": "string"},
                           "inputs": {"type": "array", "items": {"type": "object"}},
                           "outputs": {"type": "array", "items": {"type": "object"}}}},
        "ModelReady": {"type": "object", "required": ["name", "ready"],
                       "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}},
    }


def _ok(schema: str, text: str) -> dict:
    """A 200 answer with a JSON body of a component schema."""
    return {"description": text, **_json(_ref(schema))}


def _operation(summary: str, ok: dict, *errors: int, body: str | None = None,
               params: tuple[dict, ...] = ()) -> dict:
    """One operation with its 200 answer and its error answers."""
    operation: dict = {"summary": summary, "responses": {"200": ok, **_errors(*errors)}}
    if body:
        operation["requestBody"] = {"required": True, **_json(_ref(body))}
    if params:
        operation["parameters"] = list(params)
    return operation


def document(settings: Settings, features: list[str] | None = None,
             version: str | None = None) -> dict:
    """The whole OpenAPI document; model name and live version are enumerated."""
    features = features or [f"x{i}" for i in range(N_FEATURES)]
    name = {"name": "name", "in": "path", "required": True,
            "schema": {"type": "string", "enum": [settings.model_name]}}
    version_values = {"enum": [version]} if version else {}
    version_param = {"name": "version", "in": "path", "required": True,
                     "schema": {"type": "string", **version_values}}
    paths = {
        "/api/v1/predict": {"post": _operation(
            "Score rows (lists in feature order, or objects keyed by feature name)",
            _ok("PredictResponse", "probabilities, labels and the model version"),
            400, 413, 415, 503, 504, body="PredictRequest")},
        "/v2": {"get": _operation("Server metadata", {"description": "server metadata",
                                                      **_json({"type": "object"})})},
        "/v2/health/live": {"get": _operation("Liveness", {"description": "live",
                                                           **_json({"type": "object"})})},
        "/v2/health/ready": {"get": _operation("Readiness", _ok("Status", "ready"), 503)},
        "/v2/models/{name}": {"get": _operation(
            "Model metadata", _ok("ModelMetadata", "metadata"), 404, params=(name,))},
        "/v2/models/{name}/ready": {"get": _operation(
            "Model readiness", _ok("ModelReady", "ready"), 404, 503, params=(name,))},
        "/v2/models/{name}/infer": {"post": _operation(
            "Inference (Open Inference Protocol)", _ok("InferResponse", "outputs"),
            400, 404, 413, 415, 503, 504, body="InferRequest", params=(name,))},
        "/v2/models/{name}/versions/{version}": {"get": _operation(
            "Model version metadata", _ok("ModelMetadata", "metadata"), 404,
            params=(name, version_param))},
        "/v2/models/{name}/versions/{version}/ready": {"get": _operation(
            "Model version readiness", _ok("ModelReady", "ready"), 404, 503,
            params=(name, version_param))},
        "/v2/models/{name}/versions/{version}/infer": {"post": _operation(
            "Inference on a named version (only the live one)", _ok("InferResponse", "outputs"),
            400, 404, 413, 415, 503, 504, body="InferRequest", params=(name, version_param))},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
            "description": "text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "modelserve", "version": __version__,
                 "description": "Predictions from the active model, computed by the workers."},
        "paths": paths,
        "components": {"schemas": _schemas(settings, features)},
    }
