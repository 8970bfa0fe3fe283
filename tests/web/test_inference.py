"""Open Inference Protocol requests without a server: transport, datatypes, shapes, outputs.

What tritonclient and other v2 clients send is read here (web/inference.py); the infer route
only hands it the headers and the body. The same requests through a real stack and the real
client: tests/serving/test_tritonclient.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelserve.model.answers import labels_for, tensor_data, tensors
from modelserve.model.spec import Output, Task
from modelserve.web.inference import (
    DATATYPES,
    FLOAT16_MAX,
    INTEGER_RANGES,
    InferRequest,
    Transport,
    check_transport,
    datatypes,
    output_tensors,
    parse_infer_request,
    select_outputs,
    tensor_metadata,
)
from modelserve.web.parsing import SHOWN_CHARS, BadRequest

FEATURES = [f"x{i}" for i in range(8)]
OUTPUTS = {"probability": "FP32", "label": "INT8"}
BINARY = Output("output", Task.BINARY, ("0", "1"), 0.5)
IRIS = Output("species", Task.MULTICLASS, ("setosa", "versicolor", "virginica"))
ROW = [6, 148, 72, 35, 0, 33.6, 0.627, 50]
INT_ROW = [6, 100, 72, 35, 0, 33, 1, 50]  # fits every integer datatype
MAX_ROWS = 100


def request(datatype: str = "FP32", data: Any = None, shape: list | None = None,
            name: str = "input", **fields: Any) -> dict:
    """A v2 infer body with one input tensor (the Pima first row unless told otherwise)."""
    data = ROW if data is None else data
    shape = shape or [1, len(FEATURES)]
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}],
            **fields}


def parse(payload: Any) -> InferRequest:
    """Parse a body for the 8-feature model with the binary model's two outputs."""
    return parse_infer_request(payload, FEATURES, OUTPUTS, MAX_ROWS)


def refusal(payload: Any) -> BadRequest:
    """The BadRequest a body gets (the test fails if it is accepted)."""
    with pytest.raises(BadRequest) as caught:
        parse(payload)
    return caught.value


# ---- transport ------------------------------------------------------------------------------

@pytest.mark.parametrize("content_type", [None, "", "application/json",
                                          "Application/JSON; charset=utf-8"])
def test_json_or_no_content_type_is_taken(content_type):
    """tritonclient sends no Content-Type: the body is then JSON."""
    check_transport(Transport(content_type))


@pytest.mark.parametrize(("transport", "words"), [
    (Transport("text/plain"), 'application/json (got "text/plain"); this server takes JSON '
                              "tensors of datatype BOOL, FP16/32/64"),
    (Transport("application/octet-stream"), "application/json"),
    (Transport(None, cross_site=True), "another site"),
    (Transport("application/x-www-form-urlencoded", cross_site=True), "application/json"),
    (Transport(None, header_length="120"), "binary tensor extension is not supported; send "
                                           "JSON tensors"),
    (Transport("application/json", header_length="0"), "Inference-Header-Content-Length"),
    (Transport(None, content_encoding="gzip"), 'Content-Encoding "gzip" is not supported; '
                                               "send the body uncompressed"),
])
def test_other_bodies_are_415_saying_what_is_supported(transport, words):
    """Another media type, binary tensors, compression, or no type from a foreign page: 415."""
    with pytest.raises(BadRequest) as caught:
        check_transport(transport)
    assert caught.value.status == 415 and words in str(caught.value), str(caught.value)


# ---- datatypes ------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "words"), [(33.6, "33.6 is not an integer"),
                                              (300, "300 is outside INT8 (-128 to 127)"),
                                              (6.0, "6.0 is not an integer"),
                                              (True, "true is not an integer"),
                                              ("6", '"6" is not an integer')])
def test_int8_takes_integers_in_range_only(value, words):
    """INT8 carrying 33.6 or 300 is a 400 naming the input, its datatype, position and value."""
    row = [*INT_ROW[:5], value, *INT_ROW[6:]]
    error = refusal(request("INT8", row, name="patient"))
    assert error.status == 400
    assert str(error) == f'input "patient" (INT8) data[5]: {words}'


@pytest.mark.parametrize("datatype", list(INTEGER_RANGES))
def test_every_integer_type_takes_its_range_exactly(datatype):
    """The bounds of each INT/UINT type are taken; one beyond either bound is refused."""
    low, high = INTEGER_RANGES[datatype]
    rows = parse(request(datatype, [low, high, *INT_ROW[2:]])).rows
    assert rows.dtype == np.float32 and rows[0, 0] == np.float32(low)
    for beyond in (low - 1, high + 1):
        error = refusal(request(datatype, [beyond, *INT_ROW[1:]]))
        assert f"is outside {datatype}" in str(error)


def test_values_are_cut_in_messages():
    """A huge value or a long input name is shown cut to SHOWN_CHARS characters."""
    huge, name = 10**80, "n" * 300
    message = str(refusal(request("INT64", [huge, *INT_ROW[1:]], name=name)))
    assert str(huge) not in message and str(huge)[:SHOWN_CHARS - 3] + "..." in message
    assert name not in message and '"' + "n" * (SHOWN_CHARS - 4) + "..." in message


