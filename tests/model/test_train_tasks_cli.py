"""`modelserve train` on a user's table: the task's model, its metrics, a format-2 bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from tabular import write_table

from modelserve.cli import main
from modelserve.model.bundle import read_bundle_spec
from modelserve.model.dataset import load_table
from modelserve.model.metrics import evaluate_task
from modelserve.model.runtime import ModelRuntime, load_keras_model
from modelserve.model.spec import FORMAT_V2, Task
from modelserve.model.table import split_table

pytestmark = pytest.mark.slow  # TensorFlow training

EPOCHS = ("--epochs", "10", "--batch-size", "16", "--learning-rate", "0.01")


def train(home: Path, out: Path, *extra: str) -> Result:
    """Train on the stored table into `out`, without registering."""
    return CliRunner().invoke(main, ["train", *EPOCHS, "--out", str(out), "--no-register",
                                     *extra])


@pytest.mark.parametrize("task, lines", [
    ("multiclass", ["(multiclass, held-out rows: 30)", "macro F1", "confusion matrix",
                    "setosa"]),
    ("regression", ["(regression, held-out rows: 88)", "RMSE", "MAE", "R²"]),
    ("binary", ["(binary, held-out rows: 113)", "ROC AUC", "log loss"]),
])
def test_each_task_trains_reports_its_metrics_and_serves_what_keras_computes(
        home: Path, tmp_path: Path, task: str, lines: list[str]):
    """The report names the task's metrics; the manifest's are recomputed from the model."""
    path, label = write_table(tmp_path, task)
    assert CliRunner().invoke(main, ["data", "import", str(path), "--label", label]).exit_code == 0
    result = train(home, tmp_path / "bundle")
    assert result.exit_code == 0, result.output
    for line in lines:
        assert line in result.output, result.output
    spec = read_bundle_spec(tmp_path / "bundle")
    assert spec.format == FORMAT_V2 and spec.task is Task(task)
    table = load_table(home / "data")
    _, test_idx = split_table(table, 0.2, 7)
    model = load_keras_model(tmp_path / "bundle" / "model.keras")
    outputs = np.asarray(model(table.features[test_idx], training=False))
    recomputed = evaluate_task(spec.task, table.target[test_idx], outputs)
    for name, value in spec.metrics.values.items():
        assert value == pytest.approx(recomputed[name], rel=1e-5, abs=1e-6), name
    runtime = ModelRuntime.load(tmp_path / "bundle")  # numpy plan: Normalization, Dense, ...
    assert runtime.kind == "plan"
    served = runtime.score(table.features[test_idx])
    assert np.max(np.abs(served.outputs - outputs)) <= 1e-5 * max(1.0, np.abs(outputs).max())


def test_a_header_file_given_with_data_and_label(home: Path, tmp_path: Path):
    """`train --data FILE --label COL --task T` trains without storing the file."""
    path, label = write_table(tmp_path, "multiclass")
    result = train(home, tmp_path / "bundle", "--data", str(path), "--label", label,
                   "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert read_bundle_spec(tmp_path / "bundle").output.classes == (
        "setosa", "versicolor", "virginica")
    assert not (home / "data").exists()
