"""The OpenAPI document describes the active model's task: its v1 answer and its v2 outputs.

Each task's document is valid OpenAPI 3, and the answers model.answers builds for that task
(what api.py sends) conform to it; another task's answer does not. Against a live stack with
schemathesis: tests/serving/test_openapi.py (binary).
"""

from __future__ import annotations

import jsonschema_rs
import numpy as np
import pytest
import schemathesis

from modelserve.config import load_settings
from modelserve.model import answers
from modelserve.model.spec import Output, Task
from modelserve.predlog import ids
from modelserve.web import openapi
from modelserve.web.inference import InferRequest, output_tensors, tensor_metadata

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
VERSION = "ab" * 32
TASKS = {
    Task.BINARY: (Output("output", Task.BINARY, ("no", "yes"), 0.5),
                  np.array([[0.25], [0.75]], np.float32)),
    Task.MULTICLASS: (Output("species", Task.MULTICLASS, ("setosa", "versicolor", "virginica")),
                      np.array([[0.8, 0.15, 0.05], [0.1, 0.2, 0.7]], np.float32)),
    Task.REGRESSION: (Output("progression", Task.REGRESSION),
                      np.array([[151.5], [-2.25]], np.float32)),
}


@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> dict[Task, dict]:
    """Each task's document, for a model of the four iris features."""
    settings = load_settings({"MODELSERVE_HOME": str(tmp_path_factory.mktemp("home"))})
    return {task: openapi.document(settings, FEATURES, VERSION, output)
            for task, (output, _outputs) in TASKS.items()}


def validator(document: dict, schema: str) -> jsonschema_rs.Draft4Validator:
    """A validator of one component schema, its references resolved in the document."""
    return jsonschema_rs.Draft4Validator({"$ref": f"#/components/schemas/{schema}",
                                          "components": document["components"]})


def v1_body(output: Output, outputs: np.ndarray) -> dict:
    """What /api/v1/predict sends for these outputs."""
    labels = answers.labels_for(output, outputs)
    return {"model_version": VERSION, "worker": "host:1", "prediction_id": ids.new_id(),
            **answers.v1_answer(output, outputs, labels)}


def infer_body(output: Output, outputs: np.ndarray) -> dict:
    """What /v2/models/{name}/infer sends for these outputs, all of them asked for."""
    tensors = answers.tensors(output)
    call = InferRequest(None, "input", "FP32", np.zeros((len(outputs), len(FEATURES))),
                        tuple(t.name for t in tensors))
    data = answers.tensor_data(output, outputs, answers.labels_for(output, outputs))
    return {"model_name": "diabetes", "model_version": VERSION,
            "parameters": {"prediction_id": ids.new_id()},
            "outputs": output_tensors(call, data, tensors)}


@pytest.mark.parametrize("task", list(Task))
def test_each_tasks_document_is_valid_and_its_answers_conform(documents, task):
    """Valid OpenAPI; the v1 answer, the infer answer and the metadata outputs fit it."""
    document = documents[task]
    schemathesis.openapi.from_dict(document).validate()
    output, outputs = TASKS[task]
    assert validator(document, "PredictResponse").is_valid(v1_body(output, outputs))
    assert validator(document, "InferResponse").is_valid(infer_body(output, outputs))
    metadata = {"name": "diabetes", "versions": [VERSION], "platform": "keras",
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
                "outputs": tensor_metadata(answers.tensors(output))}
    assert validator(document, "ModelMetadata").is_valid(metadata)
    names = [t.name for t in answers.tensors(output)]
    schemas = document["components"]["schemas"]
    assert schemas["InferOutput"]["properties"]["name"]["enum"] == names
    asked = schemas["InferRequest"]["properties"]["outputs"]["items"]["properties"]["name"]
    assert asked["enum"] == names
    example = document["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]
    assert example["content"]["application/json"]["example"]["outputs"] == [{"name": names[0]}]


@pytest.mark.parametrize("task", list(Task))
def test_another_tasks_answer_does_not_conform(documents, task):
    """The document is specific: a v1 or infer answer of any other task is refused by it."""
    document = documents[task]
    for other, (output, outputs) in TASKS.items():
        if other is not task:
            assert not validator(document, "PredictResponse").is_valid(v1_body(output, outputs))
            assert not validator(document, "InferResponse").is_valid(infer_body(output, outputs))


def test_without_a_model_the_document_describes_a_binary_classifier(tmp_path):
    """Before any activation: today's binary answer, 8 features."""
    document = openapi.document(load_settings({"MODELSERVE_HOME": str(tmp_path)}))
    schemathesis.openapi.from_dict(document).validate()
    response = document["components"]["schemas"]["PredictResponse"]
    assert response["required"] == ["model_version", "prediction_id", "task", "probabilities",
                                     "labels",
                                    "classes", "worker"]
