"""The OpenAPI 3 document for the JSON API, built from the live settings and model.

The answers are those of the active model's task (model.answers): its v1 fields, its v2
output tensors. Before any model is active, the document describes a binary classifier.
The per-model paths (/api/v1/models/{name}/predict, /v2/models/{name}/...) enumerate the
served models; with several, their bodies are any one model's (each under "<Schema>.<model>").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from modelserve import __version__
from modelserve.config import Settings
from modelserve.model.answers import tensors
from modelserve.model.spec import Output, Task
from modelserve.web.inference import DATATYPES
from modelserve.web.parsing import FLOAT32_MAX

N_FEATURES = 8
NO_MODEL = Output("output", Task.BINARY, ("0", "1"), 0.5)  # described until one is active
EXAMPLE_ROW = [6, 148, 72, 35, 0, 33.6, 0.627, 50]
# The schemas that differ from model to model (features, task, outputs).
PER_MODEL = ("PredictRequest", "PredictResponse", "InferInput", "InferOutput", "InferRequest",
             "InferResponse", "FeedbackRequest")
FEEDBACK_OPERATION = "giveFeedback"
EXAMPLE_ID = "0192f1c3a4b5c6d7e8f90a1b2c3d4e5f"  # a well-formed id; only real answers' ids count
PREDICTION_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$",
                 "description": "names this answer in feedback (with a row number)"}


@dataclass(frozen=True)
class Described:
    """One served model as the document describes it."""

    name: str
    features: list[str]
    version: str
    output: Output


def _ref(name: str) -> dict:
    """A reference to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, example: object = None) -> dict:
    """A JSON content entry, with an example when one is given."""
    media: dict = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"content": {"application/json": media}}


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "required": True,
                               "schema": {"type": "integer", "minimum": 0}}}


def _errors(*codes: int) -> dict:
    """Error responses, each a JSON {"error": "..."}; a 503 says when to retry."""
    reasons = {400: "invalid request", 404: "unknown model, version or prediction id",
               409: "a row that already has feedback, or is given twice",
               413: "body or row count over the limit",
               415: "not JSON (or binary tensors, which are not supported)",
               503: "broker, workers or model unavailable; see Retry-After",
               504: "no answer within the deadline"}
    answers = {str(code): {"description": reasons[code], **_json(_ref("Error"))} for code in codes}
    if "503" in answers:
        answers["503"]["headers"] = RETRY_AFTER
    return answers


def _tensor_schemas(n_features: int, output: Output) -> dict:
    """Open Inference Protocol tensors: the one input, the outputs, their metadata."""
    # The datatype says which: integers in its range, true/false for BOOL, numbers for FP*.
    number = {"anyOf": [{"type": "number", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX},
                        {"type": "boolean"}]}
    flat = {"type": "array", "items": number, "minItems": 1,
            "description": "row-major values, rows x features of them"}
    rows = {"type": "array", "minItems": 1, "description": "one list of values per row",
            "items": {"type": "array", "items": number,
                      "minItems": n_features, "maxItems": n_features}}
    return {
        "InferInput": {
            "type": "object", "required": ["name", "shape", "datatype", "data"],
            "description": "shape is [rows, features] and data holds exactly that many values",
            "properties": {
                "name": {"type": "string"},
                "shape": {"type": "array", "minItems": 2, "maxItems": 2,
                          "items": {"type": "integer", "minimum": 1}},
                "datatype": {"type": "string", "enum": list(DATATYPES)},
                "data": {"oneOf": [flat, rows]},
                "parameters": {"type": "object"}}},
        "InferOutput": {
            "type": "object", "required": ["name", "shape", "datatype", "data"],
            "properties": {
                "name": {"type": "string", "enum": [t.name for t in tensors(output)]},
                "shape": {"type": "array", "minItems": 2, "maxItems": 2,
                          "description": "[rows, width]: the model metadata gives each width",
                          "items": {"type": "integer", "minimum": 1}},
                "datatype": {"type": "string",
                             "enum": sorted({t.datatype for t in tensors(output)})},
                "data": {"type": "array", "items": {"type": "number"},
                         "description": "row-major values, rows x width of them"}}},
        "TensorMetadata": {
            "type": "object", "required": ["name", "datatype", "shape"],
            "properties": {"name": {"type": "string"},
                           "datatype": {"type": "string", "enum": list(DATATYPES)},
                           "shape": {"type": "array", "items": {"type": "integer",
                                                                "minimum": -1}}}},
    }


