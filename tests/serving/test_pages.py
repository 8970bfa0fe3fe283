"""The pages in a real browser (headless Chromium via Playwright) against a real stack."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Browser, Page
from sklearn.metrics import accuracy_score, confusion_matrix

from modelserve.model.dataset import stratified_split
from serving.task_stack import TaskStack

pytestmark = pytest.mark.slow  # the shared serving stack and Chromium

PAGES = ("/", "/predictions", "/accuracy", "/models")
SHOWN_DECIMALS = 1e-4
TRACEBACK_MARKERS = ("Traceback", 'File "', "site-packages")


# ---- the browser ----------------------------------------------------------------------------


@pytest.fixture
def js_errors() -> list[str]:
    """Console errors and uncaught exceptions of the test's page."""
    return []


@pytest.fixture
def page(browser: Browser, js_errors: list[str], stack):
    """A page in a new browser context, with its JS errors recorded."""
    context = browser.new_context(base_url=stack.url, accept_downloads=True)
    context.set_default_timeout(20_000)
    new_page = context.new_page()
    new_page.on("console", lambda msg: js_errors.append(msg.text) if msg.type == "error" else None)
    new_page.on("pageerror", lambda error: js_errors.append(str(error)))
    yield new_page
    context.close()


# ---- independent expectations ---------------------------------------------------------------


@pytest.fixture(scope="session")
def table(pima_csv: Path) -> tuple[np.ndarray, np.ndarray]:
    """The dataset read with numpy alone: float32 features and integer labels."""
    raw = np.loadtxt(pima_csv, delimiter=",", ndmin=2)
    return raw[:, :-1].astype(np.float32), raw[:, -1].astype(np.int64)


@pytest.fixture(scope="session")
def bundle_dir(serving_home: Path):
    """The directory of a version's bundle in the registry."""
    return lambda version: serving_home / "registry" / "versions" / version


@pytest.fixture(scope="session")
def keras_probabilities(bundle_dir):
    """Probabilities computed by Keras itself from a version's model.keras."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    loaded: dict[str, object] = {}

    def probabilities(version: str, rows) -> np.ndarray:
        """Run the version's Keras model on the rows."""
        if version not in loaded:
            path = bundle_dir(version) / "model.keras"
            loaded[version] = keras.saving.load_model(path, compile=False)
        batch = np.asarray(rows, dtype=np.float32)
        return np.asarray(loaded[version](batch, training=False))[:, 0]

    return probabilities


