"""Reading feedback: every item checked against the model's task, one-line refusals."""

from __future__ import annotations

import pytest

from modelserve.model.spec import Output, Task
from modelserve.predlog import feedback, ids
from modelserve.predlog.records import FeedbackRefused, Truth

BINARY = Output("diabetic", Task.BINARY, ("no", "yes"), 0.5)
IRIS = Output("species", Task.MULTICLASS, ("setosa", "versicolor", "virginica"))
PRICE = Output("price", Task.REGRESSION)
PID = ids.new_id()


def refused(payload, output=BINARY, max_items=100) -> FeedbackRefused:
    """The refusal of a feedback body."""
    with pytest.raises(FeedbackRefused) as caught:
        feedback.read_items(payload, output, max_items)
    return caught.value


def test_ids_carry_their_time_and_are_unique():
    """The first 12 hex digits are the milliseconds; 80 random bits follow."""
    made = {ids.new_id(1_700_000_000.123) for _ in range(1000)}
    assert len(made) == 1000 and all(ids.is_id(pid) for pid in made)
    assert {round(ids.minted_at(pid), 3) for pid in made} == {1_700_000_000.123}
    assert not ids.is_id("0" * 31) and not ids.is_id("G" * 32) and not ids.is_id(5)


def test_only_ids_of_the_last_moment_are_waited_for():
    """An id made 0.5 s ago waits out its settling time; an old one, or one dated in the
    future (up to the year 10889 the 12 digits reach), is not waited for at all."""
    now = 1_700_000_000.0
    assert ids.wait_for(ids.new_id(now - 0.5), now, 1.4) == pytest.approx(0.9, abs=0.002)
    assert ids.wait_for(ids.new_id(now - 60), now, 1.4) == 0
    for future in ("02" + "0" * 30, "f" * 32, ids.new_id(now + 5)):
        assert ids.wait_for(future, now, 1.4) == 0


def test_labels_by_name_or_index_values_by_number():
    """A classifier takes a class name or its index; a regression takes a finite number."""
    items = [{"prediction_id": PID, "label": "yes"}, {"prediction_id": PID, "row": 1,
                                                      "label": 0}]
    assert feedback.read_items({"feedback": items}, BINARY, 10) == [
        Truth(PID, 0, 1.0), Truth(PID, 1, 0.0)]
    assert feedback.read_items({"feedback": [{"prediction_id": PID, "label": "virginica"}]},
                               IRIS, 10) == [Truth(PID, 0, 2.0)]
    assert feedback.read_items({"feedback": [{"prediction_id": PID, "value": -2.5}]},
                               PRICE, 10) == [Truth(PID, 0, -2.5)]


@pytest.mark.parametrize(("payload", "output", "status", "words"), [
    ([], BINARY, 400, 'send {"feedback"'),
    ({"feedback": []}, BINARY, 400, "non-empty list"),
    ({"feedback": [{"prediction_id": "abc", "label": 1}]}, BINARY, 400, "32 hex digits"),
    ({"feedback": [{"prediction_id": PID, "label": "maybe"}]}, BINARY, 400,
     "not a class of this model"),
    ({"feedback": [{"prediction_id": PID, "label": 2}]}, BINARY, 400, "not a class"),
    ({"feedback": [{"prediction_id": PID, "label": True}]}, BINARY, 400, "not a class"),
    ({"feedback": [{"prediction_id": PID, "label": 3}]}, IRIS, 400, "not a class"),
    ({"feedback": [{"prediction_id": PID, "value": "3"}]}, PRICE, 400, "not a finite number"),
    ({"feedback": [{"prediction_id": PID, "label": 3.0}]}, PRICE, 400, "give 'value'"),
    ({"feedback": [{"prediction_id": PID, "value": 1}]}, BINARY, 400, "give 'label'"),
    ({"feedback": [{"prediction_id": PID}]}, BINARY, 400, "lacks 'label'"),
    ({"feedback": [{"prediction_id": PID, "label": 1, "row": -1}]}, BINARY, 400, "row must"),
    ({"feedback": [{"prediction_id": PID, "label": 1, "row": 1.5}]}, BINARY, 400, "row must"),
    ({"feedback": ["x"]}, BINARY, 400, "must be an object"),
    ({"feedback": [{"prediction_id": PID, "label": 1}] * 2}, BINARY, 409, "given twice"),
    ({"feedback": [{"prediction_id": PID, "label": 1, "row": i} for i in range(101)]}, BINARY,
     413, "at most 100"),
])
def test_bad_feedback_is_one_clear_line(payload, output, status, words):
    """Wrong shape, wrong type, duplicates and too many items: the status and what to do."""
    error = refused(payload, output)
    assert error.status == status and words in str(error), str(error)
    assert "\n" not in str(error)


def test_ids_the_log_does_not_know_and_rows_it_never_had():
    """An unknown id is a 404 naming it; a row past the prediction's rows is a 400."""
    other = ids.new_id()
    with pytest.raises(FeedbackRefused) as caught:
        feedback.check_known([Truth(PID, 0, 1.0), Truth(other, 0, 1.0)], {PID: 1}, "diabetes")
    assert caught.value.status == 404 and other in str(caught.value)
    with pytest.raises(FeedbackRefused) as caught:
        feedback.check_known([Truth(PID, 3, 1.0)], {PID: 2}, "diabetes")
    assert caught.value.status == 400 and "no row 3" in str(caught.value)
    feedback.check_known([Truth(PID, 1, 1.0)], {PID: 2}, "diabetes")


def test_a_csv_reads_as_the_json_items_do():
    """Header prediction_id, row (optional), label; class names or indexes; same refusals."""
    text = f"prediction_id,row,label\n{PID},0,yes\n{PID},1,0\n\n"
    assert feedback.read_csv(text, BINARY, 10) == [Truth(PID, 0, 1.0), Truth(PID, 1, 0.0)]
    assert feedback.read_csv(f"Prediction_ID,value\n{PID},2.5\n", PRICE, 10) == [
        Truth(PID, 0, 2.5)]
    for text, status, words in [
        ("id,label\nx,1\n", 400, "header row"),
        (f"prediction_id,label\n{PID},maybe\n", 400, "line 2"),
        (f"prediction_id,row,label\n{PID},x,1\n", 400, "not a whole number"),
        (f"prediction_id,label\n{PID},1,2\n", 400, "3 cells"),
        ("prediction_id,label\n", 400, "no rows"),
        (f"prediction_id,label\n{PID},1\n{PID},0\n", 409, "given twice"),
        ("prediction_id,label\n" + "".join(f"{ids.new_id()},1\n" for _ in range(11)), 413,
         "split the file"),
    ]:
        with pytest.raises(FeedbackRefused) as caught:
            feedback.read_csv(text, BINARY, 10)
        assert caught.value.status == status and words in str(caught.value), str(caught.value)