def _predict_response(output: Output) -> dict:
    """The /api/v1/predict answer of this task (model.answers.v1_answer's fields)."""
    task = {"type": "string", "enum": [output.task.value]}
    classes = {"type": "array", "items": {"type": "string", "enum": list(output.classes)},
               "description": "the class names, in the order of the model's outputs"}
    probability = {"type": "number", "minimum": 0, "maximum": 1}
    if output.task is Task.BINARY:
        fields: dict[str, dict] = {
            "probabilities": {"type": "array", "items": probability,
                              "description": f"probability of {output.classes[1]!r} per row"},
            "labels": {"type": "array", "items": {"type": "integer", "enum": [0, 1]},
                       "description": "1 where the probability reaches the threshold"},
            "classes": classes}
    elif output.task is Task.MULTICLASS:
        per_class = {"type": "array", "items": probability, "minItems": output.width,
                     "maxItems": output.width}
        fields = {"probabilities": {"type": "array", "items": per_class,
                                    "description": "per row, one probability per class"},
                  "labels": {"type": "array", "items": {"type": "string",
                                                        "enum": list(output.classes)},
                             "description": "the likeliest class per row"},
                  "classes": classes}
    else:
        fields = {"values": {"type": "array", "items": {"type": "number"},
                             "description": "the predicted value per row"}}
    return {
        "type": "object",
        "required": ["model_version", "prediction_id", "task", *fields, "worker"],
        "properties": {"model": {"type": "string", "description": "the model that answered"},
                       "model_version": {"type": "string"}, "prediction_id": PREDICTION_ID,
                       "task": task, **fields,
                       "worker": {"type": "string", "description": "host:pid of the worker"}}}


def _schemas(settings: Settings, features: list[str], output: Output) -> dict:
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
            "description": f"bodies over {settings.max_body_bytes} bytes are refused (413)",
            "properties": {"rows": {"type": "array", "minItems": 1,
                                    "maxItems": settings.max_request_rows,
                                    "items": {"oneOf": [row_list, row_object]}}}},
        "PredictResponse": _predict_response(output),
        "ServerMetadata": {
            "type": "object", "required": ["name", "version", "extensions"],
            "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                           "extensions": {"type": "array", "items": {"type": "string"}}}},
        "Live": {"type": "object", "required": ["live"],
                 "properties": {"live": {"type": "boolean"}}},
        "Status": {
            "type": "object", "required": ["ready", "broker", "workers", "queue_depth",
                                           "active_version"],
            "properties": {"ready": {"type": "boolean"}, "broker": {"type": "string"},
                           "workers": {"type": "integer", "minimum": 0},
                           "queue_depth": {"type": "integer", "minimum": 0},
                           "active_version": {"type": "string", "nullable": True},
                           "problem": {"type": "string", "nullable": True, "description":
                                       "why the active version cannot be served, if it cannot"
                                       },
                           "models": {"type": "object", "description": "each served model: "
                                      "ready or not", "additionalProperties": {
                                          "type": "boolean"}}}},
        "RepositoryIndexRequest": {
            "type": "object", "properties": {"ready": {
                "type": "boolean", "description": "true: only the models ready now"}}},
        "RepositoryIndex": {
            "type": "array", "items": {
                "type": "object", "required": ["name", "version", "state", "reason"],
                "properties": {"name": {"type": "string"},
                               "version": {"type": "string", "description":
                                           "the live version; empty when none is active"},
                               "state": {"type": "string", "enum": ["READY", "UNAVAILABLE"]},
                               "reason": {"type": "string"}}}},
        **_tensor_schemas(len(features), output),
        "InferRequest": {
            "type": "object", "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "inputs": {"type": "array", "minItems": 1, "maxItems": 1,
                           "items": _ref("InferInput")},
                "outputs": {"type": "array", "items": {
                    "type": "object", "required": ["name"],
                    "properties": {"name": {"type": "string",
                                            "enum": [t.name for t in tensors(output)]},
                                   "parameters": {"type": "object"}}}}}},
        "InferResponse": {
            "type": "object", "required": ["model_name", "model_version", "outputs"],
            "properties": {"model_name": {"type": "string"}, "model_version": {"type": "string"},
                           "id": {"type": "string"},
                           "parameters": {"type": "object", "required": ["prediction_id"],
                                          "properties": {"prediction_id": PREDICTION_ID}},
                           "outputs": {"type": "array", "items": _ref("InferOutput")}}},
        **_feedback_schemas(output),
        "ModelMetadata": {
            "type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"],
            "properties": {"name": {"type": "string"},
                           "versions": {"type": "array", "items": {"type": "string"}},
                           "platform": {"type": "string"},
                           "inputs": {"type": "array", "items": _ref("TensorMetadata")},
                           "outputs": {"type": "array", "items": _ref("TensorMetadata")}}},
        "ModelReady": {"type": "object", "required": ["name", "ready"],
                       "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}},
    }


