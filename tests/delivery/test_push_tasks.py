"""The push gate judges a regression model on RMSE, and refuses a model of another task.

The session's production server is lent to a regression task for this module: the diabetes
table is stored, a regression model trained on it goes live, and both go back afterwards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_helpers import run_cli
from serving.stack_helpers import post_json
from tabular import write_table
from tiers import needs

from delivery import pushes
from delivery.gitops import commit_and_push, registry_state, reported_live_version
from modelserve.model.bundle import read_manifest, write_manifest
from modelserve.model.dataset import parse_table_file
from modelserve.model.table import Table
from modelserve.model.training import TrainingConfig, train_table_bundle

pytestmark = pytest.mark.slow  # the production stack, the sandbox, training


@dataclass(frozen=True)
class Diabetes:
    """The regression production: its diabetes table and the bundle made live on it."""

    table: Table
    live: Path
    url: str
    home: Path


@pytest.fixture(scope="module")
@needs("the production stack, the model sandbox and Keras training")
def diabetes(production, tmp_path_factory, pima_csv: Path):
    """Production with the diabetes table stored and a 10-epoch regression model live."""
    home, before = production.home, registry_state(production.home)[0]
    work = tmp_path_factory.mktemp("diabetes")
    path, label = write_table(work, "regression")
    # Each push switches the workers to another model: time for it on a loaded CI machine.
    assert run_cli("delivery", "init", "--web-url", production.url, "--live-timeout", "60",
                   home=home).returncode == 0
    try:
        stored = run_cli("data", "import", path, "--label", label, home=home)
        assert stored.returncode == 0, stored.stderr
        table = parse_table_file(path, label)
        train_table_bundle(table, TrainingConfig(epochs=10), work / "live")
        added = run_cli("models", "add", work / "live", "--activate", home=home)
        assert added.returncode == 0, added.stderr
        yield Diabetes(table, work / "live", production.url, home)
    finally:  # the other delivery tests push Pima models onto the Pima data
        assert run_cli("data", "import", pima_csv, home=home).returncode == 0
        assert run_cli("models", "activate", str(before), "--reason", "regression tests done",
                       home=home).returncode == 0
        assert run_cli("delivery", "init", "--web-url", production.url,
                       home=home).returncode == 0


def renamed(checkout: Path) -> str:
    """Give a pushed bundle a new version (the same model, another note); return it."""
    manifest = read_manifest(checkout)
    manifest["source"] = {"kind": "trained", "note": "retrained, same weights"}
    manifest.pop("version", None)
    return write_manifest(checkout, manifest)["version"]


def said(result, words: str) -> str:
    """The first `remote:` line holding these words."""
    lines = [line for line in result.stderr.splitlines() if words in line]
    assert lines, result.stderr
    return lines[0]


def test_a_regression_model_as_good_as_the_live_one_goes_live(diabetes, checkout):
    """Judged on RMSE beside the live model, on the server's rows; then served."""
    pushes.copy_bundle(diabetes.live, checkout)
    version = renamed(checkout)
    result = commit_and_push(checkout, "the regression model, once more")
    assert result.returncode == 0, result.stderr
    accepted = said(result, "accepted")
    figures = re.search(r"RMSE ([\d.]+) on this server's (\d+) evaluation rows "
                        r"\(live model: ([\d.]+)\)", accepted)
    assert figures and figures[1] == figures[3], accepted  # the same weights, the same rows
    assert "accuracy" not in accepted and "RMSE" in said(result, "live: ")
    assert "push -> live in" in result.stderr, result.stderr
    assert reported_live_version(result) == version == registry_state(diabetes.home)[0]
    row = diabetes.table.features[0].tolist()
    answer = post_json(f"{diabetes.url}/api/v1/predict", {"rows": [row]}).json()
    assert answer["model_version"] == version, answer


def test_a_regression_model_with_a_worse_rmse_is_refused(diabetes, checkout, tmp_path):
    """One epoch of training: its RMSE is far above the live model's; nothing changes."""
    train_table_bundle(diabetes.table, TrainingConfig(epochs=1), tmp_path / "worse")
    pushes.copy_bundle(tmp_path / "worse", checkout)
    state = registry_state(diabetes.home)
    result = commit_and_push(checkout, "undertrained")
    assert result.returncode != 0
    refusal = said(result, "refused")
    assert re.search(r"RMSE [\d.]+ on this server's \d+ evaluation rows is [\d.]+% above the "
                     r"live model's [\d.]+ \(tolerance: 2% of the live model's RMSE\)",
                     refusal), refusal
    assert "force-deploy" in refusal and "Traceback" not in result.stderr
    assert registry_state(diabetes.home) == state


def test_a_model_of_another_task_is_refused_naming_both(diabetes, checkout, tmp_path):
    """An iris classifier pushed to the regression production: one line, both tasks."""
    path, label = write_table(tmp_path, "multiclass")
    train_table_bundle(parse_table_file(path, label), TrainingConfig(epochs=2), tmp_path / "k")
    pushes.copy_bundle(tmp_path / "k", checkout)
    state = registry_state(diabetes.home)
    result = commit_and_push(checkout, "a classifier", "force-deploy", "reason=not enough")
    assert result.returncode != 0
    refusal = said(result, "refused")
    assert "is a multiclass model of species (3 classes" in refusal, refusal
    assert "production's live model is a regression model of progression" in refusal, refusal
    assert registry_state(diabetes.home) == state
