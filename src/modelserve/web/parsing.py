"""Strict request parsing: JSON bodies and prediction rows, with errors that say what is wrong."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import numpy as np

from modelserve.errors import UserError
from modelserve.model.dataset import FLOAT32_MAX

JSON_TYPES = ("application/json",)
SHOWN_CHARS = 40  # of a value echoed in a message: enough to recognise it, never the whole body
SHOWN_NAMES = 3


class BadRequest(UserError):
    """A request we refuse; `status` is the HTTP code to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _refuse_constant(name: str) -> float:
    """Refuse NaN and Infinity, which Python's json accepts but JSON does not."""
    raise BadRequest(f"{name} is not a valid JSON number; send finite numbers")


def parse_json(body: bytes, content_type: str | None, max_bytes: int) -> Any:
    """Decode a JSON request body, refusing wrong types, empty, oversized or malformed bodies."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type not in JSON_TYPES:
        raise BadRequest(f"send Content-Type: application/json (got {media_type or 'none'!r})", 415)
    if len(body) > max_bytes:
        raise BadRequest(f"the body is larger than {max_bytes} bytes", 413)
    if not body.strip():
        raise BadRequest("the body is empty; send a JSON object")
    try:
        # JSON on the wire is UTF-8; json.loads would also guess UTF-16/32 from bytes.
        return json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        where = f"line {error.lineno} column {error.colno}"
        raise BadRequest(f"malformed JSON: {error.msg} at {where}") from None
    except ValueError:  # Python refuses to read integers longer than this, JSON has no limit
        raise BadRequest(
            f"a number in the JSON has more than {sys.get_int_max_str_digits()} digits") from None
    except RecursionError:
        raise BadRequest("the JSON is nested too deeply") from None


def number(value: Any, where: str) -> float:
    """Accept a finite int or float (not a bool, not a string)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{where}: {shown(value)} is not a number")
    try:
        result = float(value)
    except OverflowError:
        result = math.inf
    if not math.isfinite(result) or abs(result) > FLOAT32_MAX:
        raise BadRequest(f"{where}: {shown(value)} is not a finite number within float32 range")
    return result


def shown(value: Any) -> str:
    """Show a value from the request in a message: as JSON, on one line, cut short."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = type(value).__name__
    return _cut(text)


def _cut(text: str) -> str:
    """Cut a text to SHOWN_CHARS characters."""
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def _names(keys: list[str]) -> str:
    """List a few of the client's field names for a message (it may send thousands)."""
    text = ", ".join(_cut(repr(key)) for key in keys[:SHOWN_NAMES])
    return text + (f" and {len(keys) - SHOWN_NAMES} more" if len(keys) > SHOWN_NAMES else "")


def check_count(count: int, max_rows: int) -> None:
    """Refuse no rows or too many."""
    if count == 0:
        raise BadRequest("no rows: send at least one")
    if count > max_rows:
        raise BadRequest(
            f"{shown(count)} rows is more than the {max_rows} allowed in one request", 413)


def rows_from_v1(payload: Any, features: list[str], max_rows: int) -> np.ndarray:
    """Read {"rows": [...]} where each row is a list of values or an object keyed by feature."""
    if not isinstance(payload, dict) or "rows" not in payload:
        raise BadRequest('send a JSON object {"rows": [[...8 numbers...], ...]}')
    unknown = sorted(set(payload) - {"rows"})
    if unknown:
        raise BadRequest(f"unknown field(s): {_names(unknown)}")
    rows = payload["rows"]
    if not isinstance(rows, list):
        raise BadRequest('"rows" must be a list')
    check_count(len(rows), max_rows)
    return np.asarray([_row(row, i, features) for i, row in enumerate(rows)], dtype=np.float32)


def _row(row: Any, index: int, features: list[str]) -> list[float]:
    """Read one row: a list in feature order, or an object with exactly the feature names."""
    where = f"rows[{index}]"
    if isinstance(row, dict):
        missing = [name for name in features if name not in row]
        extra = sorted(set(row) - set(features))
        if missing or extra:
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"unknown {_names(extra)}"] if extra else [])
            raise BadRequest(f"{where}: {'; '.join(parts)}")
        return [number(row[name], f"{where}.{name}") for name in features]
    if not isinstance(row, list):
        raise BadRequest(f"{where}: a row is a list of {len(features)} numbers or an object")
    if len(row) != len(features):
        raise BadRequest(f"{where}: expected {len(features)} values "
                         f"({', '.join(features)}), got {len(row)}")
    return [number(value, f"{where}[{i}] ({features[i]})") for i, value in enumerate(row)]