def _feedback_schemas(output: Output) -> dict:
    """The feedback request and answer, and the live evidence per version."""
    key = _truth_key(output)
    truth: dict = ({"type": "number"} if key == "value" else
                   {"oneOf": [{"type": "string", "enum": list(output.classes)},
                              {"type": "integer", "minimum": 0,
                               "maximum": max(len(output.classes) - 1, 0)}]})
    figure = {"type": "number", "nullable": True}
    return {
        "FeedbackRequest": {
            "type": "object", "required": ["feedback"], "additionalProperties": False,
            "properties": {"feedback": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["prediction_id", key],
                "additionalProperties": False,
                "properties": {"prediction_id": PREDICTION_ID,
                               "row": {"type": "integer", "minimum": 0, "description":
                                       "which row of the prediction (0 when absent)"},
                               key: truth}}}}},
        "FeedbackAccepted": {
            "type": "object", "required": ["model", "accepted"],
            "properties": {"model": {"type": "string"},
                           "accepted": {"type": "integer", "minimum": 1}}},
        "LiveEvidence": {
            "type": "object", "required": ["model", "hours", "versions", "rollout"],
            "properties": {"model": {"type": "string"}, "hours": {"type": "number"},
                           "rollout": _rollout_schema(),
                           "versions": {"type": "array", "items": {
                               "type": "object",
                               "required": ["version", "role", "requests", "errors", "metric",
                                            "labelled", "value", "held_out"],
                               "properties": {
                                   "version": {"type": "string"},
                                   "role": {"type": "string",
                                            "enum": ["live", "canary", "shadow"]},
                                   "requests": {"type": "integer"},
                                   "rows": {"type": "integer"},
                                   "errors": {"type": "integer"},
                                   "error_rate": {"type": "number"},
                                   "latency_p50_ms": figure, "latency_p99_ms": figure,
                                   "metric": {"type": "string"},
                                   "labelled": {"type": "integer"},
                                   "value": figure, "held_out": figure,
                                   "over_time": {"type": "array", "items": {
                                       "type": "object", "properties": {
                                           "start": {"type": "number"},
                                           "labelled": {"type": "integer"},
                                           "value": figure}}}}}}}},
    }


def _truth_key(output: Output) -> str:
    """The feedback field that holds the truth: a value for regression, else a label."""
    return "value" if output.task is Task.REGRESSION else "label"


def _feedback_item(output: Output, prediction_id: str) -> dict:
    """One feedback item: the answer's id, its first row, a truth of the task's kind."""
    truth: float | str = 0.0 if output.task is Task.REGRESSION else output.classes[0]
    return {"prediction_id": prediction_id, "row": 0, _truth_key(output): truth}


def _feedback_link(output: Output) -> dict:
    """The link from an answer to feedback on it: the way to a prediction id the log knows."""
    return {"GiveFeedback": {
        "operationId": FEEDBACK_OPERATION, "parameters": {"path.name": "$request.path.name"},
        "requestBody": {"feedback": [_feedback_item(output, "$response.body#/prediction_id")]},
        "description": "the truth of the answer's first row"}}


def _rollout_schema() -> dict:
    """The rollout under way (null when none): candidate, mode, share, evidence, verdict."""
    figure = {"type": "number", "nullable": True}
    return {
        "type": "object", "nullable": True,
        "required": ["candidate", "live", "mode", "percent", "started_at", "verdict"],
        "properties": {
            "candidate": {"type": "string"}, "live": {"type": "string"},
            "mode": {"type": "string", "enum": ["shadow", "canary"]},
            "percent": {"type": "number"}, "started_at": {"type": "number"},
            "source": {"type": "string"}, "policy": {"type": "object"},
            "agreement": {"type": "object", "properties": {
                "rows": {"type": "integer"}, "labels": figure, "mean_abs_diff": figure}},
            "verdict": {"type": "object", "required": ["decision", "rule", "reason"],
                        "properties": {
                            "decision": {"type": "string",
                                         "enum": ["promote", "abort", "wait"]},
                            "rule": {"type": "string"}, "reason": {"type": "string"}}}}}