def test_bool_takes_true_and_false_only():
    """BOOL data are JSON booleans, read as 1.0 and 0.0; a 1 is not a boolean."""
    rows = parse(request("BOOL", [True, False] * 4)).rows
    np.testing.assert_array_equal(rows, [[1, 0] * 4])
    assert "1 is not true or false" in str(refusal(request("BOOL", [1] + [True] * 7)))


@pytest.mark.parametrize(("datatype", "value", "words"), [
    ("FP16", 70000, "outside FP16"), ("FP16", -65520.5, "outside FP16"),
    ("FP32", 1e39, "float32"), ("FP64", 1e300, "float32"),
    ("FP32", True, "true is not a number"), ("FP64", None, "null is not a number"),
])
def test_floats_are_finite_numbers_within_their_type(datatype, value, words):
    """FP16 within ±65504; FP32 and FP64 within float32, which the model computes in."""
    assert words in str(refusal(request(datatype, [value, *ROW[1:]])))


def test_fp16_takes_its_largest_value_and_floats_their_fractions():
    """Accepted values are read as float32 of the value."""
    assert parse(request("FP16", [FLOAT16_MAX, *ROW[1:]])).rows[0, 0] == FLOAT16_MAX
    np.testing.assert_array_equal(parse(request("FP64")).rows, np.float32([ROW]))


@pytest.mark.parametrize(("datatype", "words"), [
    ("BYTES", "BYTES is not supported"), ("BF16", '"BF16" is not a numeric or BOOL'),
    ("fp32", '"fp32" is not'), (7, "7 is not")])
def test_other_datatypes_are_refused_saying_what_is_supported(datatype, words):
    """BYTES (and anything else) is a 400 that lists the datatypes this server reads."""
    message = str(refusal(request(datatype, ["a"] * 8)))
    assert words in message and "BOOL, FP16/32/64, INT8/16/32/64 or UINT8/16/32/64" in message


_VALUES = st.one_of(st.integers(-(2**65), 2**65), st.floats(), st.booleans(), st.none(),
                    st.text(max_size=3), st.sampled_from([0, 1, -1, 127, 128, 255, 256, 65504,
                                                          65505, 0.5, -0.0]))


def _fits(datatype: str, value: Any) -> bool:
    """The rule the parser must follow, written independently of it."""
    if datatype == "BOOL":
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if datatype in INTEGER_RANGES:
        low, high = INTEGER_RANGES[datatype]
        return isinstance(value, int) and low <= value <= high
    limit = FLOAT16_MAX if datatype == "FP16" else float(np.finfo(np.float32).max)
    return bool(np.isfinite(float(value)) and abs(value) <= limit)


@settings(max_examples=800, derandomize=True, database=None, deadline=None)
@given(st.sampled_from(DATATYPES), _VALUES)
def test_a_value_is_taken_exactly_when_it_fits_its_datatype(datatype, value):
    """Any value in any datatype: accepted iff it fits, then read as float32(value)."""
    filler = {"BOOL": True}.get(datatype, 1)
    payload = request(datatype, [value] + [filler] * 7)
    if _fits(datatype, value):
        assert parse(payload).rows[0, 0] == np.float32(float(value))
    else:
        error = refusal(payload)
        assert error.status == 400 and "data[0]" in str(error), str(error)


# ---- shape ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("payload", "words"), [
    (request(shape=[2, 8]), "inputs[0].data has 8 values; shape [2, 8] needs 16"),
    (request(data=ROW * 2), "has 16 values; shape [1, 8] needs 8"),
    (request(shape=[1, 7], data=ROW[:7]), "the model takes 8 features"),
    (request(shape=[8]), "must be [rows, features]"),
    (request(shape=[0, 8], data=[]), "no rows"),
    (request(data=[ROW[:4], ROW[4:]]), "lists of 8 values"),
])
def test_the_shape_must_match_the_data(payload, words):
    """shape is [rows, features] and the data hold exactly rows x features values."""
    assert words in str(refusal(payload))


def test_nested_and_flat_data_read_the_same():
    """Data flat (row-major) or one list per row: the same rows."""
    flat = parse(request(shape=[2, 8], data=ROW + INT_ROW)).rows
    nested = parse(request(shape=[2, 8], data=[ROW, INT_ROW])).rows
    np.testing.assert_array_equal(flat, nested)
    assert flat.shape == (2, 8)


# ---- outputs and extensions -----------------------------------------------------------------

