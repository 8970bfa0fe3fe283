"""`modelserve model import`: a .keras made elsewhere becomes a bundle that answers as Keras does.

Quick: the refusals read without Keras (the pure checks, the command before any sandbox).
Slow: Functional models outside the plan, trained here on real data sets, imported through the
sandbox and registered; what the registry's runtime serves (the worker's own load) is compared
with the Keras model's own `model(rows)` on every held-out row. Tolerance: max abs difference
<= 1e-5 for probabilities; for a regression's values in the target's units (25 to 346 here,
where one float32 step is up to 3e-5) |difference| <= 1e-5 * max(1, |Keras's value|).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from keras_models import Made, functional_diabetes, functional_iris, sequential_iris
from tabular import diabetes_csv, iris_csv, write_table
from tiers import needs

from modelserve.cli import main
from modelserve.model.bundle import BundleError, read_manifest
from modelserve.model.importing import (
    check_input_width,
    check_outputs,
    table_for_features,
    table_from_record,
    table_record,
)
from modelserve.model.runtime import ModelRuntime
from modelserve.model.spec import Task
from modelserve.model.table import Table, parse_table
from modelserve.registry import Registry

IRIS_FEATURES = "sepal_length_cm, sepal_width_cm, petal_length_cm, petal_width_cm"


@pytest.fixture(scope="module")
def iris() -> Table:
    """Iris as `data import` reads it."""
    return parse_table(iris_csv(), "species")


def invoke(home: Path, *args: str | Path) -> Result:
    """Run `modelserve ARGS` in this process with its own MODELSERVE_HOME."""
    return CliRunner(env={"MODELSERVE_HOME": str(home)}).invoke(main, [str(a) for a in args])


def assert_one_line_refusal(result: Result, *fragments: str) -> None:
    """A clean refusal: exit 1, one Error: line holding every fragment, no traceback."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_an_input_width_mismatch_is_one_line_naming_both(iris: Table) -> None:
    with pytest.raises(BundleError) as refused:
        check_input_width(5, iris, "model.keras", "iris.csv")
    assert str(refused.value) == (f"model.keras takes 5 inputs; iris.csv has 4 feature columns "
                                  f"({IRIS_FEATURES})")
    check_input_width(4, iris, "model.keras", "iris.csv")


@pytest.mark.parametrize(("task", "outputs", "words"), [
    ("multiclass", np.full((3, 1), 0.5), "gives 1 outputs per row; the 3 classes of species "
                                         "(setosa, versicolor, virginica) need 3 outputs"),
    ("multiclass", np.full((3, 3), 0.5), "probabilities summing to 1.5 on held-out row 1"),
    ("multiclass", np.array([[1.5, -0.5, 0.0]]), "outside [0, 1] (1.5 on held-out row 1)"),
    ("binary", np.full((2, 2), 0.5), "gives 2 outputs per row; a binary model gives 1 output"),
    ("binary", np.array([[0.2], [3.0]]), "outside [0, 1] (3 on held-out row 2)"),
    ("regression", np.zeros((2, 3)), "gives 3 outputs per row; a regression model gives 1"),
    ("regression", np.array([[1.0], [np.nan]]), "NaN or infinite outputs (held-out row 2)"),
    ("regression", np.zeros((2, 1, 1)), "gives outputs of shape (1, 1) per row"),
])
def test_outputs_that_do_not_fit_the_task_are_refused(task: str, outputs: np.ndarray,
                                                      words: str) -> None:
    classes = {"multiclass": ("setosa", "versicolor", "virginica"), "binary": ("0", "1"),
               "regression": ()}[task]
    table = Table(("a",), np.zeros((1, 1), np.float32), np.zeros(1, np.int64), Task(task),
                  classes, "species", "")
    with pytest.raises(BundleError, match=r"^model\.keras ") as refused:
        check_outputs(np.asarray(outputs, np.float32), table, "model.keras")
    assert words in str(refused.value)


def test_outputs_that_fit_their_task_pass(iris: Table) -> None:
    softmax = np.asarray([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]], np.float32)
    check_outputs(softmax, iris, "m.keras")
    regression = Table(("a",), np.zeros((1, 1), np.float32), np.zeros(1), Task.REGRESSION, (),
                       "y", "")
    check_outputs(np.asarray([[-1e6], [346.0]], np.float32), regression, "m.keras")


