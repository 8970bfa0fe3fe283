"""tritonclient.http against a stack serving a multiclass and then a regression model.

One home, one stack: iris (species by name) and diabetes progression are imported and trained
(`modelserve train --epochs 30`), then each is activated in turn and the workers follow. For
each task the client's metadata shows the real outputs and their widths, the model is ready,
and infer answers what /api/v1/predict and an in-process ModelRuntime give for the same rows;
/openapi.json describes that task's answers.
The binary model through the same client: test_tritonclient.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema_rs
import numpy as np
import pytest
import schemathesis
from cli_helpers import run_cli
from tabular import write_table
from tiers import needs

from modelserve.model.dataset import load_table
from modelserve.model.runtime import ModelRuntime
from modelserve.registry import Registry
from serving.stack_helpers import STARTUP_SECONDS, RunningStack, http, post_json, start_stack
from serving.test_tritonclient import MODEL, client_for, json_input, json_outputs

pytestmark = pytest.mark.slow
ROWS = 20
TASKS = ("multiclass", "regression")
# Each task's outputs as the client shows them: name -> (datatype, shape).
METADATA = {
    "multiclass": {"probabilities": ("FP32", [-1, 3]), "label": ("INT32", [-1, 1])},
    "regression": {"value": ("FP32", [-1, 1])},
}


@pytest.fixture(scope="module")
@needs("root (the model sandbox checks the trained models)")
def task_home(tmp_path_factory) -> tuple[Path, dict[str, str], dict[str, np.ndarray]]:
    """A home with an iris and a diabetes model: their versions and held rows by task."""
    home = tmp_path_factory.mktemp("tasks") / "home"
    versions, rows = {}, {}
    for task in TASKS:
        path, label = write_table(home.parent, task)
        imported = run_cli("data", "import", path, "--label", label, home=home)
        assert imported.returncode == 0, imported.stderr
        rows[task] = load_table(home / "data").features[:ROWS].astype(np.float32)
        trained = run_cli("train", "--epochs", "30", "--activate", home=home)
        assert trained.returncode == 0, trained.stderr
        versions[task] = Registry(home / "registry").active_version()
    return home, versions, rows


@pytest.fixture(scope="module")
@needs("the serving stack (RabbitMQ, Celery workers, gunicorn)")
def task_stack(task_home) -> Iterator[RunningStack]:
    """One stack over that home (the regression model is active first)."""
    running = start_stack(task_home[0], "--workers", "1")
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize("task", ("regression", "multiclass"))
def test_tritonclient_serves_each_task(task, task_home, task_stack, reliability):
    """Metadata with the task's outputs and widths, ready, infer equal to v1 and in-process;
    the served OpenAPI document describes the task's answer."""
    home, versions, held = task_home
    version, rows = versions[task], held[task]
    wait_for_version(task_stack, version, rows)
    client = client_for(task_stack.url)
    try:
        assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, version)
        metadata = client.get_model_metadata(MODEL)
        assert metadata["versions"] == [version]
        assert metadata["inputs"][0]["shape"] == [-1, rows.shape[1]]
        assert {out["name"]: (out["datatype"], out["shape"])
                for out in metadata["outputs"]} == METADATA[task]
        names = list(METADATA[task])
        result = client.infer(MODEL, [json_input(rows, "FP32")], outputs=json_outputs(*names))
    finally:
        client.close()
    assert [out["name"] for out in result.get_response()["outputs"]] == names
    expected = ModelRuntime.load(Registry(home / "registry").get(version).path).score(rows)
    v1 = post_json(f"{task_stack.url}/api/v1/predict", {"rows": rows.tolist()}).json()
    assert v1["task"] == task and v1["model_version"] == version
    if task == "multiclass":
        probabilities = result.as_numpy("probabilities")
        assert probabilities.shape == (ROWS, 3) and probabilities.dtype == np.float32
        np.testing.assert_allclose(probabilities, expected.outputs, atol=1e-6)
        np.testing.assert_allclose(probabilities, np.float32(v1["probabilities"]), atol=1e-6)
        labels = result.as_numpy("label")[:, 0]
        assert labels.tolist() == expected.labels.tolist()
        assert [v1["classes"][i] for i in labels] == v1["labels"]
        assert set(v1["labels"]) <= {"setosa", "versicolor", "virginica"}
        difference = float(np.abs(probabilities - expected.outputs).max())
    else:
        values = result.as_numpy("value")
        assert values.shape == (ROWS, 1) and values.dtype == np.float32
        np.testing.assert_allclose(values, expected.outputs, atol=1e-6, rtol=0)
        np.testing.assert_allclose(values[:, 0], np.float32(v1["values"]), atol=1e-6, rtol=0)
        assert "probabilities" not in v1 and "labels" not in v1
        difference = float(np.abs(values - expected.outputs).max())
    document = http("GET", f"{task_stack.url}/openapi.json").json()
    schemathesis.openapi.from_dict(document).validate()
    answer_schema = {"$ref": "#/components/schemas/PredictResponse",
                     "components": document["components"]}
    assert jsonschema_rs.Draft4Validator(answer_schema).is_valid(v1)  # the task's own answer
    infer_names = document["components"]["schemas"]["InferOutput"]["properties"]["name"]["enum"]
    assert infer_names == names
    reliability.record("Bad input", f"tritonclient.http on a {task} model (stack)",
                       "metadata outputs and widths, readiness, infer equal to /api/v1/predict "
                       "and to the model in-process", rows=ROWS,
                       max_abs_difference=f"{difference:.1e}")


def wait_for_version(stack: RunningStack, version: str, rows: np.ndarray) -> None:
    """Activate a version and wait until /api/v1/predict answers with it."""
    result = run_cli("models", "activate", version, home=stack.home)
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + STARTUP_SECONDS
    answer = None
    while time.monotonic() < deadline:
        answer = post_json(f"{stack.url}/api/v1/predict", {"rows": rows[:1].tolist()})
        if answer.status == 200 and answer.json().get("model_version") == version:
            return
        time.sleep(0.3)
    raise AssertionError(f"the stack did not switch to {version}: {answer}\n{stack.log()}")
