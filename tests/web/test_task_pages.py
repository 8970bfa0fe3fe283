"""The pages adapt to the model's task: a multiclass (iris) and a regression (diabetes) model.

The Flask app as gunicorn serves it, scoring in-process (no broker, workers or browser: the
quick tier), over models trained here for a few epochs on users' CSVs with a header. Answers
and metrics are checked against Keras on the model file and scikit-learn. The same pages
through the whole stack and a browser: tests/serving/test_pages.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from html import unescape
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from sklearn.metrics import accuracy_score, confusion_matrix, mean_squared_error
from tabular import write_table

from modelserve.config import Settings, load_settings
from modelserve.model.check import check_bundle
from modelserve.model.dataset import import_dataset, import_table
from modelserve.model.holdout import held_out
from modelserve.model.spec import ModelSpec
from modelserve.model.table import Table
from modelserve.model.training import TrainingConfig, train_table_bundle
from modelserve.registry import Registry
from modelserve.web import create_app

EPOCHS = 5  # the pages are under test, not the model: a few epochs make a real one
TOKEN_FIELD = re.compile(r'name="csrf-token" value="([0-9a-f]{64})"')


def check_here(staged: Path) -> None:
    """The sandbox's check and plan, run in this process (we trained the model ourselves)."""
    check_bundle(staged, plan_out=staged / "plan.npz")


class Served:
    """A home serving one trained model of a task, and what Keras says about its rows."""

    def __init__(self, root: Path, task: str):
        self.root = root
        self.settings: Settings = load_settings({"MODELSERVE_HOME": str(root / "home")})
        self.csv, self.label = write_table(root, task)
        self.table: Table = import_table(self.csv, self.settings.data_dir, self.label)
        out = root / "bundle"
        train_table_bundle(self.table, TrainingConfig(epochs=EPOCHS), out)
        registry = Registry(self.settings.registry_dir, checker=check_here)
        self.version = registry.add(out, source="test").version
        registry.activate(self.version, source="test")
        info = registry.get(self.version)
        assert info.spec is not None
        self.spec: ModelSpec = info.spec
        import keras

        self.model = keras.saving.load_model(info.path / "model.keras", compile=False)

    def keras(self, rows) -> np.ndarray:
        """What Keras computes for rows: (n, output width)."""
        return np.asarray(self.model(np.asarray(rows, dtype=np.float32), training=False))

    def held(self):
        """The model's held-out rows of the stored data."""
        return held_out(self.settings.data_dir, dict(self.spec.document),
                        features=self.spec.feature_names)


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> Served:
    """A multiclass model of iris species, active, with its data stored."""
    return Served(tmp_path_factory.mktemp("iris"), "multiclass")


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory: pytest.TempPathFactory) -> Served:
    """A regression model of diabetes progression, active, with its data stored."""
    return Served(tmp_path_factory.mktemp("diabetes"), "regression")


@contextmanager
def app_of(served: Served) -> Iterator[Flask]:
    """The app as gunicorn would serve it, scoring in-process; its predictor closed after."""
    app = create_app(served.settings, inline=True)
    try:
        yield app
    finally:
        app.extensions["modelserve"].close()


def text_of(html: str, element_id: str) -> str:
    """The text inside the element with this id (its markup stripped)."""
    found = re.search(rf'id="{element_id}"[^>]*>(.*?)</', html, re.S)
    assert found is not None, f"no #{element_id} in {html[:600]}"
    return unescape(re.sub(r"<[^>]+>", "", found.group(1))).strip()


def column(html: str, css_class: str) -> list[str]:
    """The text of every table cell of a class, in order."""
    return [unescape(c).strip() for c in re.findall(rf'<td class="{css_class}">(.*?)</td>', html)]


def post_form(client, served: Served, row) -> str:
    """Fill the form of / with one row and submit it with its CSRF token."""
    form = client.get("/").get_data(as_text=True)
    token = TOKEN_FIELD.search(form)
    assert token is not None
    fields = dict(zip(served.spec.feature_names, map(repr, row), strict=True))
    page = client.post("/", data={**fields, "csrf-token": token.group(1)})
    assert page.status_code == 200, page.data[:600]
    return page.get_data(as_text=True)


@pytest.mark.parametrize("task", ["iris", "diabetes"])
def test_every_page_answers_for_the_task(request, task):
    """/, /predictions, /accuracy and /models: 200, no traceback, the model's own features."""
    served: Served = request.getfixturevalue(task)
    with app_of(served) as app:
        client = app.test_client()
        for path in ("/", "/predictions", "/accuracy", "/models"):
            page = client.get(path)
            assert page.status_code == 200, (path, page.data[:600])
            assert b"Traceback" not in page.data, path
        form = client.get("/").get_data(as_text=True)
        for name in served.spec.feature_names:
            assert f'<input name="{name}"' in form, name
        assert text_of(form, "task") == served.spec.task.value
        models = client.get("/models").get_data(as_text=True)
        assert f'<td class="task">{served.spec.task.value}</td>' in models


def test_iris_form_answers_the_class_keras_gives_with_each_probability(iris):
    """The form: the likeliest species by name and every class's probability, as Keras."""
    with app_of(iris) as app:
        row = iris.held().features[0].tolist()
        page = post_form(app.test_client(), iris, row)
    want = iris.keras([row])[0]
    classes = iris.spec.output.classes
    assert text_of(page, "label") == classes[int(want.argmax())]
    shown = [float(p) for p in column(page, "probability")]
    np.testing.assert_allclose(shown, want, atol=1e-4)
    assert len(shown) == len(classes) == 3
    assert text_of(page, "answer-text").startswith(classes[int(want.argmax())])
    assert 'id="value"' not in page


