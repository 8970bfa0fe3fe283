"""tritonclient.http against a stack serving a multiclass and then a regression model.

One home, one stack (the session's task stack, shared with the pages' task tests): iris
(species by name) and diabetes progression, each activated in turn after storing its data. For
each task the client's metadata shows the real outputs and their widths, the model is ready,
and infer answers what /api/v1/predict and an in-process ModelRuntime give for the same rows;
/openapi.json describes that task's answers.
The binary model through the same client: test_tritonclient.py.
"""

from __future__ import annotations

import jsonschema_rs
import numpy as np
import pytest
import schemathesis

from modelserve.model.runtime import ModelRuntime
from modelserve.registry import Registry
from serving.stack_helpers import http, post_json
from serving.task_stack import TaskStack
from serving.test_tritonclient import MODEL, client_for, json_input, json_outputs

pytestmark = pytest.mark.slow
ROWS = 20
TASKS = ("multiclass", "regression")
# Each task's outputs as the client shows them: name -> (datatype, shape).
METADATA = {
    "multiclass": {"probabilities": ("FP32", [-1, 3]), "label": ("INT32", [-1, 1])},
    "regression": {"value": ("FP32", [-1, 1])},
}


@pytest.mark.parametrize("task", ("regression", "multiclass"))
def test_tritonclient_serves_each_task(task, task_stack: TaskStack, reliability):
    """Metadata with the task's outputs and widths, ready, infer equal to v1 and in-process;
    the served OpenAPI document describes the task's answer."""
    version = task_stack.serve(task)
    rows = task_stack.held(task).features[:ROWS].astype(np.float32)
    assert task_stack.running is not None
    url, home = task_stack.running.url, task_stack.home
    client = client_for(url)
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
    v1 = post_json(f"{url}/api/v1/predict", {"rows": rows.tolist()}).json()
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
    document = http("GET", f"{url}/openapi.json").json()
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
