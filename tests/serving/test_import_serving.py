"""A Functional .keras from a notebook, imported and served end to end: RabbitMQ, a worker,
gunicorn. /api/v1/predict answers what Keras's own `model(rows)` does on every held-out row.

It runs on the session's task stack (tests/serving/task_stack.py): the iris data is stored
there, the import evaluates on it, and activating the import switches the stack's worker.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli
from keras_models import functional_iris

from serving.stack_helpers import post_json
from serving.task_stack import TaskStack

pytestmark = pytest.mark.slow


def served_version(url: str, version: str, timeout: float = 120.0) -> None:
    """Wait until the worker answers with `version`: serving it through Keras, it imports
    TensorFlow on the first batch after the switch (earlier requests may time out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = post_json(f"{url}/api/v1/predict", {"rows": [[5.1, 3.5, 1.4, 0.2]]})
        if answer.status == 200 and answer.json()["model_version"] == version:
            return
        time.sleep(0.5)
    raise AssertionError(f"the stack did not serve {version} within {timeout:.0f} s")


def test_the_served_answers_are_keras_s_own_on_every_held_out_row(task_stack: TaskStack,
                                                                   tmp_path: Path) -> None:
    """Imported with --activate on the stored iris data; runtime keras; Keras's outputs served."""
    task_stack.serve("multiclass")  # the iris data is the stored one
    assert task_stack.running is not None
    made = functional_iris(tmp_path)
    result = run_cli("model", "import", made.path, "--activate", home=task_stack.home)
    task_stack.serving = ""  # the task's own version must be activated again by the next test
    assert result.returncode == 0, result.stderr
    assert "runtime keras" in result.stdout
    version = next(line.split()[1] for line in result.stdout.splitlines()
                   if line.startswith("activated "))
    url = task_stack.running.url
    served_version(url, version)
    rows = made.held_out
    answer = post_json(f"{url}/api/v1/predict", {"rows": rows.tolist()})
    assert answer.status == 200, answer.body
    body = answer.json()
    keras = made.keras_outputs(rows)
    served = np.asarray(body["probabilities"], dtype=np.float32)
    assert body["model_version"] == version and body["task"] == "multiclass"
    assert served.shape == keras.shape == (30, 3)
    assert np.abs(served - keras).max() <= 1e-5, np.abs(served - keras).max()
    assert body["labels"] == [made.table.classes[i] for i in keras.argmax(axis=1)]
    named = [dict(zip(made.table.feature_names, map(float, row), strict=True)) for row in rows[:3]]
    by_name = post_json(f"{url}/api/v1/predict", {"rows": named}).json()
    assert np.abs(np.asarray(by_name["probabilities"]) - keras[:3]).max() <= 1e-5
