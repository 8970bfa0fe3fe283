"""`modelserve predict`: score a CSV file into the task's answers and the model version."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_user_error, run_cli
from click.testing import CliRunner
from tabular import write_table

from modelserve.cli import main
from modelserve.model.bundle import read_manifest
from modelserve.model.dataset import FEATURES, Dataset, load_table
from modelserve.model.runtime import ModelRuntime

pytestmark = pytest.mark.slow


def _write_features(path: Path, rows: np.ndarray, header: list[str] | None = None) -> Path:
    """Write rows as CSV, with an optional header."""
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        if header:
            writer.writerow(header)
        writer.writerows(rows.tolist())
    return path


def _read_output(path: Path) -> tuple[np.ndarray, np.ndarray, set[str]]:
    """Read probabilities, labels and versions back."""
    with open(path, newline="") as stream:
        records = list(csv.DictReader(stream))
    return (
        np.asarray([float(r["probability"]) for r in records]),
        np.asarray([int(r["label"]) for r in records]),
        {r["model_version"] for r in records},
    )


def test_scores_a_file_with_a_bundle_directory(
    legacy_bundle: Path, dataset: Dataset, tmp_path: Path
) -> None:
    """Every row is scored as the runtime scores it, stamped with the version."""
    source = _write_features(tmp_path / "in.csv", dataset.features)
    result = run_cli(
        "predict",
        source,
        "-o",
        tmp_path / "out.csv",
        "--model",
        legacy_bundle,
        home=tmp_path / "home",
    )
    assert result.returncode == 0, result.stderr
    assert f"scored {len(dataset.features)} rows" in result.stderr
    probabilities, labels, versions = _read_output(tmp_path / "out.csv")
    expected = ModelRuntime.load(legacy_bundle).score(dataset.features)
    assert np.abs(probabilities - expected.probabilities).max() <= 1e-6
    assert np.array_equal(labels, expected.labels)
    assert versions == {read_manifest(legacy_bundle)["version"]}


def test_header_selects_columns_by_name(
    legacy_bundle: Path, dataset: Dataset, tmp_path: Path
) -> None:
    """With a header, columns may come in any order, and extra columns are ignored."""
    order = list(reversed(FEATURES))
    rows = np.column_stack([dataset.features[:, ::-1], dataset.labels])
    source = _write_features(tmp_path / "in.csv", rows, order + ["diabetes"])
    result = run_cli(
        "predict",
        source,
        "-o",
        tmp_path / "out.csv",
        "--model",
        legacy_bundle,
        home=tmp_path / "home",
    )
    assert result.returncode == 0, result.stderr
    probabilities, _, _ = _read_output(tmp_path / "out.csv")
    expected = ModelRuntime.load(legacy_bundle).score(dataset.features).probabilities
    assert np.abs(probabilities - expected).max() <= 1e-6


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "1,2,3,4,5,6,7,8\n1,2,3,x,5,6,7,8\n",
            "row 2, column 4 (skin_thickness): 'x' is not a number",
        ),
        ("1,2,3,4,5,6,7,8\n1,2,3,4,,6,7,8\n", "row 2, column 5 (insulin): empty"),
        ("1,2,3,4,5,6,7,8\n1,2,3,4,5,nan,7,8\n", "row 2, column 6 (bmi): 'nan' is not a finite"),
        ("1,2,3,4,5,6,7,8\n1,2,3,4,5,6,inf,8\n", "row 2, column 7 (diabetes_pedigree): 'inf'"),
        ("1,2,3,4,5,6,7,8\n1,2,3\n", "row 2: expected 8 columns, found 3"),
        ("1,2,3,4,5,6,7,8,9\n", "row 1: expected 8 columns, found 9"),
        ("", "the file is empty"),
        ("glucose,age\n1,2\n", "the header row lacks pregnancies"),
        (
            "pregnancies,glucose,blood_pressure,skin_thickness,insulin,bmi,diabetes_pedigree,age\n",
            "no rows to score",
        ),
    ],
    ids=[
        "string",
        "empty cell",
        "nan",
        "inf",
        "short row",
        "label column",
        "empty file",
        "header lacks names",
        "header only",
    ],
)
def test_bad_files_are_refused_and_nothing_is_written(
    legacy_bundle: Path, tmp_path: Path, content: str, message: str
) -> None:
    """Each bad file gets a message naming row and column; no output file appears."""
    source = tmp_path / "in.csv"
    source.write_text(content)
    result = run_cli(
        "predict",
        source,
        "-o",
        tmp_path / "out.csv",
        "--model",
        legacy_bundle,
        home=tmp_path / "home",
    )
    assert_user_error(result, message)
    assert not (tmp_path / "out.csv").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_uses_the_active_or_a_named_registered_version(
    legacy_bundle: Path, trained_bundle: Path, dataset: Dataset, tmp_path: Path
) -> None:
    """Without --model the active version scores; a version prefix picks another."""
    home = tmp_path / "home"
    source = _write_features(tmp_path / "in.csv", dataset.features[:10])
    assert_user_error(
        run_cli("predict", source, "-o", tmp_path / "o.csv", home=home), "no active model"
    )
    assert run_cli("models", "add", trained_bundle, home=home).returncode == 0
    assert run_cli("models", "add", legacy_bundle, "--activate", home=home).returncode == 0
    assert run_cli("predict", source, "-o", tmp_path / "a.csv", home=home).returncode == 0
    assert _read_output(tmp_path / "a.csv")[2] == {read_manifest(legacy_bundle)["version"]}
    trained = read_manifest(trained_bundle)["version"]
    result = run_cli("predict", source, "-o", tmp_path / "b.csv", "--model", trained[:6], home=home)
    assert result.returncode == 0, result.stderr
    assert _read_output(tmp_path / "b.csv")[2] == {trained}
    assert_user_error(
        run_cli("predict", source, "-o", tmp_path / "c.csv", "--model", "ffff0000", home=home),
        "ffff0000",
    )


TASK_COLUMNS = {
    "multiclass": ["p_setosa", "p_versicolor", "p_virginica", "label", "model_version"],
    "regression": ["value", "model_version"],
}


@pytest.mark.parametrize("task", list(TASK_COLUMNS))
def test_writes_the_columns_of_the_models_task(home: Path, tmp_path: Path, task: str) -> None:
    """A multiclass model: p_<class>... and the class name; a regression model: the value."""
    path, label = write_table(tmp_path, task)
    runner = CliRunner()
    assert runner.invoke(main, ["data", "import", str(path), "--label", label]).exit_code == 0
    bundle = tmp_path / "bundle"
    trained = runner.invoke(main, ["train", "--epochs", "5", "--out", str(bundle),
                                   "--no-register"])
    assert trained.exit_code == 0, trained.output
    result = runner.invoke(main, ["predict", str(path), "-o", str(tmp_path / "out.csv"),
                                  "--model", str(bundle)])
    assert result.exit_code == 0, result.output
    assert f"({task}: {','.join(TASK_COLUMNS[task])})" in result.output
    with open(tmp_path / "out.csv", newline="") as stream:
        reader = csv.DictReader(stream)
        records = list(reader)
    assert reader.fieldnames == TASK_COLUMNS[task]
    table = load_table(home / "data")
    runtime = ModelRuntime.load(bundle)
    want = runtime.score(table.features)
    assert len(records) == len(table.features)
    assert {r["model_version"] for r in records} == {runtime.version}
    answers = [name for name in TASK_COLUMNS[task] if name not in ("label", "model_version")]
    got = np.array([[float(r[name]) for name in answers] for r in records])
    np.testing.assert_allclose(got, want.outputs, rtol=1e-6, atol=1e-6)
    if task == "multiclass":
        assert [r["label"] for r in records] == [table.classes[i] for i in want.labels]