def test_features_name_the_stored_dataset_s_columns(iris: Table) -> None:
    named = table_for_features(iris, ("a", "b", "c", "d"), Task.MULTICLASS, ("x", "y", "z"))
    assert named.feature_names == ("a", "b", "c", "d") and named.classes == ("x", "y", "z")
    assert named.features is iris.features
    for names, task, classes, words in [
        (("a", "b", "c"), None, None, f"--features names 3 columns; the stored dataset has 4 "
                                      f"feature columns ({IRIS_FEATURES})"),
        (("a", "b", "c", "a"), None, None, "--features names 'a' twice"),
        (("a", "b", "c", "9d"), None, None, "'9d' is not a plain name"),
        (("a", "b", "c", "d"), Task.REGRESSION, None, "--task regression: the stored "
                                                      "dataset's label 'species' is multiclass"),
        (("a", "b", "c", "d"), None, ("x", "y"), "--classes names 2 classes; the stored label "
                                                 "'species' has 3"),
    ]:
        with pytest.raises(BundleError) as refused:
            table_for_features(iris, names, task, classes)
        assert words in str(refused.value)


def test_a_table_crosses_the_sandbox_wall_whole(iris: Table) -> None:
    back = table_from_record(**table_record(iris), features=iris.features, target=iris.target)
    assert (back.feature_names, back.task, back.classes, back.label) == (
        iris.feature_names, iris.task, iris.classes, iris.label)
    assert np.array_equal(back.features, iris.features) and back.target.dtype == np.int64
    with pytest.raises(BundleError, match="for 4 names"):
        table_from_record(**table_record(iris), features=iris.features[:, :3],
                          target=iris.target)


def test_a_file_that_is_not_a_keras_archive_is_refused_before_any_sandbox(
        tmp_path: Path) -> None:
    csv, label = write_table(tmp_path, "multiclass")
    text = tmp_path / "model.keras"
    text.write_text("this is a notebook's checkpoint, not an archive\n")
    assert_one_line_refusal(invoke(tmp_path / "home", "model", "import", text, "--data", csv,
                                   "--label", label), f"{text}: not a Keras 3 archive")
    assert_one_line_refusal(invoke(tmp_path / "home", "model", "import", tmp_path / "no.keras"),
                            "no.keras: no such file")
    result = invoke(tmp_path / "home", "model", "import", text, "--label", label)
    assert result.exit_code == 2 and "--label needs --data" in result.output


# --- Slow: Keras models trained here, imported through the sandbox --------------------------


@pytest.fixture(scope="module")
@needs("model training")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Made]:
    """The notebook's models: two Functional ones outside the plan, a Sequential one inside."""
    directory = tmp_path_factory.mktemp("notebook")
    return {"iris": functional_iris(directory), "diabetes": functional_diabetes(directory),
            "sequential": sequential_iris(directory)}


@pytest.fixture
@needs("root (the model sandbox)")
def home(tmp_path: Path) -> Path:
    """A MODELSERVE_HOME for commands that run the sandbox."""
    return tmp_path / "home"


def registered(home: Path, result: Result) -> ModelRuntime:
    """The version a command registered, loaded as a worker loads it."""
    assert result.exit_code == 0, result.output
    version = next(line.split()[1] for line in result.output.splitlines()
                   if line.startswith("registered "))
    return ModelRuntime.load(Registry(home / "registry").get(version).path,
                             trust_cached_plan=True)


def assert_as_keras(runtime: ModelRuntime, made: Made) -> None:
    """The served outputs equal Keras's own on every held-out row (see the module's tolerance)."""
    served = runtime.score(made.held_out).outputs
    keras = made.keras_outputs(made.held_out)
    assert served.shape == keras.shape == (len(made.test_idx), keras.shape[1])
    if made.table.task is Task.REGRESSION:
        relative = np.abs(served - keras) / np.maximum(1.0, np.abs(keras))
        assert relative.max() <= 1e-5, relative.max()
        assert np.abs(keras).max() > 100  # the values are in the target's units, not near 0
    else:
        assert np.abs(served - keras).max() <= 1e-5, np.abs(served - keras).max()


def listed_runtime(home: Path, version: str) -> str:
    """The RUNTIME column of `models list` for one version."""
    output = invoke(home, "models", "list").output.splitlines()
    column = output[0].split().index("RUNTIME") + 1  # CREATED (UTC) is two words
    return next(line.split()[column] for line in output[1:] if line.split()[1] == version)


