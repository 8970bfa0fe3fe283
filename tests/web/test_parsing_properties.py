"""Properties of request parsing (what /api/v1/predict and /v2 infer bodies go through).

Whatever a client sends, the parser answers with rows the model can take (n x 8 finite float32,
1 <= n <= the row limit) or a BadRequest whose message is one short line; it never raises
anything else. Valid rows read the same whichever form the API accepts them in. Hypothesis runs
each property on a fixed, derandomized sequence of examples, so a run in CI is reproducible.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiers import scaled_examples

from modelserve.model.dataset import FEATURES, FLOAT32_MAX
from modelserve.web.inference import parse_infer_request
from modelserve.web.parsing import BadRequest, parse_json, rows_from_v1

TALLY_SUBJECT = "request parsing"  # the report rows of this module's properties
NAMES = list(FEATURES)
MAX_ROWS = 40
MAX_BYTES = 1 << 16
MAX_MESSAGE = 200
STATUSES = {400, 413, 415}
OUTPUTS = {"probability": "FP32", "label": "INT8"}


def budget(examples: int) -> settings:
    """Reproducible settings: derandomized, no example database, no deadline (CI is slow)."""
    return settings(max_examples=scaled_examples(examples), derandomize=True, database=None,
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---- strategies -----------------------------------------------------------------------------

# Numbers the parser must take: finite and within float32, as a client would write them.
numbers = st.one_of(
    st.floats(width=32, allow_nan=False, allow_infinity=False),
    st.floats(min_value=-FLOAT32_MAX, max_value=FLOAT32_MAX),
    st.integers(min_value=-(2**63), max_value=2**63),
)
# Scalars a client may send anywhere, numbers beyond float32 and beyond float64 included.
scalars = st.one_of(
    st.none(), st.booleans(), st.floats(), st.integers(), st.text(max_size=12),
    st.integers(min_value=10**38, max_value=10**320), numbers,
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.text(max_size=8) | st.sampled_from(NAMES + ["rows", "inputs"]),
                      children, max_size=6),
    max_leaves=24,
)
row_lists = st.lists(numbers, min_size=len(NAMES), max_size=len(NAMES))
# Values a v2 tensor of each datatype must take.
TYPED_VALUES = {"FP32": numbers, "FP64": numbers, "BOOL": st.booleans(),
                "INT32": st.integers(min_value=-(2**31), max_value=2**31 - 1)}
rows_valid = st.lists(row_lists, min_size=1, max_size=MAX_ROWS)


def keyed(row: list) -> dict[str, Any]:
    """A row as an object keyed by feature name."""
    return dict(zip(NAMES, row, strict=True))


@st.composite
def broken_rows(draw) -> Any:
    """A row that is almost right: a value, a name or the length is wrong, or it is not a row."""
    row = draw(row_lists)
    kind = draw(st.sampled_from(["value", "length", "key", "extra key", "missing key", "other"]))
    if kind == "value":
        row[draw(st.integers(0, len(row) - 1))] = draw(scalars)
        return draw(st.sampled_from([row, keyed(row)]))
    if kind == "length":
        return draw(st.lists(numbers, max_size=12).filter(lambda r: len(r) != len(NAMES)))
    mapping = keyed(row)
    if kind == "key":
        mapping[draw(st.text(max_size=10))] = mapping.pop(draw(st.sampled_from(NAMES)))
    elif kind == "extra key":
        mapping[draw(st.text(max_size=10))] = draw(scalars)
    elif kind == "missing key":
        del mapping[draw(st.sampled_from(NAMES))]
    else:
        return draw(json_values)
    return mapping


@st.composite
def v1_payloads(draw) -> Any:
    """A /api/v1/predict body: mostly almost right, sometimes any JSON value at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    row = st.one_of(row_lists, row_lists.map(keyed), broken_rows())
    payload: dict[str, Any] = {"rows": draw(st.lists(row, max_size=MAX_ROWS + 5))}
    if draw(st.integers(0, 9)) == 0:
        payload[draw(st.text(max_size=10))] = draw(json_values)
    if draw(st.integers(0, 19)) == 0:
        payload["rows"] = draw(json_values)
    return payload


