"""The model jobs, confined, as typed functions: check, convert a pair, import a .keras, score.

This module and what it imports never import Keras or h5py: callers (the git hooks, the
registry) stay free of model code; only the sandboxed job loads it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from modelserve.fsutil import atomic_write_bytes
from modelserve.model.bundle import MANIFEST_FILE, BundleError, read_bundle_spec, read_manifest
from modelserve.model.table import Table
from modelserve.sandbox import jobs, protocol
from modelserve.sandbox.jobs import (
    ARCHITECTURE,
    BUNDLE_FILES,
    DATASET,
    OUTPUTS_FILE,
    PLAN_FILE,
    ROWS_FILE,
    WEIGHTS,
)
from modelserve.sandbox.policy import JOB_LIMITS, Limits
from modelserve.sandbox.protocol import CheckResult, ConvertRequest, ConvertResult, ScoreRequest
from modelserve.sandbox.runner import InputRefused, SandboxError, SandboxUnavailable, run_job


def _bundle_inputs(bundle: Path, with_plan: bool) -> dict[str, bytes | Path]:
    """The bundle's manifest and every plain-named file it lists (the job verifies them)."""
    manifest = read_manifest(bundle)
    names = [name for name in manifest["files"] if protocol.PLAIN_NAME.fullmatch(name)
             and name not in (MANIFEST_FILE, ROWS_FILE)]
    inputs: dict[str, bytes | Path] = {MANIFEST_FILE: bundle / MANIFEST_FILE}
    inputs.update({name: bundle / name for name in names if (bundle / name).is_file()})
    if with_plan and (bundle / PLAN_FILE).is_file():
        inputs[PLAN_FILE] = bundle / PLAN_FILE
    return inputs


def check_bundle_confined(bundle: Path, plan_out: Path | None = None,
                          timeout: float | None = None) -> CheckResult:
    """Check a bundle in the sandbox; write the plan it derived from model.keras to plan_out."""
    bundle = Path(bundle)
    if plan_out is not None:  # it holds the plan derived now, or nothing, even on a refusal
        Path(plan_out).unlink(missing_ok=True)
    limits = JOB_LIMITS["check"].within(timeout)
    answer = _run("check", protocol.CheckRequest(str(bundle)), _bundle_inputs(bundle, False),
                  {PLAN_FILE}, limits, bundle)
    result = protocol.from_json(CheckResult, answer.result)
    if plan_out is not None and PLAN_FILE in answer.files:
        atomic_write_bytes(Path(plan_out), answer.files[PLAN_FILE])
        Path(plan_out).chmod(0o644)
    return result


def convert_legacy_confined(architecture: Path, weights: Path, dataset: Path,
                            out: Path) -> ConvertResult:
    """Convert and check a legacy pair in the sandbox; write the bundle (and its plan) to out."""
    request = ConvertRequest(Path(architecture).name, Path(weights).name, str(architecture),
                             str(weights), str(dataset))
    inputs: dict[str, bytes | Path] = {ARCHITECTURE: Path(architecture), WEIGHTS: Path(weights),
                                       DATASET: Path(dataset)}
    answer = _run("convert", request, inputs, {*BUNDLE_FILES, PLAN_FILE}, JOB_LIMITS["convert"],
                  Path(architecture))
    _write_bundle(answer, out, "the conversion")
    return protocol.from_json(ConvertResult, answer.result)


def _write_bundle(answer: protocol.Answer, out: Path, job: str) -> None:
    """Write the bundle a job made (its two files, and the plan when one was derived)."""
    if not set(BUNDLE_FILES) <= set(answer.files):
        raise SandboxError(f"{job} gave no bundle")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in answer.files:
        atomic_write_bytes(out / name, answer.files[name])
        (out / name).chmod(0o644)


def import_keras_confined(model_path: Path, table: Table, out: Path, *, data_shown: str,
                          seed: int, test_fraction: float) -> protocol.ImportResult:
    """Import a .keras made elsewhere in the sandbox, on the table's rows; write the bundle
    (and its plan) to out. The caller never loads the user's file itself."""
    from modelserve.model.importing import table_record  # pure: no Keras on this side

    arrays = {}
    for name, values in ((jobs.FEATURES_FILE, table.features), (jobs.TARGET_FILE, table.target)):
        buffer = io.BytesIO()
        np.save(buffer, values, allow_pickle=False)
        arrays[name] = buffer.getvalue()
    request = protocol.ImportRequest(str(model_path), data_shown, **table_record(table),
                                     seed=seed, test_fraction=test_fraction)
    inputs: dict[str, bytes | Path] = {jobs.KERAS_FILE: Path(model_path), **arrays}
    answer = _run("import", request, inputs, {*BUNDLE_FILES, PLAN_FILE}, JOB_LIMITS["import"],
                  Path(model_path))
    _write_bundle(answer, out, "the import")
    return protocol.from_json(protocol.ImportResult, answer.result)


def score_confined(bundle: Path, rows: np.ndarray) -> np.ndarray:
    """Score rows with a bundle in the sandbox: its outputs, float32 (rows, output width)."""
    bundle = Path(bundle)
    width = read_bundle_spec(bundle).output.width  # what the job must give, from our side
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(rows, dtype=np.float32), allow_pickle=False)
    inputs = {**_bundle_inputs(bundle, True), ROWS_FILE: buffer.getvalue()}
    answer = _run("score", ScoreRequest(str(bundle)), inputs, {OUTPUTS_FILE},
                  JOB_LIMITS["score"], bundle)
    result = protocol.from_json(protocol.ScoreResult, answer.result)
    try:
        outputs = np.load(io.BytesIO(answer.files[OUTPUTS_FILE]), allow_pickle=False)
    except (KeyError, ValueError, OSError):
        raise SandboxError("the scoring job gave no readable outputs") from None
    expected = (len(rows), width)
    if outputs.dtype != np.float32 or outputs.shape != expected or (
            (result.rows, result.width) != expected):
        raise SandboxError(f"the scoring job gave {outputs.shape} {outputs.dtype} for "
                           f"{len(rows)} rows of a model giving {width} per row")
    return outputs


def _run(job: str, request: object, inputs: dict[str, bytes | Path], outputs: set[str],
         limits: Limits, shown: Path) -> protocol.Answer:
    """Run a job; its refusal, or a sandbox failure, becomes one BundleError line."""
    try:
        answer = run_job(job, request, inputs, outputs, limits)
    except SandboxUnavailable:
        raise
    except InputRefused as error:  # it names the file itself
        raise BundleError(str(error)) from None
    except SandboxError as error:
        raise BundleError(f"{shown}: {error}") from None
    if answer.error:
        raise BundleError(answer.error)
    return answer