def _feedback_paths(names: list[str], schema: str, output: Output) -> dict:
    """The feedback and live-evidence paths of every served model."""
    name = _name_param(names)
    hours = {"name": "hours", "in": "query", "required": False,
             "schema": {"type": "number", "exclusiveMinimum": True, "minimum": 0,
                        "maximum": 8760, "default": 24}}
    return {
        "/api/v1/models/{name}/feedback": {"post": _operation(
            "Give the true label (or value) of answered rows, by prediction id and row",
            _ok("FeedbackAccepted", "recorded"), 400, 404, 409, 413, 415,
            body=f"{schema}FeedbackRequest", params=(name,), operation_id=FEEDBACK_OPERATION,
            example={"feedback": [_feedback_item(output, EXAMPLE_ID)]})},
        "/api/v1/models/{name}/live": {"get": _operation(
            "Each version's live figures: traffic, latency, errors, the metric on fed-back rows",
            _ok("LiveEvidence", "per version"), 400, 404, params=(name, hours))},
    }


def _ok(schema: str, text: str, links: dict | None = None) -> dict:
    """A 200 answer with a JSON body of a component schema (and links to other operations)."""
    return {"description": text, **_json(_ref(schema)), **({"links": links} if links else {})}


def _operation(summary: str, ok: dict, *errors: int, body: str | None = None,
               example: object = None, params: tuple[dict, ...] = (),
               operation_id: str | None = None) -> dict:
    """One operation with its 200 answer and its error answers."""
    operation: dict = {"summary": summary, "responses": {"200": ok, **_errors(*errors)}}
    if operation_id:
        operation["operationId"] = operation_id
    if body:
        operation["requestBody"] = {"required": True, **_json(_ref(body), example)}
    if params:
        operation["parameters"] = list(params)
    return operation


def _readiness(summary: str, schema: str, *errors: int, params: tuple[dict, ...] = ()) -> dict:
    """A readiness probe: the same body whether ready (200) or not (503)."""
    operation = _operation(summary, _ok(schema, "ready"), *errors, params=params)
    operation["responses"]["503"] = _ok(schema, "not ready")
    return operation


def _example_row(n_features: int) -> list[float]:
    """A row of Pima data for the examples (zeros for a model with other features)."""
    return EXAMPLE_ROW if n_features == len(EXAMPLE_ROW) else [0] * n_features


def _infer_example(n_features: int, output: Output) -> dict:
    """An inference request for one row, asking for the model's first output."""
    tensor = {"name": "input", "shape": [1, n_features], "datatype": "FP32",
              "data": _example_row(n_features)}
    return {"id": "example-1", "inputs": [tensor],
            "outputs": [{"name": tensors(output)[0].name}]}


def _predict_example(features: list[str]) -> dict:
    """A prediction request with a row in each form: a list, and an object."""
    row = _example_row(len(features))
    return {"rows": [row, dict(zip(features, row, strict=True))]}


def _name_param(names: list[str]) -> dict:
    """The {name} path parameter: one of the served models."""
    return {"name": "name", "in": "path", "required": True,
            "schema": {"type": "string", "enum": names}}