@st.composite
def v2_payloads(draw) -> Any:
    """A /v2 infer body: a valid tensor, or one with its shape, datatype, data or fields wrong."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    datatype = draw(st.sampled_from(["FP32", "FP64", "INT32", "BOOL"]))
    rows = draw(st.lists(st.lists(TYPED_VALUES[datatype], min_size=len(NAMES),
                                  max_size=len(NAMES)), min_size=1, max_size=MAX_ROWS))
    flat = [value for row in rows for value in row]
    tensor: dict[str, Any] = {"name": "input", "shape": [len(rows), len(NAMES)],
                              "datatype": datatype, "data": draw(st.sampled_from([flat, rows]))}
    payload: dict[str, Any] = {"inputs": [tensor]}
    wrong = draw(st.sampled_from(["nothing", "shape", "datatype", "data", "row", "value",
                                  "missing", "field", "inputs"]))
    if wrong == "shape":
        tensor["shape"] = draw(st.lists(st.integers(-2, MAX_ROWS + 5), max_size=3) | json_values)
    elif wrong == "datatype":
        tensor["datatype"] = draw(st.sampled_from(["BYTES", "fp32", "BOOL"]) | scalars)
    elif wrong == "data":
        tensor["data"] = draw(st.lists(numbers, max_size=MAX_ROWS) | json_values)
    elif wrong == "row":
        tensor["data"] = [*rows, draw(broken_rows())]
    elif wrong == "value":
        flat[draw(st.integers(0, len(flat) - 1))] = draw(scalars)
        tensor["data"] = flat
    elif wrong == "missing":
        del tensor[draw(st.sampled_from(list(tensor)))]
    elif wrong == "field":
        key = draw(st.sampled_from(["id", "parameters", "outputs", "name"]))
        target = tensor if key == "name" else payload
        target[key] = draw(st.text(max_size=8) | json_values)
    elif wrong == "inputs":
        payload["inputs"] = draw(st.lists(st.just(tensor), min_size=2, max_size=3) | json_values)
    return payload


def bodies() -> st.SearchStrategy[bytes]:
    """Request bodies: any bytes, JSON text (NaN and 4,000-digit numbers included), or near it."""
    encoded = json_values.map(lambda value: json.dumps(value).encode())
    long_number = st.text(alphabet="0123456789", min_size=4000, max_size=5000).map(
        lambda digits: b'{"rows": [[1' + digits.encode() + b", 2, 3, 4, 5, 6, 7, 8]]}")
    cut = encoded.flatmap(lambda body: st.integers(0, len(body)).map(lambda n: body[:n]))
    deep = st.integers(1, 5000).map(lambda depth: b"[" * depth + b"]" * (depth % 3))
    return st.one_of(st.binary(max_size=200), encoded, long_number, cut, deep,
                     v1_payloads().map(lambda value: json.dumps(value).encode()))


# ---- checks ---------------------------------------------------------------------------------


def assert_refusal(error: BadRequest) -> None:
    """A refusal has an HTTP status of its own and a message of one short line."""
    message = str(error)
    assert error.status in STATUSES, (error.status, message)
    assert message and message.splitlines() == [message], repr(message)
    assert len(message) <= MAX_MESSAGE, message


def assert_rows(rows: Any, max_rows: int = MAX_ROWS) -> None:
    """Rows the model can take: 1..max_rows rows of 8 finite float32 values."""
    assert isinstance(rows, np.ndarray) and rows.dtype == np.float32
    assert rows.ndim == 2 and rows.shape[1] == len(NAMES) and 1 <= rows.shape[0] <= max_rows
    assert np.isfinite(rows).all()


def refused(call, *args) -> BadRequest | None:
    """Call the parser; its BadRequest if it refused, None if it accepted."""
    try:
        call(*args)
    except BadRequest as error:
        assert_refusal(error)
        return error
    return None




def count(tally: Counter, error: BadRequest | None) -> None:
    """Count one parse's outcome."""
    tally["refused" if error else "accepted"] += 1


