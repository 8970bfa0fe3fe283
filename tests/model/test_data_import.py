"""`modelserve data import FILE --label COLUMN`: a user's CSV stored as the data to train on.

In-process (click's CliRunner) with the `home` fixture's MODELSERVE_HOME: the stored table,
the task said out loud, one-line refusals, the held-out rows recomputed from it, and the
headerless Pima file still working as before.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from tabular import write_table

from modelserve.cli import main
from modelserve.model.dataset import (
    DATA_FILE,
    RECORD_FILE,
    TABLE_FILE,
    DatasetError,
    load_table,
    stored_dataset,
)
from modelserve.model.holdout import held_out
from modelserve.model.spec import Task


def invoke(*args: str | Path) -> Result:
    """Run `modelserve ARGS` in this process."""
    return CliRunner().invoke(main, [str(arg) for arg in args])


def test_a_header_csv_is_stored_with_its_task_said_out_loud(home: Path, tmp_path: Path):
    """Iris: species by name -> multiclass, the three class names, plain feature names."""
    path, label = write_table(tmp_path, "multiclass")
    result = invoke("data", "import", path, "--label", label)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("task: multiclass (3 text label values: multiclass)\n")
    assert "column 'petal width (cm)' is named petal_width_cm" in result.output
    assert "classes: setosa, versicolor, virginica" in result.output
    record = json.loads((home / "data" / RECORD_FILE).read_text())
    assert (record["kind"], record["task"], record["label"], record["rows"]) == (
        "table", "multiclass", "species", 150)
    table = load_table(home / "data")
    assert table.task is Task.MULTICLASS and table.features.shape == (150, 4)


def test_a_given_task_is_kept_and_not_said(home: Path, tmp_path: Path):
    """--task regression on diabetes: no inference sentence; the values stay numbers."""
    path, label = write_table(tmp_path, "regression")
    result = invoke("data", "import", path, "--label", label, "--task", "regression")
    assert result.exit_code == 0, result.output
    assert not result.output.startswith("task:")
    assert load_table(home / "data").target.dtype == np.float64


@pytest.mark.parametrize("text, expected", [
    ("a,b,y\n1,2,0\n1,x,1\n", "row 3, column 'b': 'x' is text; this column needs encoding"),
    ("a,b,y\n1,2,0\n1,,1\n", "row 3, column 'b': a missing value"),
    ("a,a,y\n1,2,0\n", "duplicate column name 'a' in the header"),
    ("1,2,0\n3,4,1\n", "the first row is data ('1' in column 1)"),
    ("a,b,y\n1,2,0\n3,4,1\n5,6,2\n", "binary needs exactly 2"),
])
def test_every_refusal_is_one_line_and_stores_nothing(home: Path, tmp_path: Path, text: str,
                                                      expected: str):
    """Text cells, gaps, duplicate names, a missing header, a label that misfits the task."""
    path = tmp_path / "bad.csv"
    path.write_text(text)
    result = invoke("data", "import", path, "--label", "y", "--task", "binary")
    assert result.exit_code != 0
    assert expected in result.output and len(result.output.strip().splitlines()) == 1, (
        result.output)
    assert "Traceback" not in result.output
    assert not (home / "data" / TABLE_FILE).exists()


def test_too_few_rows_per_class_is_refused(home: Path, tmp_path: Path):
    """A class with one row cannot be on both sides of a stratified split."""
    rows = "".join(f"{i},{i % 2}\n" for i in range(120)) + "5,2\n"
    path = tmp_path / "rare.csv"
    path.write_text("x,y\n" + rows)
    result = invoke("data", "import", path, "--label", "y")
    assert result.exit_code != 0 and "class '2' has 1 row(s)" in result.output


def test_the_headerless_pima_file_still_imports_as_before(home: Path, pima_csv: Path,
                                                          tmp_path: Path):
    """No --label: today's format; a table stored before is replaced, and vice versa."""
    path, label = write_table(tmp_path, "binary")
    assert invoke("data", "import", path, "--label", label).exit_code == 0
    with pytest.raises(DatasetError, match="the stored dataset is a table"):
        stored_dataset(home / "data")
    result = invoke("data", "import", pima_csv)
    assert result.exit_code == 0 and "stored 765 rows (267 positive)" in result.output, (
        result.output)
    assert (home / "data" / DATA_FILE).is_file() and not (home / "data" / TABLE_FILE).exists()
    table = load_table(home / "data")
    assert table.task is Task.BINARY and not table.header and table.features.shape == (765, 8)


def test_the_example_is_not_stored_over_a_users_table(home: Path, tmp_path: Path):
    """`data example --if-missing` (what ./dev up runs) keeps the user's data."""
    path, label = write_table(tmp_path, "regression")
    assert invoke("data", "import", path, "--label", label).exit_code == 0
    result = invoke("data", "example", "--if-missing")
    assert result.exit_code == 0 and "keeping it" in result.output
    assert load_table(home / "data").task is Task.REGRESSION


def test_held_out_rows_come_from_the_stored_table_and_its_columns(home: Path, tmp_path: Path):
    """A regression split is seeded and random; another model's columns are refused in a line."""
    path, label = write_table(tmp_path, "regression")
    invoke("data", "import", path, "--label", label)
    split = {"data": {"split": {"seed": 7, "test_fraction": 0.2}}}
    rows = held_out(home / "data", split)
    assert rows.task is Task.REGRESSION and len(rows.labels) == 88
    assert rows.rows.min() >= 2  # line numbers: the header is line 1
    again = held_out(home / "data", split)
    np.testing.assert_array_equal(rows.rows, again.rows)
    with pytest.raises(DatasetError, match="the stored data has columns age, sex"):
        held_out(home / "data", split, features=["a", "b"])
