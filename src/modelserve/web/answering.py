"""The prediction endpoints' reading and answering, shared by the Flask views and the hot path.

No framework here: a body already read, a Service and its views in, plain dicts out, so that
web/api.py (Flask) and web/fast.py (the event loop) answer byte for byte alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from modelserve.errors import UserError
from modelserve.model import answers
from modelserve.model.spec import ModelSpec
from modelserve.web import inference
from modelserve.web.app_service import ModelView, Service
from modelserve.web.csrf import same_origin
from modelserve.web.parsing import JSON_TYPES, BadRequest, parse_json, rows_from_v1
from modelserve.web.predictors import Prediction, Unavailable

SWITCHED = "the live model changed while the request was scored; send it again"


def v1_rows(view: ModelView, body: bytes, content_type: str | None) -> np.ndarray:
    """An /api/v1 request's rows, read against the model's features."""
    payload = parse_json(body, content_type, view.settings.max_body_bytes)
    return rows_from_v1(payload, view.features(), view.settings.max_request_rows)


def v1_answer(view: ModelView, prediction: Prediction) -> dict[str, Any]:
    """The /api/v1 answer to a prediction."""
    output = answering_spec(view, prediction).output
    return {"model": view.name, "model_version": prediction.version,
            "prediction_id": prediction.id, "worker": prediction.worker,
            **answers.v1_answer(output, prediction.outputs, prediction.labels)}


def transport(header: Callable[[str], str | None]) -> inference.Transport:
    """What a request's headers (looked up by name, any case) say of its body."""
    return inference.Transport(
        content_type=header("Content-Type"),
        content_encoding=header("Content-Encoding"),
        header_length=header(inference.HEADER_LENGTH),
        cross_site=not same_origin(header("Sec-Fetch-Site"), header("Origin"),
                                   header("Host") or ""))


def v2_payload(body: bytes, transport: inference.Transport, limit: int) -> Any:
    """An Open Inference Protocol body, by that protocol's media rules."""
    inference.check_transport(transport)
    return parse_json(body, JSON_TYPES[0], limit)


def infer_call(view: ModelView, spec: ModelSpec, payload: Any) -> inference.InferRequest:
    """An inference request read against the live spec."""
    offered = inference.datatypes(answers.tensors(spec.output))
    return inference.parse_infer_request(payload, spec.feature_names, offered,
                                         view.settings.max_request_rows)


def infer_answer(name: str, view: ModelView, call: inference.InferRequest,
                 prediction: Prediction) -> dict[str, Any]:
    """The Open Inference Protocol answer to a prediction."""
    output = answering_spec(view, prediction).output
    tensors = answers.tensors(output)
    if not set(call.outputs) <= {tensor.name for tensor in tensors}:
        raise Unavailable(SWITCHED)  # a switch to a model of another task, mid-request
    data = answers.tensor_data(output, prediction.outputs, prediction.labels)
    # The protocol's parameters carry our prediction id (feedback names it, and a row).
    answer: dict[str, Any] = {"model_name": name, "model_version": prediction.version,
                              "parameters": {"prediction_id": prediction.id},
                              "outputs": inference.output_tensors(call, data, tensors)}
    if call.id is not None:
        answer["id"] = call.id
    return answer


def served_spec(service: Service, name: str, version: str | None) -> tuple[ModelView, ModelSpec]:
    """A served model and its live spec, if `version` (when given) is its live version."""
    view = service.served_model(name)
    spec = view.active_spec()
    if spec is None:
        raise BadRequest(f"model {name!r}: no version of it is active", 404)
    if version is not None and version != spec.version:
        raise BadRequest(f"version {version!r} is not the live version of {name!r}; only "
                         f"{spec.version} is served", 404)
    return view, spec


def answering_spec(view: ModelView, prediction: Prediction) -> ModelSpec:
    """The spec of the version that computed a prediction: while workers switch, maybe not
    the active one, and its outputs are read by its own task."""
    active = view.active_spec()
    spec = active if active is not None and active.version == prediction.version else None
    if spec is None:
        try:
            spec = view.registry.get(prediction.version).spec
        except UserError:  # not a registered version: the active one is all there is
            spec = active
    if spec is None or prediction.outputs.shape[1:] != (spec.output.width,):
        raise Unavailable(SWITCHED)
    return spec
