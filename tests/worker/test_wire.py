"""The task message format: arrays as base64, and what a worker does with a bad message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelserve.registry import Registry
from modelserve.registry.catalog import Catalog
from modelserve.worker import wire
from modelserve.worker.active import ServedModels
from modelserve.worker.tasks import score_batch


def test_arrays_survive_the_trip_exactly():
    """float32 rows and int8 labels come back bit for bit, in shape."""
    rows = np.random.default_rng(3).normal(size=(5, 8)).astype(np.float32)
    np.testing.assert_array_equal(wire.decode(wire.encode(rows, wire.ROWS), wire.ROWS, 8), rows)
    labels = np.array([0, 1, 1, 0], dtype=np.int8)
    np.testing.assert_array_equal(wire.decode(wire.encode(labels, wire.LABELS), wire.LABELS),
                                  labels)


@pytest.mark.parametrize("text", ["not base64!", "AAAA"])  # the second: 3 bytes, not 8 floats
def test_malformed_payloads_are_refused(text):
    """Bad base64 or a length that is not whole rows raises ValueError."""
    with pytest.raises(ValueError):
        wire.decode(text, wire.ROWS, 8)


@pytest.mark.parametrize("width, labels", [(1, [0, 1, 1]), (3, [2, 0, 1]), (1, [])])
def test_a_reply_of_every_task_survives_the_trip(width, labels):
    """Outputs of any width and labels (none for regression) come back exactly, typed."""
    outputs = np.random.default_rng(1).random((3, width)).astype(np.float32)
    reply = wire.Reply("abc", outputs, np.asarray(labels, np.int8), worker="w:1")
    back = wire.Reply.from_body(reply.to_body())
    np.testing.assert_array_equal(back.outputs, outputs)
    np.testing.assert_array_equal(back.labels, labels)
    assert (back.version, back.worker, back.error) == ("abc", "w:1", "")


@pytest.mark.parametrize("body", [[], {"version": "v", "outputs": "AAAA", "width": 0},
                                  {"version": "v", "outputs": "AAAAAAAAAAA=", "width": 2,
                                   "labels": "AAAA"}])
def test_a_reply_no_worker_would_send_is_refused(body):
    """A non-object, a bad width, or labels that do not match the rows: ValueError."""
    with pytest.raises(ValueError):
        wire.Reply.from_body(body)


@pytest.fixture
def active(tmp_path: Path, legacy_bundle: Path) -> ServedModels:
    """A registry with the seed model active."""
    registry = Registry(tmp_path / "registry")
    version = registry.add(legacy_bundle, source="test").version
    registry.activate(version, source="test")
    return ServedModels(Catalog(tmp_path / "registry"), capacity=2)


@pytest.mark.slow  # root: the seed model is checked in the sandbox
def test_a_worker_answers_a_bad_message_with_an_error_not_a_crash(active, dataset):
    """Wrong feature count or a corrupt payload: an error reply; a good batch: answers."""
    good = wire.encode(dataset.features[:3], wire.ROWS)
    answer = wire.Reply.from_body(score_batch(active, "", good, 8).to_body())
    assert answer.outputs.shape == (3, 1) and len(answer.labels) == 3 and not answer.error
    assert "takes 8 features" in score_batch(active, "", good, 7).error
    assert score_batch(active, "", "%%%", 8).error
    nan_row = wire.encode(np.full((1, 8), np.nan, np.float32), wire.ROWS)
    assert "not a finite number" in score_batch(active, "", nan_row, 8).error


class _BrokenModel:
    """An active model whose loading fails in a way nobody planned for."""

    def current(self, name, version=""):
        raise RuntimeError("zipfile exploded")


def test_an_unexpected_failure_is_an_error_reply_and_a_logged_traceback(caplog, dataset):
    """Not only refusals: any failure answers the callers at once (503), never at the deadline."""
    answer = score_batch(_BrokenModel(), "", wire.encode(dataset.features[:1], wire.ROWS), 8)
    assert answer.error == "the worker failed to score this batch (its log has the details)"
    assert wire.Reply.from_body(answer.to_body()).error == answer.error
    assert "zipfile exploded" in caplog.text and "Traceback" in caplog.text
