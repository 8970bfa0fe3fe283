"""Open Inference Protocol (KServe v2) requests as typed objects: transport, tensors, outputs.

Pure logic, no Flask: the infer route hands in what the request carried and the model's
features and outputs, and gets an InferRequest, or a BadRequest that says what is wrong and
what is supported. Only JSON tensors are served; the protocol's binary tensor extension
(tritonclient's default), BYTES tensors, shared memory and classification are refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelserve.model.answers import Tensor
from modelserve.web.parsing import JSON_TYPES, BadRequest, check_count, number, shown

INTEGER_RANGES = {
    "INT8": (-(2**7), 2**7 - 1), "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1), "INT64": (-(2**63), 2**63 - 1),
    "UINT8": (0, 2**8 - 1), "UINT16": (0, 2**16 - 1), "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
}
FLOAT16_MAX = float(np.finfo(np.float16).max)
FLOAT_TYPES = ("FP16", "FP32", "FP64")
DATATYPES = ("BOOL", *FLOAT_TYPES, *INTEGER_RANGES)
SUPPORTED = "JSON tensors of datatype BOOL, FP16/32/64, INT8/16/32/64 or UINT8/16/32/64"
BINARY_EXTENSION = "the binary tensor extension is not supported"
HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_KINDS: dict[type, str] = {str: "a string", dict: "an object", list: "a list"}


@dataclass(frozen=True)
class Transport:
    """What an infer request says of its body, from its headers."""

    content_type: str | None
    content_encoding: str | None = None
    header_length: str | None = None  # Inference-Header-Content-Length: binary tensors follow
    cross_site: bool = False  # a browser says another site's page sent it


@dataclass(frozen=True)
class InferRequest:
    """One infer call: its rows for the model and the outputs to answer with, in order."""

    id: str | None
    input_name: str
    datatype: str
    rows: np.ndarray  # float32, [rows, features]
    outputs: tuple[str, ...]


def check_transport(transport: Transport) -> None:
    """Refuse a body that is not plain JSON; a body without Content-Type is taken as JSON."""
    if transport.header_length is not None:
        raise BadRequest(f"{HEADER_LENGTH}: {BINARY_EXTENSION}; send {SUPPORTED}", 415)
    encoding = (transport.content_encoding or "identity").strip().lower()
    if encoding != "identity":
        raise BadRequest(f"Content-Encoding {shown(encoding)} is not supported; send the body "
                         "uncompressed", 415)
    media_type = (transport.content_type or "").split(";")[0].strip().lower()
    # tritonclient sends no Content-Type. A page on another site could send such a body
    # without a CORS preflight, so from there it stays refused (see web/csrf.py).
    if media_type in JSON_TYPES or (not media_type and not transport.cross_site):
        return
    got = shown(media_type) if media_type else "none, from another site's page"
    raise BadRequest(f"send Content-Type: application/json (got {got}); this server takes "
                     f"{SUPPORTED}", 415)


def parse_infer_request(payload: Any, features: Sequence[str], outputs: Mapping[str, str],
                        max_rows: int) -> InferRequest:
    """Read an infer request: one tensor of shape [rows, features] checked against its datatype."""
    tensor = _the_input(payload)
    name, datatype = tensor["name"], _datatype(tensor["datatype"])
    _refuse_extensions(payload.get("parameters", {}), tensor.get("parameters", {}))
    wanted = select_outputs(payload.get("outputs"), outputs)  # before reading every value
    shape = _shape(tensor["shape"], len(features), max_rows)
    values = _flatten(tensor["data"], len(features))
    if len(values) != shape[0] * shape[1]:
        raise BadRequest(f"inputs[0].data has {len(values)} values; "
                         f"shape {shape} needs {shape[0] * shape[1]}")
    read = _reader(datatype)
    where = f"input {shown(name)} ({datatype}) data"
    flat = [read(value, f"{where}[{i}]") for i, value in enumerate(values)]
    return InferRequest(
        id=payload.get("id"), input_name=name, datatype=datatype,
        rows=np.asarray(flat, dtype=np.float32).reshape(shape),
        outputs=wanted)


def select_outputs(requested: Any, available: Mapping[str, str]) -> tuple[str, ...]:
    """The outputs named in the request, in its order; all of them when it names none."""
    if requested is None or requested == []:  # absent (a null is refused by _the_input)
        return tuple(available)
    if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
        raise BadRequest('"outputs" must be a list of {"name": ...} objects')
    names = []
    for i, output in enumerate(requested):
        name = output.get("name")
        if not isinstance(name, str) or name not in available:
            raise BadRequest(f"outputs[{i}]: unknown output {shown(name)}; this model has "
                             f"{', '.join(repr(known) for known in available)}")
        if name in names:
            raise BadRequest(f"outputs[{i}]: output {shown(name)} is asked for twice")
        parameters = output.get("parameters", {})
        if not isinstance(parameters, dict):
            raise BadRequest(f'outputs[{i}]: "parameters" must be an object')
        _refuse_output_extensions(parameters, f"outputs[{i}] {shown(name)}")
        names.append(name)
    return tuple(names)


def output_tensors(request: InferRequest, data: Mapping[str, list],
                   tensors: Sequence[Tensor]) -> list[dict]:
    """The requested outputs as protocol tensors of shape [rows, width], in the request's order.

    data holds each tensor's values flattened row-major (answers.tensor_data).
    """
    rows = len(request.rows)
    by_name = {tensor.name: tensor for tensor in tensors}
    return [{"name": name, "datatype": by_name[name].datatype,
             "shape": [rows, by_name[name].width], "data": data[name]}
            for name in request.outputs]


def tensor_metadata(tensors: Sequence[Tensor]) -> list[dict]:
    """The model metadata's outputs: each tensor's name, datatype and shape [-1, width]."""
    return [{"name": t.name, "datatype": t.datatype, "shape": [-1, t.width]} for t in tensors]


def datatypes(tensors: Sequence[Tensor]) -> dict[str, str]:
    """Each output's datatype by name, in the model's order (what a request may ask for)."""
    return {tensor.name: tensor.datatype for tensor in tensors}


def _the_input(payload: Any) -> dict:
    """The request's one input tensor, with the protocol's fields of the right JSON types."""
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise BadRequest('send {"inputs": [{"name", "shape", "datatype", "data"}]}')
    if len(payload["inputs"]) != 1:
        raise BadRequest(f"expected exactly 1 input tensor, got {len(payload['inputs'])}")
    _check_types(payload, "the request", {"id": str, "parameters": dict, "outputs": list})
    tensor = payload["inputs"][0]
    if not isinstance(tensor, dict):
        raise BadRequest("inputs[0] must be an object")
    for key in ("name", "shape", "datatype", "data"):
        if key not in tensor:
            raise BadRequest(f"inputs[0] lacks {key!r}")
    _check_types(tensor, "inputs[0]", {"name": str, "parameters": dict})
    return tensor


def _check_types(fields: dict, where: str, kinds: dict[str, type]) -> None:
    """Refuse optional protocol fields of the wrong JSON type (a name that is not a string)."""
    for key, kind in kinds.items():
        if key in fields and not isinstance(fields[key], kind):
            raise BadRequest(f"{where}: {key!r} must be {JSON_KINDS[kind]}")


def _datatype(datatype: Any) -> str:
    """A datatype this server reads; BYTES and others are refused saying what is supported."""
    if datatype in DATATYPES:
        return datatype
    if datatype == "BYTES":
        raise BadRequest(f"inputs[0].datatype BYTES is not supported: the model takes numeric "
                         f"features; send {SUPPORTED}")
    raise BadRequest(f"inputs[0].datatype {shown(datatype)} is not a numeric or BOOL datatype; "
                     f"send {SUPPORTED}")


def _refuse_extensions(request_parameters: dict, input_parameters: dict) -> None:
    """Refuse binary outputs for the whole request, and binary or shared-memory input data."""
    if request_parameters.get("binary_data_output", False) is not False:
        raise BadRequest(f'parameters.binary_data_output: {BINARY_EXTENSION}; ask for each '
                         'output by name with "parameters": {"binary_data": false} '
                         "(tritonclient: InferRequestedOutput(name, binary_data=False))")
    if "binary_data_size" in input_parameters:
        raise BadRequest(f"inputs[0].parameters.binary_data_size: {BINARY_EXTENSION}; send "
                         f"{SUPPORTED}")
    if "shared_memory_region" in input_parameters:
        raise BadRequest(f"inputs[0]: shared memory is not supported; send {SUPPORTED}")


def _refuse_output_extensions(parameters: dict, where: str) -> None:
    """Refuse an output asked for in binary, in shared memory or as classification."""
    if parameters.get("binary_data", False) is not False:
        raise BadRequest(f"{where}: {BINARY_EXTENSION}; set \"binary_data\": false "
                         "(tritonclient: InferRequestedOutput(name, binary_data=False))")
    if "shared_memory_region" in parameters:
        raise BadRequest(f"{where}: shared memory is not supported; outputs come in the answer")
    if parameters.get("classification", 0):
        raise BadRequest(f"{where}: the classification extension is not supported")


def _shape(shape: Any, n_features: int, max_rows: int) -> list[int]:
    """A shape [rows, features] with the model's feature count and an allowed row count."""
    if not (isinstance(shape, list) and len(shape) == 2 and all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        raise BadRequest("inputs[0].shape must be [rows, features]")
    if shape[1] != n_features:
        raise BadRequest(f"inputs[0].shape {shown(shape)}: the model takes {n_features} features")
    check_count(shape[0], max_rows)
    return shape


def _flatten(data: Any, n_features: int) -> list:
    """Read tensor data given flat (row-major) or as one list of n_features values per row."""
    if not isinstance(data, list):
        raise BadRequest("inputs[0].data must be a list")
    if not any(isinstance(item, list) for item in data):
        return data
    # Nesting must follow the shape: deeper or ragged lists would be scored as some other rows.
    if not all(isinstance(row, list) and len(row) == n_features for row in data):
        raise BadRequest(f"inputs[0].data: give the values flat, or as lists of {n_features} "
                         "values, one per row")
    return [value for row in data for value in row]


def _reader(datatype: str) -> Callable[[Any, str], float]:
    """The function that checks one value of this datatype and gives it as a float."""
    if datatype == "BOOL":
        return _boolean
    if datatype in INTEGER_RANGES:
        low, high = INTEGER_RANGES[datatype]
        return lambda value, where: _integer(value, where, datatype, low, high)
    if datatype == "FP16":
        return _float16
    return number  # FP32, and FP64 too: the model computes in float32


def _boolean(value: Any, where: str) -> float:
    """Accept true or false (not 0 or 1: the datatype says what the values are)."""
    if not isinstance(value, bool):
        raise BadRequest(f"{where}: {shown(value)} is not true or false")
    return float(value)


def _integer(value: Any, where: str, datatype: str, low: int, high: int) -> float:
    """Accept a JSON integer within the datatype's range (33.6 or 6.0 is not an integer)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{where}: {shown(value)} is not an integer")
    if not low <= value <= high:
        raise BadRequest(f"{where}: {shown(value)} is outside {datatype} ({low} to {high})")
    return float(value)


def _float16(value: Any, where: str) -> float:
    """Accept a finite number within float16's range."""
    result = number(value, where)
    if abs(result) > FLOAT16_MAX:
        raise BadRequest(f"{where}: {shown(value)} is outside FP16 (±{FLOAT16_MAX:g})")
    return result