def test_outputs_are_the_requested_ones_in_their_order():
    """No outputs named: all of them; named: those only, in the request's order."""
    assert parse(request()).outputs == ("probability", "label")
    call = parse(request(id="r-1", outputs=[{"name": "label"},
                                            {"name": "probability",
                                             "parameters": {"binary_data": False}}]))
    assert call.outputs == ("label", "probability") and call.id == "r-1"
    found = output_tensors(call, {"probability": [0.25], "label": [0]}, tensors(BINARY))
    assert found == [{"name": "label", "datatype": "INT8", "shape": [1, 1], "data": [0]},
                     {"name": "probability", "datatype": "FP32", "shape": [1, 1],
                      "data": [0.25]}]


def test_output_tensors_have_each_tasks_width():
    """Multiclass probabilities are [rows, k] (row-major data); labels and values [rows, 1]."""
    outputs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], np.float32)
    labels = labels_for(IRIS, outputs)
    offered = datatypes(tensors(IRIS))
    assert offered == {"probabilities": "FP32", "label": "INT32"}
    call = parse_infer_request(request(data=ROW * 2, shape=[2, 8]), FEATURES, offered, MAX_ROWS)
    found = output_tensors(call, tensor_data(IRIS, outputs, labels), tensors(IRIS))
    assert [(t["name"], t["datatype"], t["shape"]) for t in found] == [
        ("probabilities", "FP32", [2, 3]), ("label", "INT32", [2, 1])]
    np.testing.assert_allclose(found[0]["data"], outputs.ravel())
    assert found[1]["data"] == [0, 2]
    value = Output("output", Task.REGRESSION)
    call = parse_infer_request(request(outputs=[{"name": "value"}]), FEATURES,
                               datatypes(tensors(value)), MAX_ROWS)
    assert output_tensors(call, {"value": [151.5]}, tensors(value)) == [
        {"name": "value", "datatype": "FP32", "shape": [1, 1], "data": [151.5]}]
    with pytest.raises(BadRequest, match="this model has 'value'"):
        parse_infer_request(request(outputs=[{"name": "probability"}]), FEATURES,
                            datatypes(tensors(value)), MAX_ROWS)


def test_metadata_gives_each_output_its_width():
    """/v2/models/{name} outputs: name, datatype and [-1, width] per task."""
    assert tensor_metadata(tensors(BINARY)) == [
        {"name": "probability", "datatype": "FP32", "shape": [-1, 1]},
        {"name": "label", "datatype": "INT8", "shape": [-1, 1]}]
    assert tensor_metadata(tensors(IRIS))[0] == {"name": "probabilities", "datatype": "FP32",
                                                 "shape": [-1, 3]}
    assert tensor_metadata(tensors(Output("output", Task.REGRESSION))) == [
        {"name": "value", "datatype": "FP32", "shape": [-1, 1]}]


@pytest.mark.parametrize(("outputs", "words"), [
    ([{"name": "logits"}], 'outputs[0]: unknown output "logits"; this model has '
                           "'probability', 'label'"),
    ([{"name": ["label"]}], 'unknown output ["label"]'),
    ([{"name": "label"}, {"name": "label"}], 'outputs[1]: output "label" is asked for twice'),
    ([{"name": "label", "parameters": {"binary_data": True}}],
     "binary tensor extension is not supported"),
    ([{"name": "label", "parameters": {"classification": 2}}], "classification extension"),
    ([{"name": "label", "parameters": {"shared_memory_region": "r"}}], "shared memory"),
    ([{"name": "label", "parameters": []}], '"parameters" must be an object'),
    ("label", "'outputs' must be a list"), (None, "'outputs' must be a list"),
    (["label"], 'a list of {"name": ...} objects'),
])
def test_bad_outputs_are_refused_naming_them(outputs, words):
    """An unknown output is named and the model's outputs listed; extensions are refused."""
    assert words in str(refusal(request(outputs=outputs)))


def test_an_empty_list_of_outputs_asks_for_all():
    """As when none are named (Triton and MLServer read it so too)."""
    assert select_outputs([], OUTPUTS) == ("probability", "label")


@pytest.mark.parametrize(("payload", "words"), [
    (request(parameters={"binary_data_output": True}),
     "parameters.binary_data_output: the binary tensor extension is not supported; ask for each "
     'output by name with "parameters": {"binary_data": false}'),
    (request(parameters={"binary_data_output": "yes"}), "binary_data_output"),
    ({"inputs": [{**request()["inputs"][0], "parameters": {"binary_data_size": 32}}]},
     "binary_data_size"),
    ({"inputs": [{**request()["inputs"][0], "parameters": {"shared_memory_region": "r"}}]},
     "shared memory is not supported"),
])
def test_the_binary_and_shared_memory_extensions_are_refused(payload, words):
    """tritonclient's default (binary outputs) gets a 400 that says how to ask for JSON."""
    error = refusal(payload)
    assert error.status == 400 and words in str(error), str(error)


def test_json_parameters_and_other_parameters_pass():
    """binary_data false, and parameters of no extension (priority, timeout) are taken."""
    call = parse(request(parameters={"binary_data_output": False, "priority": 1},
                         outputs=[{"name": "probability", "parameters": {"binary_data": False}}]))
    assert call.outputs == ("probability",) and call.datatype == "FP32"