@pytest.fixture(scope="session")
def held_out_truth(table, bundle_dir, keras_probabilities):
    """A version's held-out indices, labels and Keras probabilities."""

    def truth(version: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Split the dataset as the version's manifest says and run Keras on the held-out rows."""
        manifest = json.loads((bundle_dir(version) / "manifest.json").read_text())
        split = manifest["data"]["split"]
        features, labels = table
        _, test_idx = stratified_split(labels, split["test_fraction"], split["seed"])
        return test_idx, labels[test_idx], keras_probabilities(version, features[test_idx])

    return truth


def form_names(page: Page) -> list[str]:
    """The names of the predict form's inputs, in order."""
    return page.eval_on_selector_all("#predict-form input:not([type=hidden])",
                                     "els => els.map(e => e.name)")


def cells(page: Page, selector: str) -> list[str]:
    """The stripped text of every element matching the selector."""
    return [text.strip() for text in page.locator(selector).all_inner_texts()]


def assert_no_traceback(text: str) -> None:
    """A page meant for people never shows a Python traceback."""
    for marker in TRACEBACK_MARKERS:
        assert marker not in text, text[:500]


# ---- / ----------------------------------------------------------------------------------------


def test_form_predicts_what_keras_computes(page, table, versions, keras_probabilities):
    """A dataset row typed into the form gets Keras' probability and label from the workers."""
    features, _ = table
    row = features[3]
    page.goto("/")
    production = versions["production"]
    assert page.inner_text("#active-version").strip() == production
    assert page.inner_text("#workers").strip() == "2"
    names = form_names(page)
    assert len(names) == 8
    for name, value in zip(names, row.tolist(), strict=True):
        page.fill(f"#predict-form input[name={name}]", repr(value))
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.click("#predict-form button[type=submit]")
    assert answer.value.status == 200
    want = float(keras_probabilities(production, [row])[0])
    assert abs(float(page.inner_text("#probability")) - want) <= SHOWN_DECIMALS
    assert page.inner_text("#label").strip() == str(int(want >= 0.5))
    assert page.inner_text("#answer-version").strip() == production


def test_bad_form_value_is_refused_and_kept(page, table):
    """A value the browser would not let through, sent anyway: 400, a clear error, values kept."""
    page.goto("/")
    page.eval_on_selector_all("#predict-form input:not([type=hidden])",
                              "els => els.forEach(e => e.type = 'text')")
    typed = [repr(v) for v in table[0][0].tolist()]
    typed[1] = "12a"  # glucose
    names = form_names(page)
    for name, value in zip(names, typed, strict=True):
        page.fill(f"#predict-form input[name={name}]", value)
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.click("#predict-form button[type=submit]")
    assert answer.value.status == 400
    problem = page.inner_text("#problem")
    assert names[1] in problem and "12a" in problem and "not a number" in problem
    assert page.locator("#answer").count() == 0
    kept = [page.input_value(f"#predict-form input[name={name}]") for name in names]
    assert kept == typed
    assert_no_traceback(page.content())


@pytest.mark.parametrize("value", ["inf", "1e39"])  # 1e39 is finite, but not in float32
def test_non_finite_form_value_by_direct_post(page, table, value):
    """A real POST with a value the model cannot take gets a 400 page naming the field."""
    page.goto("/")
    names = form_names(page)
    form = dict(zip(names, [repr(v) for v in table[0][0].tolist()], strict=True))
    form[names[5]] = value
    form["csrf-token"] = page.input_value("#predict-form input[name=csrf-token]")
    answer = page.request.post("/", form=form)
    assert answer.status == 400
    body = answer.text()
    assert f"{names[5]}: &#39;{value}&#39; is not a finite number" in body
    assert f'value="{value}"' in body
    assert_no_traceback(body)


# ---- /predictions -----------------------------------------------------------------------------


def test_held_out_predictions_match_an_independent_evaluation(page, versions, held_out_truth):
    """Accuracy, confusion matrix and every row match Keras and scikit-learn."""
    production = versions["production"]
    test_idx, labels, probabilities = held_out_truth(production)
    predicted = (probabilities >= 0.5).astype(int)
    page.goto("/predictions")
    assert page.inner_text("#answer-version").strip() == production
    assert int(page.inner_text("#row-count")) == len(test_idx)
    assert page.inner_text("#accuracy").strip() == f"{accuracy_score(labels, predicted):.4f}"
    shown = [int(c) for c in cells(page, "#confusion td")]
    assert shown == confusion_matrix(labels, predicted, labels=[0, 1]).ravel().tolist()
    assert page.locator("#rows tbody tr").count() == len(test_idx)
    assert [int(c) for c in cells(page, "#rows tbody tr td:first-child")] == (test_idx + 1).tolist()
    assert [int(c) for c in cells(page, "#rows td.truth")] == labels.tolist()
    shown_probabilities = np.array([float(c) for c in cells(page, "#rows td.probability")])
    np.testing.assert_allclose(shown_probabilities, probabilities, atol=SHOWN_DECIMALS)
    assert [int(c) for c in cells(page, "#rows td.predicted")] == predicted.tolist()


def test_charts_are_drawn(page):
    """The ROC curve has points and the histogram has a bar per bin and class."""
    page.goto("/predictions")
    points = page.get_attribute("svg#roc polyline", "points").split()
    assert len(points) >= 3
    assert points[0] == "30.0,210.0"  # the curve starts at (0, 0) bottom left
    assert page.locator("svg#histogram rect").count() == 20
    assert page.locator("svg#roc").is_visible() and page.locator("svg#histogram").is_visible()


def write_csv(path: Path, rows: np.ndarray, header: list[str] | None = None) -> Path:
    """Write feature rows as CSV, with an optional header row naming (and ordering) columns."""
    out = io.StringIO()
    writer = csv.writer(out)
    if header:
        writer.writerow(header)
    writer.writerows([[repr(v) for v in row] for row in rows.tolist()])
    path.write_text(out.getvalue())
    return path


def upload(page: Page, path: Path):
    """Submit a file through the page's upload form and return the HTTP answer."""
    page.goto("/predictions")
    page.set_input_files("#upload-form input[type=file]", str(path))
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.click("#upload-form button[type=submit]")
    page.wait_for_load_state()
    return answer.value


def download_rows(page: Page) -> list[dict[str, str]]:
    """Follow the download link and read the downloaded CSV."""
    with page.expect_download() as info:
        page.click("#download")
    text = Path(info.value.path()).read_text()
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("with_header", [False, True], ids=["no-header", "reordered-header"])
def test_csv_upload_scores_every_row(page, tmp_path, table, versions, keras_probabilities,
                                     with_header):
    """An uploaded CSV comes back with Keras' probabilities, labels and the version."""
    features, _ = table
    rows = features[10:17]
    if with_header:
        page.goto("/")
        names = form_names(page)
        order = list(reversed(range(8)))
        path = write_csv(tmp_path / "rows.csv", rows[:, order], [names[i] for i in order])
    else:
        path = write_csv(tmp_path / "rows.csv", rows)
    answer = upload(page, path)
    assert answer.status == 201
    assert page.inner_text("h1").startswith("Scored 7 rows")
    got = download_rows(page)
    production = versions["production"]
    want = keras_probabilities(production, rows)
    assert [row["model_version"] for row in got] == [production] * len(rows)
    np.testing.assert_allclose([float(r["probability"]) for r in got], want, atol=1e-5)
    assert [int(r["label"]) for r in got] == (want >= 0.5).astype(int).tolist()


def test_bad_csv_upload_names_the_cell(page, tmp_path, table):
    """A non-number cell: 400, and a message naming the row and column, no traceback."""
    lines = [",".join(repr(v) for v in row) for row in table[0][:3].tolist()]
    cells_of_row_2 = lines[1].split(",")
    cells_of_row_2[2] = "seventy"
    lines[1] = ",".join(cells_of_row_2)
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    answer = upload(page, path)
    assert answer.status == 400
    problem = page.inner_text("#problem")
    assert re.search(r"\brow 2\b", problem) and re.search(r"\bcolumn 3\b", problem), problem
    assert "seventy" in problem and "not a number" in problem
    assert problem.startswith("bad.csv: ") and str(tmp_path) not in problem
    assert page.locator("#download").count() == 0
    assert_no_traceback(page.content())


@pytest.mark.parametrize(("cell", "problem"), [
    ("nan", "'nan' is not a finite number"),
    ("1e39", "'1e39' is too large for float32"),
    ("9" * 140_000, "line 3 is not valid CSV (field larger than field limit"),
], ids=["nan", "beyond-float32", "cell-over-128KiB"])
def test_csv_upload_of_a_value_no_model_takes_is_refused(page, tmp_path, table, cell, problem):
    """A NaN, a number beyond float32, a huge cell: 400 naming it; the workers never see it."""
    # The workers refuse a whole batch, other requests' rows too, for one non-finite value: that
    # was a 503 (a 500 for the huge cell), and the reader now refuses such files itself.
    rows = [[repr(v) for v in row] for row in table[0][:3].tolist()]
    rows[2][5] = cell
    path = tmp_path / "odd.csv"
    path.write_text("".join(",".join(row) + "\n" for row in rows))
    answer = upload(page, path)
    assert answer.status == 400
    shown = page.inner_text("#problem")
    assert shown.startswith("odd.csv: ") and problem in shown, shown[:300]
    assert_no_traceback(page.content())


def test_binary_upload_is_refused(page, tmp_path):
    """A file that is not UTF-8 text: 400 and a message saying so, no traceback."""
    path = tmp_path / "scan.csv"
    path.write_bytes(b"\xff\xfe\x00\x01" * 64)
    answer = upload(page, path)
    assert answer.status == 400
    assert "not UTF-8 text" in page.inner_text("#problem")
    assert_no_traceback(page.content())


def test_predictions_page_without_a_stored_dataset(page, serving_home, versions):
    """With no dataset stored, the page says so and still offers the CSV upload."""
    stored = serving_home / "data" / "pima-indians-diabetes.csv"
    aside = stored.with_name("dataset-set-aside.csv")
    stored.rename(aside)
    try:
        answer = page.goto("/predictions")
    finally:
        aside.rename(stored)
    assert answer is not None and answer.status == 200
    assert "no dataset" in page.inner_text("#no-data")
    assert page.inner_text("#answer-version").strip() == versions["production"]
    assert page.locator("#upload-form input[type=file]").count() == 1
    assert page.locator("#rows").count() == 0


# ---- /accuracy and /models ----------------------------------------------------------------------


def test_accuracy_page_measures_every_version(page, versions, held_out_truth):
    """Each version's measured accuracy equals scikit-learn's on Keras' predictions."""
    page.goto("/accuracy")
    for name, version in versions.items():
        _, labels, probabilities = held_out_truth(version)
        want = accuracy_score(labels, (probabilities >= 0.5).astype(int))
        row = page.locator(f"#versions tr[data-version='{version}']")
        assert row.locator("td.measured").inner_text().strip() == f"{want:.4f}", name
        live = row.locator("td").last.inner_text().strip()
        assert live == ("live" if name == "production" else "")
    assert page.locator("svg#timeline polyline").count() == 1
    shown = cells(page, "#activations tbody tr td:nth-child(3)")
    assert versions["production"] in shown


def test_models_page_lists_versions_live_one_and_history(page, versions, serving_home):
    """Both versions are listed, production is marked live, every history event has a row."""
    page.goto("/models")
    listed = page.eval_on_selector_all("#versions tbody tr",
                                        "els => els.map(e => e.dataset.version)")
    assert sorted(listed) == sorted(versions.values())
    live = page.locator("#versions tbody tr.live")
    assert live.count() == 1 and live.get_attribute("data-version") == versions["production"]
    assert live.locator("td").last.inner_text().strip() == "live"
    history_file = serving_home / "registry" / "history.jsonl"
    events = [json.loads(line) for line in history_file.read_text().splitlines() if line.strip()]
    rows = page.locator("#history tbody tr")
    assert rows.count() == len(events) >= 3
    actions = cells(page, "#history tbody tr td:nth-child(2)")
    assert actions == [event["action"] for event in reversed(events)]


# ---- every page ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_security_headers_and_no_js_errors(page, js_errors, path):
    """Every page sends the security headers and loads without a console error."""
    answer = page.goto(path)
    assert answer is not None and answer.status == 200
    headers = answer.headers
    assert headers.get("x-content-type-options") == "nosniff"
    assert headers.get("x-frame-options") == "DENY"
    assert "default-src 'self'" in headers.get("content-security-policy", "")
    page.wait_for_load_state("networkidle")
    assert js_errors == []


# ---- the pages adapt to the task: a multiclass and a regression model, one stack ----------------

@pytest.fixture
def task_page(browser: Browser, js_errors: list[str], task_stack: TaskStack):
    """A page on the task stack, with its JS errors recorded."""
    assert task_stack.running is not None
    context = browser.new_context(base_url=task_stack.running.url)
    context.set_default_timeout(20_000)
    new_page = context.new_page()
    new_page.on("console", lambda msg: js_errors.append(f"{msg.text} {msg.location}")
                if msg.type == "error" and not _favicon(msg.location) else None)
    new_page.on("pageerror", lambda error: js_errors.append(str(error)))
    yield new_page
    context.close()


def _favicon(location: dict) -> bool:
    """Tell whether a console error is the browser's own request for /favicon.ico (we have none)."""
    return str(location.get("url", "")).endswith("/favicon.ico")


def submit_form(page: Page, row) -> None:
    """Fill / with a row of the live model's features and submit it: HTTP 200."""
    page.goto("/")
    names = form_names(page)
    assert len(names) == len(row)
    for name, value in zip(names, row, strict=True):
        page.fill(f"#predict-form input[name={name}]", repr(float(value)))
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.click("#predict-form button[type=submit]")
    assert answer.value.status == 200, answer.value.text()[:500]


def visit(page: Page, path: str) -> str:
    """Load a page: HTTP 200 and no traceback; its text."""
    answer = page.goto(path)
    assert answer is not None and answer.status == 200, (path, answer and answer.status)
    text = page.content()
    assert_no_traceback(text)
    return text


def measured_cell(page: Page, version: str) -> str:
    """The /accuracy page's measured value of a version."""
    return page.locator(f"#versions tr[data-version='{version}'] td.measured").inner_text().strip()


def test_multiclass_model_through_the_stack(task_page, task_stack, js_errors):
    """Iris: the form names the species Keras gives; the confusion matrix; accuracy over time."""
    page, version = task_page, task_stack.serve("multiclass")
    spec, held = task_stack.spec("multiclass"), task_stack.held("multiclass")
    classes = list(spec.output.classes)
    row = held.features[1]
    submit_form(page, row)
    want = task_stack.keras("multiclass", [row])[0]
    assert page.inner_text("#task").strip() == "multiclass"
    assert form_names(page) == spec.feature_names
    assert page.inner_text("#label").strip() == classes[int(want.argmax())]
    shown = [float(c) for c in cells(page, "#class-probabilities td.probability")]
    np.testing.assert_allclose(shown, want, atol=SHOWN_DECIMALS)
    assert page.inner_text("#answer-version").strip() == version

    visit(page, "/predictions")
    predicted = task_stack.keras("multiclass", held.features).argmax(axis=1)
    assert page.locator("#confusion tbody tr").count() == len(classes)
    counts = [int(c) for c in cells(page, "#confusion tbody td")]
    assert counts == confusion_matrix(held.labels, predicted, labels=range(3)).ravel().tolist()
    assert page.inner_text("#accuracy").strip() == f"{accuracy_score(held.labels, predicted):.4f}"
    assert cells(page, "#rows td.truth") == [classes[i] for i in held.labels]
    assert page.locator("svg#roc").count() == 0 and page.locator("#confusion").is_visible()

    visit(page, "/accuracy")
    assert page.inner_text("#page-metric").strip() == "Accuracy of every model version"
    assert float(measured_cell(page, version)) == pytest.approx(
        accuracy_score(held.labels, predicted), abs=1e-4)
    assert measured_cell(page, task_stack.versions["regression"]) == "-"  # iris data stored
    assert page.locator("svg#timeline polyline").count() == 1
    page.wait_for_load_state("networkidle")
    assert js_errors == []


def test_regression_model_through_the_stack(task_page, task_stack, js_errors):
    """Diabetes: the form gives Keras' value; predicted against actual, residuals; RMSE."""
    page, version = task_page, task_stack.serve("regression")
    spec, held = task_stack.spec("regression"), task_stack.held("regression")
    row = held.features[2]
    submit_form(page, row)
    want = float(task_stack.keras("regression", [row])[0, 0])
    assert page.inner_text("#task").strip() == "regression"
    assert form_names(page) == spec.feature_names
    assert float(page.inner_text("#value")) == pytest.approx(want, rel=1e-5)
    assert page.locator("#probability").count() == 0
    assert page.inner_text("#answer-version").strip() == version

    visit(page, "/predictions")
    predicted = task_stack.keras("regression", held.features)[:, 0]
    rmse = float(np.sqrt(np.mean((predicted - held.labels) ** 2)))
    assert float(page.inner_text("#rmse")) == pytest.approx(rmse, abs=1e-3)
    assert page.locator("svg#scatter circle").count() == len(held.labels)
    assert page.locator("svg#scatter #identity").count() == 1
    assert page.locator("svg#residuals rect").count() == 21
    assert page.locator("svg#scatter").is_visible() and page.locator("svg#residuals").is_visible()
    np.testing.assert_allclose([float(c) for c in cells(page, "#rows td.predicted")],
                               predicted, rtol=1e-5)

    visit(page, "/accuracy")
    assert page.inner_text("#page-metric").strip() == "RMSE of every model version"
    assert float(measured_cell(page, version)) == pytest.approx(rmse, abs=1e-3)
    assert measured_cell(page, task_stack.versions["multiclass"]) == "-"  # diabetes data stored
    assert page.get_attribute("svg#timeline", "aria-label") == "RMSE over time"
    page.wait_for_load_state("networkidle")
    assert js_errors == []