@pytest.mark.slow
def test_a_functional_multiclass_model_imports_and_serves_as_keras(
        made: dict[str, Made], home: Path) -> None:
    iris = made["iris"]
    result = invoke(home, "model", "import", iris.path, "--data", iris.csv, "--label",
                    iris.label, "--activate")
    runtime = registered(home, result)
    assert f"imported {iris.path}: 4 inputs, runtime keras" in result.output
    assert runtime.kind == "keras" and tuple(runtime.features) == iris.table.feature_names
    assert_as_keras(runtime, iris)
    manifest = runtime.spec.document
    assert manifest["task"] == "multiclass" and manifest["source"]["kind"] == "imported"
    assert manifest["metrics"]["rows"] == len(iris.test_idx) == 30
    keras_labels = made["iris"].keras_outputs(iris.held_out).argmax(axis=1)
    accuracy = float(np.mean(keras_labels == iris.table.target[iris.test_idx]))
    assert manifest["metrics"]["accuracy"] == pytest.approx(accuracy)
    assert listed_runtime(home, runtime.version) == "keras"


@pytest.mark.slow
def test_a_functional_regression_model_imports_on_the_stored_dataset(
        made: dict[str, Made], home: Path, tmp_path: Path) -> None:
    diabetes = made["diabetes"]
    assert invoke(home, "data", "import", diabetes.csv, "--label", diabetes.label,
                  "--task", "regression").exit_code == 0
    names = ",".join(diabetes.table.feature_names)
    out = tmp_path / "bundle"
    result = invoke(home, "model", "import", diabetes.path, "--features", names, "--task",
                    "regression", "--out", out, "--no-register")
    assert result.exit_code == 0, result.output
    assert "runtime keras" in result.output and "RMSE" in result.output
    assert (out / "model.keras").read_bytes() == diabetes.path.read_bytes()  # byte for byte
    assert not (out / "plan.npz").exists()
    assert_as_keras(ModelRuntime.load(out), diabetes)
    assert read_manifest(out)["data"]["sha256"] == diabetes.table.sha256  # the same bytes


@pytest.mark.slow
def test_a_sequential_model_within_the_plan_imports_with_runtime_plan(
        made: dict[str, Made], home: Path) -> None:
    sequential = made["sequential"]
    result = invoke(home, "model", "import", sequential.path, "--data", sequential.csv,
                    "--label", sequential.label, "--register")
    runtime = registered(home, result)
    assert "runtime plan" in result.output and runtime.kind == "plan"
    assert_as_keras(runtime, sequential)
    assert listed_runtime(home, runtime.version) == "plan"


@pytest.mark.slow
def test_models_that_do_not_fit_the_data_are_refused_in_one_line(
        made: dict[str, Made], home: Path, tmp_path: Path) -> None:
    iris = made["iris"]
    diabetes_path = tmp_path / "diabetes.csv"
    diabetes_path.write_text(diabetes_csv())
    columns = ", ".join(made["diabetes"].table.feature_names)
    assert_one_line_refusal(
        invoke(home, "model", "import", iris.path, "--data", diabetes_path, "--label",
               "progression", "--no-register", "--out", tmp_path / "a"),
        f"{iris.path} takes 4 inputs; {diabetes_path} has 10 feature columns ({columns})")
    narrow = sequential_iris(tmp_path, units=2)
    assert_one_line_refusal(
        invoke(home, "model", "import", narrow.path, "--data", iris.csv, "--label", iris.label,
               "--out", tmp_path / "b"),
        f"{narrow.path} gives 2 outputs per row; the 3 classes of species (setosa, "
        "versicolor, virginica) need 3 outputs per row")
    not_keras = tmp_path / "zip.keras"
    with zipfile.ZipFile(not_keras, "w") as archive:
        archive.writestr("notes.txt", "a zip, but not a Keras archive")
    assert_one_line_refusal(
        invoke(home, "model", "import", not_keras, "--data", iris.csv, "--label", iris.label,
               "--out", tmp_path / "c"),
        f"{not_keras}: cannot be loaded as a Keras model")
    assert not any((tmp_path / name).exists() for name in "abc")
    assert not (home / "registry").exists() or not Registry(home / "registry").list_versions()