def _v2_paths(names: list[str], versions: list[str], n_features: int, output: Output,
              schema: str = "") -> dict:
    """The Open Inference Protocol paths; model names and live versions are enumerated.

    `schema` is the prefix of the infer bodies' schemas ("Model." when several models differ).
    """
    name = _name_param(names)
    version_values = {"enum": versions} if versions else {}
    version_param = {"name": "version", "in": "path", "required": True,
                     "schema": {"type": "string", **version_values}}
    by_version = (name, version_param)
    infer_errors = (400, 404, 413, 415, 503, 504)
    infer: dict[str, Any] = {"body": f"{schema}InferRequest",
                             "example": _infer_example(n_features, output)}
    answered = _ok(f"{schema}InferResponse", "outputs")
    return {
        "/v2": {"get": _operation("Server metadata", _ok("ServerMetadata", "server metadata"))},
        "/v2/health/live": {"get": _operation("Liveness", _ok("Live", "live"))},
        "/v2/health/ready": {"get": _readiness("Readiness", "Status")},
        "/v2/models/{name}": {"get": _operation(
            "Model metadata", _ok("ModelMetadata", "metadata"), 404, params=(name,))},
        "/v2/models/{name}/ready": {"get": _readiness(
            "Model readiness", "ModelReady", 404, params=(name,))},
        "/v2/repository/index": {"post": _repository_index()},
        "/v2/models/{name}/infer": {"post": _operation(
            "Inference (Open Inference Protocol)", answered,
            *infer_errors, **infer, params=(name,))},
        "/v2/models/{name}/versions/{version}": {"get": _operation(
            "Model version metadata", _ok("ModelMetadata", "metadata"), 404, params=by_version)},
        "/v2/models/{name}/versions/{version}/ready": {"get": _readiness(
            "Model version readiness", "ModelReady", 404, params=by_version)},
        "/v2/models/{name}/versions/{version}/infer": {"post": _operation(
            "Inference on a named version (only the live one)", answered,
            *infer_errors, **infer, params=by_version)},
    }


def _repository_index() -> dict:
    """Triton's model repository index: every model, its live version and state."""
    operation = _operation("Model repository index (Triton's extension)",
                           _ok("RepositoryIndex", "every model"), 400, 415)
    operation["requestBody"] = {"required": False,
                                **_json(_ref("RepositoryIndexRequest"), {"ready": True})}
    return operation


def _model_schemas(settings: Settings, models: Sequence[Described]) -> dict:
    """Each model's own body schemas under "<Schema>.<model>", and "Model.<Schema>": any one."""
    found: dict[str, Any] = {}
    for model in models:
        own = _schemas(settings, model.features, model.output)
        for key in PER_MODEL:
            found[f"{key}.{model.name}"] = _renamed(own[key], model.name)
    for key in PER_MODEL:
        found[f"Model.{key}"] = {"anyOf": [_ref(f"{key}.{model.name}") for model in models]}
    return found


def _renamed(schema: Any, model: str) -> Any:
    """A schema whose references to per-model schemas point to this model's."""
    if isinstance(schema, dict):
        ref = schema.get("$ref", "")
        if ref.rsplit("/", 1)[-1] in PER_MODEL:
            return {"$ref": f"{ref}.{model}"}
        return {key: _renamed(value, model) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_renamed(item, model) for item in schema]
    return schema


def document(settings: Settings, features: list[str] | None = None,
             version: str | None = None, output: Output | None = None,
             models: Sequence[Described] = ()) -> dict:
    """The whole OpenAPI document: the default model's paths (features, version, output),
    and the per-model paths for every served model in `models`."""
    features = features or [f"x{i}" for i in range(N_FEATURES)]
    output = output or NO_MODEL
    names = [model.name for model in models] or [settings.model_name]
    versions = sorted({model.version for model in models}) or ([version] if version else [])
    # One model: its bodies are the default's; several: any one of theirs.
    several = len(models) > 1
    prefix = "Model." if several else ""
    paths = {
        "/api/v1/predict": {"post": _operation(
            "Score rows with the default model (lists in feature order, or objects keyed by "
            "feature name)",
            _ok("PredictResponse", _answered(output)),
            400, 413, 415, 503, 504, body="PredictRequest",
            example=_predict_example(features))},
        "/api/v1/models/{name}/predict": {"post": _operation(
            "Score rows with the named model",
            _ok(f"{prefix}PredictResponse", "its answer", links=_feedback_link(output)),
            400, 404, 413, 415, 503, 504, body=f"{prefix}PredictRequest",
            example=_predict_example(features), params=(_name_param(names),))},
        **_feedback_paths(names, prefix, output),
        **_v2_paths(names, versions, len(features), output, prefix),
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
            "description": "text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "modelserve", "version": __version__,
                 "description": "Predictions from the active model, computed by the workers."},
        "paths": paths,
        "components": {"schemas": {**_schemas(settings, features, output),
                                   **(_model_schemas(settings, models) if several else {})}},
    }


def _answered(output: Output) -> str:
    """What a prediction answers with, in words, for the task."""
    if output.task is Task.REGRESSION:
        return "the predicted values and the model version"
    if output.task is Task.MULTICLASS:
        return "per-class probabilities, the likeliest class and the model version"
    return "probabilities, labels and the model version"