def test_iris_summary_shows_the_tasks_metrics(iris):
    """The model summary lists accuracy, macro F1 and log loss, not ROC AUC."""
    with app_of(iris) as app:
        page = app.test_client().get("/").get_data(as_text=True)
    assert "macro F1" in page and "ROC AUC" not in page
    assert text_of(page, "metric-accuracy") == f"{iris.spec.metrics.values['accuracy']:.4f}"
    assert text_of(page, "metric-macro_f1") == f"{iris.spec.metrics.values['macro_f1']:.4f}"


def test_iris_predictions_show_the_confusion_matrix_scikit_learn_computes(iris):
    """/predictions: the k x k counts (truth by row), accuracy and each row's class."""
    held = iris.held()
    outputs = iris.keras(held.features)
    predicted = outputs.argmax(axis=1)
    with app_of(iris) as app:
        page = app.test_client().get("/predictions").get_data(as_text=True)
    table = page[page.index('id="confusion"'):page.index("</table>", page.index('id="confusion"'))]
    counts = [int(c) for c in re.findall(r"<td [^>]*>(\d+)</td>", table)]
    assert counts == confusion_matrix(held.labels, predicted, labels=[0, 1, 2]).ravel().tolist()
    assert text_of(page, "accuracy") == f"{accuracy_score(held.labels, predicted):.4f}"
    assert "roc" not in re.findall(r'<svg[^>]*id="(\w+)"', page)
    classes = iris.spec.output.classes
    assert column(page, "truth") == [classes[i] for i in held.labels]
    assert column(page, "predicted") == [classes[i] for i in predicted]
    np.testing.assert_allclose([float(p) for p in column(page, "probability")],
                               outputs.max(axis=1), atol=1e-4)
    assert "p_setosa" in text_of(page, "result-columns")


def test_diabetes_form_answers_the_value_keras_gives(diabetes):
    """The form: one number, the progression Keras predicts."""
    with app_of(diabetes) as app:
        row = diabetes.held().features[0].tolist()
        page = post_form(app.test_client(), diabetes, row)
    want = float(diabetes.keras([row])[0, 0])
    assert float(text_of(page, "value")) == pytest.approx(want, rel=1e-5)
    assert 'id="probability"' not in page and 'id="label"' not in page


def test_diabetes_predictions_show_scatter_residuals_and_rmse(diabetes):
    """/predictions: scikit-learn's RMSE, a point per row, the y = x line, residuals."""
    held = diabetes.held()
    predicted = diabetes.keras(held.features)[:, 0]
    with app_of(diabetes) as app:
        page = app.test_client().get("/predictions").get_data(as_text=True)
    rmse = float(np.sqrt(mean_squared_error(held.labels, predicted)))
    assert float(text_of(page, "rmse")) == pytest.approx(rmse, abs=1e-3)
    assert "accuracy" not in page.lower().split("<main>")[1].split('id="rows"')[0]
    scatter = page[page.index('id="scatter"'):page.index("</svg>", page.index('id="scatter"'))]
    assert scatter.count("<circle") == len(held.labels)
    assert 'id="identity"' in scatter
    residuals = page[page.index('id="residuals"'):]
    assert residuals[:residuals.index("</svg>")].count("<rect") == 21
    np.testing.assert_allclose([float(v) for v in column(page, "predicted")], predicted, rtol=1e-5)
    np.testing.assert_allclose([float(v) for v in column(page, "residual")],
                               held.labels - predicted, rtol=1e-4, atol=1e-3)
    assert text_of(page, "result-columns") == "value, model_version"


def test_diabetes_accuracy_page_is_about_rmse(diabetes):
    """/accuracy measures RMSE, labels the page and the timeline with it, on the values' scale."""
    held = diabetes.held()
    rmse = float(np.sqrt(mean_squared_error(held.labels, diabetes.keras(held.features)[:, 0])))
    with app_of(diabetes) as app:
        page = app.test_client().get("/accuracy").get_data(as_text=True)
    assert text_of(page, "page-metric") == "RMSE of every model version"
    row = page[page.index(f'data-version="{diabetes.version}"'):]
    measured = re.search(r'<td class="measured"[^>]*>([^<]+)</td>', row)
    assert measured is not None and float(measured.group(1)) == pytest.approx(rmse, abs=1e-3)
    timeline = page[page.index('id="timeline"'):page.index("</svg>", page.index('id="timeline"'))]
    assert 'aria-label="RMSE over time"' in page
    ticks = [float(t) for t in re.findall(r'class="tick">([^<]+)<', timeline)]
    assert ticks[1] < rmse < ticks[0]  # the top tick first: the scale fits the value, not 0.5..1


def test_data_of_other_columns_is_a_note_not_a_failure(iris, pima_csv: Path):
    """The Pima file stored under an iris model: /predictions says so, /accuracy shows "-"."""
    import_dataset(pima_csv, iris.settings.data_dir)
    try:
        with app_of(iris) as app:
            client = app.test_client()
            predictions = client.get("/predictions")
            accuracy = client.get("/accuracy")
    finally:
        import_table(iris.csv, iris.settings.data_dir, iris.label)
    assert predictions.status_code == 200 and accuracy.status_code == 200
    note = text_of(predictions.get_data(as_text=True), "no-data")
    assert "the stored data has columns" in note and "sepal_length_cm" in note
    assert 'id="upload-form"' in predictions.get_data(as_text=True)
    row = accuracy.get_data(as_text=True)
    measured = re.search(r'<td class="measured"[^>]*>([^<]+)</td>', row)
    assert measured is not None and measured.group(1).strip() == "-"
