"""A Functional .keras from a notebook, imported and served end to end: RabbitMQ, a worker,
gunicorn. /api/v1/predict answers what Keras's own `model(rows)` does on every held-out row."""

from __future__ import annotations

import time

import numpy as np
import pytest
from cli_helpers import run_cli
from keras_models import functional_iris
from tiers import needs

from serving.stack_helpers import post_json, start_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
@needs("the serving stack (RabbitMQ, Celery workers, gunicorn)")
def imported(tmp_path_factory: pytest.TempPathFactory):
    """A stack serving the imported iris model (outside the plan: the Keras runtime)."""
    home = tmp_path_factory.mktemp("imported") / "home"
    made = functional_iris(home.parent)
    assert run_cli("data", "import", made.csv, "--label", made.label, home=home).returncode == 0
    result = run_cli("model", "import", made.path, "--activate", home=home)
    assert result.returncode == 0, result.stderr
    assert "runtime keras" in result.stdout
    version = next(line.split()[1] for line in result.stdout.splitlines()
                   if line.startswith("activated "))
    running = start_stack(home, "--workers", "1")
    try:
        running.wait_ready(workers=1)
        warm_up(running)
        yield running, made, version
    finally:
        running.stop()


def warm_up(running, timeout: float = 120.0) -> None:
    """Wait for a first answer: a worker that serves through Keras imports TensorFlow first.

    (Readiness counts a worker once it consumes, before its preload has loaded the model: the
    first requests to a Keras-runtime model may time out while it does.)
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if post_json(f"{running.url}/api/v1/predict", {"rows": [[5.1, 3.5, 1.4, 0.2]]}).status \
                == 200:
            return
        time.sleep(1)
    raise AssertionError(f"no answer within {timeout:.0f} s:\n{running.log()}")


def test_the_served_answers_are_keras_s_own_on_every_held_out_row(imported) -> None:
    running, made, version = imported
    rows = made.held_out
    answer = post_json(f"{running.url}/api/v1/predict", {"rows": rows.tolist()})
    assert answer.status == 200, answer.body
    body = answer.json()
    keras = made.keras_outputs(rows)
    served = np.asarray(body["probabilities"], dtype=np.float32)
    assert body["model_version"] == version and body["task"] == "multiclass"
    assert served.shape == keras.shape == (30, 3)
    assert np.abs(served - keras).max() <= 1e-5, np.abs(served - keras).max()
    assert body["labels"] == [made.table.classes[i] for i in keras.argmax(axis=1)]
    named = [dict(zip(made.table.feature_names, map(float, row), strict=True)) for row in rows[:3]]
    by_name = post_json(f"{running.url}/api/v1/predict", {"rows": named}).json()
    assert np.abs(np.asarray(by_name["probabilities"]) - keras[:3]).max() <= 1e-5