# ---- properties -----------------------------------------------------------------------------


def test_any_body_is_json_or_a_clear_refusal(tally):
    """parse_json: any bytes with any content type give a value or a BadRequest, nothing else."""
    tally.update(scenario="any body bytes -> a JSON value or a one-line refusal",
                 note="found: an integer of over 4,300 digits raised ValueError (a 500); fixed")
    content_types = st.sampled_from(["application/json", "application/json; charset=utf-8",
                                     "Application/JSON", "text/plain", "", None])

    @budget(1500)
    @given(bodies(), content_types, st.sampled_from([MAX_BYTES, 64]))
    def check(body, content_type, max_bytes):
        tally["examples"] += 1
        error = refused(parse_json, body, content_type, max_bytes)
        count(tally, error)
        if error is None:
            assert content_type and content_type.lower().startswith("application/json")
            assert 0 < len(body) <= max_bytes

    check()
    assert tally["accepted"] and tally["refused"]


def test_any_v1_payload_gives_rows_or_a_clear_refusal(tally):
    """rows_from_v1: any JSON value gives valid rows or a BadRequest."""
    tally.update(scenario="any /api/v1/predict payload -> rows or a one-line refusal",
                 note="found: a refusal echoed a whole 130-digit number (up to 4,300 fit in a "
                      "body); values in messages are now cut to 40 characters")

    @budget(1500)
    @given(v1_payloads())
    def check(payload):
        tally["examples"] += 1
        try:
            rows = rows_from_v1(payload, NAMES, MAX_ROWS)
        except BadRequest as error:
            assert_refusal(error)
            count(tally, error)
            return
        count(tally, None)
        assert_rows(rows)
        assert len(rows) == len(payload["rows"])

    check()
    assert tally["accepted"] and tally["refused"]


def test_any_v2_payload_gives_rows_or_a_clear_refusal(tally):
    """parse_infer_request: any JSON value gives (n, 8) rows of the declared shape or a refusal."""
    tally.update(scenario="any /v2 infer payload -> rows or a one-line refusal",
                 note="found: the same whole-number echo as /api/v1/predict; fixed with it")

    @budget(1500)
    @given(v2_payloads())
    def check(payload):
        tally["examples"] += 1
        try:
            call = parse_infer_request(payload, NAMES, OUTPUTS, MAX_ROWS)
        except BadRequest as error:
            assert_refusal(error)
            count(tally, error)
            return
        count(tally, None)
        assert_rows(call.rows)
        assert list(call.rows.shape) == payload["inputs"][0]["shape"]

    check()
    assert tally["accepted"] and tally["refused"]


def test_valid_rows_read_the_same_in_every_form(tally):
    """Lists, keyed objects (mixed freely) and v2 tensors, flat or nested: the same float32 rows."""
    tally.update(scenario="valid rows round-trip: lists = objects = v2 flat = v2 nested")

    @budget(400)
    @given(rows_valid, st.lists(st.booleans(), min_size=MAX_ROWS, max_size=MAX_ROWS),
           st.sampled_from(["FP32", "FP64"]))
    def check(rows, as_object, datatype):
        tally["examples"] += 1
        expected = np.asarray(rows, dtype=np.float32)
        mixed = [keyed(row) if as_object[i] else row for i, row in enumerate(rows)]
        shape = [len(rows), len(NAMES)]
        forms = [
            rows_from_v1(_wire({"rows": rows}), NAMES, MAX_ROWS),
            rows_from_v1(_wire({"rows": [keyed(row) for row in rows]}), NAMES, MAX_ROWS),
            rows_from_v1(_wire({"rows": mixed}), NAMES, MAX_ROWS),
            parse_infer_request(_wire(_tensor(shape, datatype, [v for r in rows for v in r])),
                                NAMES, OUTPUTS, MAX_ROWS).rows,
            parse_infer_request(_wire(_tensor(shape, datatype, rows)), NAMES, OUTPUTS,
                                MAX_ROWS).rows,
        ]
        for got in forms:
            assert_rows(got)
            np.testing.assert_array_equal(got, expected)
        count(tally, None)

    check()


