"""Reading ground-truth feedback, as a pure module: JSON items or CSV rows against a model's
output, then against what the log knows. Every refusal is one line with its HTTP status."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from typing import Any

from modelserve.model.spec import Output, Task
from modelserve.predlog import ids
from modelserve.predlog.records import FeedbackRefused, Truth

EXAMPLE = '{"feedback": [{"prediction_id": "...", "row": 0, "label": ...}]}'
SHOWN_IDS = 3  # a refusal names at most this many ids


def truth_key(output: Output) -> str:
    """The item field that carries the truth: "value" for regression, else "label"."""
    return "value" if output.task is Task.REGRESSION else "label"


def read_items(payload: Any, output: Output, max_items: int) -> list[Truth]:
    """The truths of a feedback body {"feedback": [{prediction_id, row?, label|value}]}."""
    key = truth_key(output)
    if not isinstance(payload, dict) or set(payload) != {"feedback"}:
        raise FeedbackRefused(400, f"send {EXAMPLE.replace('label', key)}")
    items = payload["feedback"]
    if not isinstance(items, list) or not items:
        raise FeedbackRefused(400, '"feedback" must be a non-empty list of items')
    if len(items) > max_items:
        raise FeedbackRefused(413, f"{len(items)} items; one request takes at most {max_items}")
    truths = [read_item(item, output, f"feedback[{i}]") for i, item in enumerate(items)]
    check_unique(truths)
    return truths


def read_item(item: Any, output: Output, where: str) -> Truth:
    """One item: a prediction id, a row of it (0 when absent) and the truth of the task."""
    key = truth_key(output)
    if not isinstance(item, dict):
        raise FeedbackRefused(400, f"{where} must be an object with prediction_id and {key}")
    unknown = set(item) - {"prediction_id", "row", key}
    if unknown:
        other = "label" if key == "value" else "value"
        hint = (f"; this is a {output.task.value} model: give {key!r}"
                if other in unknown else "")
        raise FeedbackRefused(400, f"{where}: unknown field {sorted(unknown)[0]!r}{hint}")
    prediction_id = item.get("prediction_id")
    if not ids.is_id(prediction_id):
        raise FeedbackRefused(400, f"{where}: prediction_id must be the 32 hex digits an "
                                   "answer's prediction_id gave")
    row = item.get("row", 0)
    if isinstance(row, bool) or not isinstance(row, int) or row < 0:
        raise FeedbackRefused(400, f"{where}: row must be a whole number from 0")
    if key not in item:
        raise FeedbackRefused(400, f"{where} lacks {key!r}")
    return Truth(str(prediction_id), row, truth_value(item[key], output, f"{where}.{key}"))


def truth_value(value: Any, output: Output, where: str) -> float:
    """The truth as stored: a class index for a classifier, the value for a regression."""
    if output.task is Task.REGRESSION:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            raise FeedbackRefused(400, f"{where}: {_shown(value)} is not a finite number")
        return float(value)
    if isinstance(value, str) and value in output.classes:
        return float(output.classes.index(value))
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(output.classes):
        return float(value)
    names = ", ".join(repr(name) for name in output.classes)
    raise FeedbackRefused(400, f"{where}: {_shown(value)} is not a class of this model "
                               f"(give one of {names}, or its index from 0)")


def check_unique(truths: list[Truth]) -> None:
    """Refuse a request that gives one row two truths (409, as a row fed back before is)."""
    seen: set[tuple[str, int]] = set()
    for truth in truths:
        key = (truth.prediction_id, truth.row)
        if key in seen:
            raise FeedbackRefused(409, f"{truth.prediction_id} row {truth.row} is given twice "
                                       "in this request; each row takes one truth")
        seen.add(key)


def check_known(truths: list[Truth], rows_of: Mapping[str, int], model: str) -> None:
    """Refuse ids this model never answered (404) and rows beyond a prediction's (400)."""
    unknown = sorted({t.prediction_id for t in truths if t.prediction_id not in rows_of})
    if unknown:
        shown = ", ".join(unknown[:SHOWN_IDS]) + (" ..." if len(unknown) > SHOWN_IDS else "")
        raise FeedbackRefused(404, f"unknown prediction id{'s' if len(unknown) > 1 else ''} "
                                   f"for model {model!r}: {shown} (ids come from this model's "
                                   "answers, kept for the log's retention)")
    for truth in truths:
        rows = rows_of[truth.prediction_id]
        if truth.row >= rows:
            raise FeedbackRefused(400, f"{truth.prediction_id} had {rows} row"
                                       f"{'s' if rows > 1 else ''}; there is no row {truth.row}")


def read_csv(text: str, output: Output, max_rows: int) -> list[Truth]:
    """The truths of a CSV with a header: prediction_id, row (optional), label or value."""
    key = truth_key(output)
    reader = csv.reader(io.StringIO(text))
    header = [cell.strip().lower() for cell in next(reader, [])]
    if "prediction_id" not in header or key not in header or len(set(header)) != len(header):
        raise FeedbackRefused(400, f"the CSV needs a header row with prediction_id, {key} "
                                   "and optionally row")
    truths: list[Truth] = []
    for line, cells in enumerate(reader, start=2):
        if not cells:
            continue
        if len(truths) >= max_rows:
            raise FeedbackRefused(413, f"more than {max_rows} rows; split the file")
        if len(cells) != len(header):
            raise FeedbackRefused(400, f"line {line}: {len(cells)} cells; the header has "
                                       f"{len(header)}")
        item: dict[str, Any] = dict(zip(header, (cell.strip() for cell in cells), strict=True))
        item["row"] = _csv_int(item.get("row", "0"), line)
        item[key] = _csv_truth(item[key], output)
        truths.append(read_item(item, output, f"line {line}"))
    if not truths:
        raise FeedbackRefused(400, "the CSV has a header but no rows")
    check_unique(truths)
    return truths


def _csv_int(cell: str, line: int) -> int:
    """A CSV cell read as a row number."""
    if not cell.isdigit():
        raise FeedbackRefused(400, f"line {line}: row {_shown(cell)} is not a whole number")
    return int(cell)


def _csv_truth(cell: str, output: Output) -> Any:
    """A CSV cell as the JSON value it stands for: a number, or a class name."""
    if output.task is not Task.REGRESSION and cell in output.classes:
        return cell
    try:
        number = float(cell)
    except ValueError:
        return cell
    return int(number) if output.task is not Task.REGRESSION and number.is_integer() else number


def _shown(value: Any) -> str:
    """A value for a refusal, cut short."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
