"""The JSON API: predict per model, the Open Inference Protocol (KServe v2), OpenAPI, metrics."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, jsonify, request

from modelserve import __version__
from modelserve.model import answers
from modelserve.model.spec import ModelSpec
from modelserve.predlog.feedback import read_items
from modelserve.web import answering, evidence, inference, metrics, openapi, service
from modelserve.web.app_service import ROUTING_HEADER, ModelView
from modelserve.web.parsing import BadRequest, parse_json

blueprint = Blueprint("api", __name__)


def _json_body(transport: inference.Transport) -> Any:
    """Read an Open Inference Protocol body as JSON within the configured size limit."""
    return answering.v2_payload(_body(), transport, service().settings.max_body_bytes)


def _body() -> bytes:
    """The request body within the configured size limit (larger: a 413 before reading)."""
    request.max_content_length = service().settings.max_body_bytes
    return request.get_data(cache=False)


def _routing_key() -> str | None:
    """The client's routing key: during a canary, one key keeps to one version."""
    return request.headers.get(ROUTING_HEADER)


@blueprint.post("/api/v1/predict")
def predict_v1():
    """Score rows with the default model (lists of values or objects keyed by feature name)."""
    return _predict_with(service().default())


@blueprint.post("/api/v1/models/<name>/predict")
def predict_model(name: str):
    """Score rows with the named model, as /api/v1/predict does with the default one."""
    return _predict_with(service().served_model(name))


def _predict_with(view: ModelView):
    """One /api/v1 prediction with a model: the rows read against its features."""
    rows = answering.v1_rows(view, _body(), request.content_type)
    return jsonify(answering.v1_answer(view, view.predict(rows, _routing_key())))


@blueprint.post("/api/v1/models/<name>/feedback")
def feedback(name: str):
    """Record the truth of answered rows: {"feedback": [{prediction_id, row, label|value}]}."""
    app_service = service()
    view = app_service.served_model(name)
    payload = parse_json(_body(), request.content_type, app_service.settings.max_body_bytes)
    with evidence.refusals():
        truths = read_items(payload, evidence.output_of(view),
                            app_service.settings.max_request_rows)
    evidence.record(app_service, view, truths)
    return jsonify(model=name, accepted=len(truths))


@blueprint.get("/api/v1/models/<name>/live")
def live_evidence(name: str):
    """Each version's live figures (traffic, latency, errors, the metric on fed-back rows)."""
    app_service = service()
    view = app_service.served_model(name)
    hours = evidence.read_hours(request.args.getlist("hours"))
    return jsonify(model=name, hours=hours,
                   versions=[evidence.as_json(item)
                             for item in evidence.evidence(app_service, view, hours)],
                   rollout=evidence.rollout_json(evidence.rollout_status(app_service, view)))


@blueprint.get("/v2")
def server_metadata():
    """Open Inference Protocol: server metadata."""
    return jsonify(name="modelserve", version=__version__, extensions=[])


@blueprint.get("/v2/health/live")
def live():
    """The process answers."""
    return jsonify(live=True)


@blueprint.get("/v2/health/ready")
def ready():
    """Ready when at least one served model is (broker reachable, a worker on its queue)."""
    status = service().status()
    return (jsonify(ready=status["ready"], models=status["models"], **_public(status)),
            200 if status["ready"] else 503)


@blueprint.post("/v2/repository/index")
def repository_index():
    """Triton's model repository extension: every model, its live version and its state."""
    body = _json_body(_transport()) if request.content_length else {}
    if not isinstance(body, dict) or not isinstance(body.get("ready", False), bool):
        raise BadRequest('send nothing, or {"ready": true} for the ready models only')
    index = [_index_entry(view) for view in service().views()]
    if body.get("ready", False):
        index = [entry for entry in index if entry["state"] == "READY"]
    return jsonify(index)


def _index_entry(view: ModelView) -> dict:
    """One model of the repository index: READY, or UNAVAILABLE and why."""
    status = view.status()
    version = status["active_version"] or ""
    if status["ready"]:
        return {"name": view.name, "version": version, "state": "READY", "reason": ""}
    if not version:
        reason = "no active version (retired or never activated)"
    elif status["broker"] == "unreachable":
        reason = "the message broker is not reachable"
    else:
        reason = "no worker consumes its queue"
    return {"name": view.name, "version": version, "state": "UNAVAILABLE", "reason": reason}


@blueprint.get("/v2/models/<name>")
@blueprint.get("/v2/models/<name>/versions/<version>")
def model_metadata(name: str, version: str | None = None):
    """Open Inference Protocol: the model's name, versions and tensors."""
    spec = _served_spec(name, version)[1]
    return jsonify(
        name=name,
        versions=[spec.version],
        platform="keras",
        inputs=[{"name": "input", "datatype": "FP32", "shape": [-1, spec.width]}],
        outputs=inference.tensor_metadata(answers.tensors(spec.output)),
    )


@blueprint.get("/v2/models/<name>/ready")
@blueprint.get("/v2/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: str | None = None):
    """Open Inference Protocol: the model can take inference requests now."""
    view, _spec = _served_spec(name, version)
    is_ready = view.status()["ready"]
    return jsonify(name=name, ready=is_ready), 200 if is_ready else 503


@blueprint.post("/v2/models/<name>/infer")
@blueprint.post("/v2/models/<name>/versions/<version>/infer")
def infer(name: str, version: str | None = None):
    """Open Inference Protocol: score one [rows, features] tensor."""
    view, spec = _served_spec(name, version)
    call = answering.infer_call(view, spec, _json_body(_transport()))
    return jsonify(answering.infer_answer(name, view, call,
                                          view.predict(call.rows, _routing_key())))


@blueprint.get("/openapi.json")
def openapi_document():
    """The OpenAPI 3 description of this API."""
    app_service = service()
    described = [openapi.Described(view.name, spec.feature_names, spec.version, spec.output)
                 for view in app_service.views() if (spec := view.active_spec()) is not None]
    spec = app_service.default().active_spec()
    if spec is None:
        return jsonify(openapi.document(app_service.settings, models=described))
    return jsonify(openapi.document(app_service.settings, spec.feature_names, spec.version,
                                    spec.output, models=described))


@blueprint.get("/metrics")
def prometheus_metrics():
    """Prometheus metrics in the text exposition format."""
    views = service().views()
    body, content_type = metrics.render(
        {view.name: view.status() for view in views},
        [rollout for view in views if (rollout := view.rollout()) is not None])
    return Response(body, content_type=content_type)


def _transport() -> inference.Transport:
    """What the request's headers say of its body."""
    return answering.transport(request.headers.get)


def _served_spec(name: str, version: str | None) -> tuple[ModelView, ModelSpec]:
    """A served model and its live spec, if `version` (when given) is its live version."""
    return answering.served_spec(service(), name, version)


def _public(status: dict) -> dict:
    """The status fields a readiness probe may show, with no server path in them."""
    keys = ("broker", "workers", "queue_depth", "active_version")
    problem = status["problem"]
    return {**{key: status[key] for key in keys},
            "problem": without_paths(problem) if problem else problem}


# An absolute path: a slash, then path characters up to a space, quote, colon or the end.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/-])/[^\s'\":,;()]*")


def without_paths(text: str) -> str:
    """Text with every absolute path cut down to its last component ("model.keras")."""
    return _ABSOLUTE_PATH.sub(lambda match: match.group(0).rstrip("/").rsplit("/", 1)[-1]
                              or "(path)", text)
