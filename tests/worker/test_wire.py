"""The task message format: arrays as base64, and what a worker does with a bad message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelserve.registry import Registry
from modelserve.worker import wire
from modelserve.worker.active import ActiveModel
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


@pytest.fixture
def active(tmp_path: Path, legacy_bundle: Path) -> ActiveModel:
    """A registry with the seed model active."""
    registry = Registry(tmp_path / "registry")
    version = registry.add(legacy_bundle, source="test").version
    registry.activate(version, source="test")
    return ActiveModel(tmp_path / "registry")


@pytest.mark.slow  # root: the seed model is checked in the sandbox
def test_a_worker_answers_a_bad_message_with_an_error_not_a_crash(active, dataset):
    """Wrong feature count or a corrupt payload: an error reply; a good batch: answers."""
    good = wire.encode(dataset.features[:3], wire.ROWS)
    answer = score_batch(active, good, 8)
    assert len(wire.decode(answer["probabilities"], wire.PROBABILITIES)) == 3
    assert "takes 8 features" in score_batch(active, good, 7)["error"]
    assert "error" in score_batch(active, "%%%", 8)
    nan_row = wire.encode(np.full((1, 8), np.nan, np.float32), wire.ROWS)
    assert "not a finite number" in score_batch(active, nan_row, 8)["error"]


class _BrokenModel:
    """An active model whose loading fails in a way nobody planned for."""

    def current(self):
        raise RuntimeError("zipfile exploded")


def test_an_unexpected_failure_is_an_error_reply_and_a_logged_traceback(caplog, dataset):
    """Not only refusals: any failure answers the callers at once (503), never at the deadline."""
    answer = score_batch(_BrokenModel(), wire.encode(dataset.features[:1], wire.ROWS), 8)
    assert answer == {"error": "the worker failed to score this batch (its log has the details)"}
    assert "zipfile exploded" in caplog.text and "Traceback" in caplog.text
