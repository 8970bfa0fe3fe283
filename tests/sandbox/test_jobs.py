"""The three model jobs through the sandbox give the answers they give in-process."""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from modelserve.model.bundle import BundleError, read_manifest
from modelserve.model.check import check_bundle
from modelserve.model.legacy import import_legacy
from modelserve.model.plan import Plan
from modelserve.model.runtime import ModelRuntime
from modelserve.sandbox import protocol
from modelserve.sandbox.confined import (
    check_bundle_confined,
    convert_legacy_confined,
    score_confined,
)
from modelserve.sandbox.policy import JOB_LIMITS, job_argv
from modelserve.sandbox.runner import current_choice, python_path, run_bounded

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="the namespaces backend needs root")]


@pytest.fixture(scope="module")
def converted(tmp_path_factory, shared_data: Path, pima_csv: Path) -> Path:
    """The production seed model converted in the sandbox."""
    seed = shared_data / "seed-model" / "production"
    out = tmp_path_factory.mktemp("converted") / "bundle"
    convert_legacy_confined(seed / "model.json", seed / "model.h5", pima_csv, out)
    return out


def test_conversion_in_the_sandbox_matches_the_one_in_process(converted, shared_data, dataset,
                                                              tmp_path):
    """The same metrics, examples and weights; the manifest names the pair's own files."""
    seed = shared_data / "seed-model" / "production"
    import_legacy(seed / "model.json", seed / "model.h5", dataset, tmp_path / "b")
    here = read_manifest(tmp_path / "b")
    there = read_manifest(converted)
    for key in ("metrics", "input", "output", "data"):
        assert there[key] == here[key], key
    assert there["source"]["architecture"] == "model.json"
    assert there["source"]["weights"] == "model.h5"
    # Checked in the same job: the plan it derived is the one a check here derives.
    assert sorted(p.name for p in converted.iterdir()) == ["manifest.json", "model.keras",
                                                           "plan.npz"]
    check_bundle(tmp_path / "b", plan_out=tmp_path / "here.npz")
    rows = dataset.features[:50]
    assert np.array_equal(Plan.load(converted / "plan.npz")(rows),
                          Plan.load(tmp_path / "here.npz")(rows))


def test_check_and_score_in_the_sandbox_match_in_process(converted, dataset, tmp_path,
                                                         reliability):
    """The same report, a plan computing the same numbers, the same outputs."""
    bundle = tmp_path / "bundle"
    shutil.copytree(converted, bundle)
    started = time.monotonic()
    report = check_bundle_confined(bundle, plan_out=bundle / "plan.npz")
    confined_seconds = time.monotonic() - started
    here = check_bundle(converted, plan_out=tmp_path / "here.npz")
    assert (report.version, report.examples, report.max_difference, report.runtime) == \
        (here["version"], here["examples"], here["max_difference"], here["runtime"])
    rows = dataset.features[:200]
    ours, theirs = Plan.load(bundle / "plan.npz"), Plan.load(tmp_path / "here.npz")
    assert np.array_equal(ours(rows), theirs(rows))
    outputs = score_confined(bundle, rows)
    assert outputs.shape == (200, 1)
    assert np.array_equal(outputs, ModelRuntime.load(bundle).score(rows).outputs)
    unconfined_seconds = _unconfined_check_seconds(converted)
    reliability.record(
        "Security", "cost of the sandbox per model check",
        f"backend {current_choice().backend.value}; the same check job run unconfined as a plain "
        "subprocess for comparison (one run each, on 2 shared cores)",
        confined_s=round(confined_seconds, 1), unconfined_s=round(unconfined_seconds, 1),
        overhead_s=round(confined_seconds - unconfined_seconds, 1))


def _unconfined_check_seconds(bundle: Path) -> float:
    """Seconds the check job takes as a plain subprocess, fed the same tar."""
    members = {protocol.REQUEST_MEMBER: protocol.to_json(protocol.CheckRequest(str(bundle))),
               "manifest.json": bundle / "manifest.json", "model.keras": bundle / "model.keras"}
    finished = run_bounded(job_argv(python_path(), "check"), members, JOB_LIMITS["check"])
    answer = protocol.read_answer(finished.stdout, 1 << 26, {"plan.npz"})
    assert answer.result["runtime"] == "plan", finished.stderr_tail
    return finished.seconds


def test_a_refused_bundle_is_one_line_naming_the_callers_path(converted, tmp_path):
    """A corrupt model file: the job's refusal names our path, never the sandbox's."""
    bundle = tmp_path / "corrupt"
    shutil.copytree(converted, bundle)
    with (bundle / "model.keras").open("r+b") as model:
        model.seek(100)
        model.write(b"\0" * 16)
    with pytest.raises(BundleError) as refused:
        check_bundle_confined(bundle, plan_out=bundle / "plan.npz")
    message = str(refused.value)
    assert str(bundle) in message and "sha256" in message and "\n" not in message
    assert "job-" not in message and not (bundle / "plan.npz").exists()


def test_score_refuses_rows_that_do_not_fit(converted):
    """The job's own validation comes back as one line."""
    with pytest.raises(BundleError, match="values each"):
        score_confined(converted, np.zeros((3, 5), np.float32))
    assert score_confined(converted, np.zeros((0, 8), np.float32)).shape == (0, 1)
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((2, 8), np.float32))
    assert buffer.getvalue()  # the rows travel as .npy, loaded without pickle inside


def test_score_gives_every_output_of_a_multiclass_model(tmp_path):
    """A k-class model: (rows, k) probabilities from the job, as the runtime computes them."""
    from tabular import write_table

    from modelserve.model.dataset import parse_table_file
    from modelserve.model.training import TrainingConfig, train_table_bundle

    path, label = write_table(tmp_path, "multiclass")
    table = parse_table_file(path, label)
    bundle = tmp_path / "iris"
    train_table_bundle(table, TrainingConfig(epochs=2), bundle)
    rows = table.features[:20].astype(np.float32)
    outputs = score_confined(bundle, rows)
    assert outputs.shape == (20, 3) and outputs.dtype == np.float32
    assert np.allclose(outputs, ModelRuntime.load(bundle).score(rows).outputs, atol=1e-6)