def test_a_value_is_taken_exactly_when_it_is_a_finite_float32(tally):
    """One value in a row: accepted iff finite and within float32, and then read as float32(v)."""
    tally.update(scenario="a value is accepted iff finite within float32, read as float32(value)")
    values = st.one_of(st.floats(), st.integers(), st.integers(10**30, 10**400).map(lambda n: -n),
                       st.floats(min_value=FLOAT32_MAX * 0.999, max_value=FLOAT32_MAX * 1.001),
                       st.booleans(), st.none(), st.text(max_size=5))

    @budget(1500)
    @given(values, st.integers(0, len(NAMES) - 1), st.booleans())
    def check(value, column, as_object):
        tally["examples"] += 1
        row: list[Any] = [1] * len(NAMES)
        row[column] = value
        payload = {"rows": [keyed(row) if as_object else row]}
        error = refused(rows_from_v1, payload, NAMES, MAX_ROWS)
        count(tally, error)
        takeable = (isinstance(value, int | float) and not isinstance(value, bool)
                    and _finite_within_float32(value))
        assert (error is None) == takeable, (value, error)
        if error is None:
            got = rows_from_v1(payload, NAMES, MAX_ROWS)[0, column]
            assert got == np.float32(float(value))
        else:
            assert NAMES[column] in str(error)

    check()
    assert tally["accepted"] and tally["refused"]


def test_the_row_and_body_limits_hold(tally):
    """1..max_rows rows are read, 0 is refused with 400, more with 413; so is a body too large."""
    tally.update(scenario="limits: row count (v1 and v2) and body size",
                 note="3 parses per example: v1 rows, v2 shape, body size")

    @budget(300)
    @given(st.integers(0, 30), st.integers(1, 20), st.integers(0, 200), st.integers(1, 150))
    def check(n_rows, max_rows, body_size, max_bytes):
        tally["examples"] += 1
        row = [1.5] * len(NAMES)
        v1 = refused(rows_from_v1, {"rows": [row] * n_rows}, NAMES, max_rows)
        v2 = refused(parse_infer_request, _tensor([n_rows, len(NAMES)], "FP32", row * n_rows),
                     NAMES, OUTPUTS, max_rows)
        for error in (v1, v2):
            count(tally, error)
            expected = None if 1 <= n_rows <= max_rows else (400 if n_rows == 0 else 413)
            assert (error.status if error else None) == expected
        body = b" " * (body_size - 2) + b"{}" if body_size >= 2 else b"{"[:body_size]
        error = refused(parse_json, body, "application/json", max_bytes)
        count(tally, error)
        assert (error is not None and error.status == 413) == (len(body) > max_bytes)

    check()
    assert tally["accepted"] and tally["refused"]


def _wire(payload: Any) -> Any:
    """A payload as the server reads it: sent as JSON bytes, parsed by parse_json."""
    return parse_json(json.dumps(payload).encode(), "application/json", 1 << 22)


def _tensor(shape: list[int], datatype: str, data: list) -> dict[str, Any]:
    """A v2 infer request with one input tensor."""
    return {"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]}


def _finite_within_float32(value: int | float) -> bool:
    """Tell whether a number is finite and no larger than float32 allows."""
    try:
        number = float(value)
    except OverflowError:
        return False
    return math.isfinite(number) and abs(number) <= FLOAT32_MAX
