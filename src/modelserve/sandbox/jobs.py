"""The code inside the sandbox: `python -I -m modelserve.sandbox.jobs check|convert|score|import`.

It reads the input tar from stdin into its private workspace, runs one job on it, and answers
with a tar on stdout: result.json (a result, or the one-line reason for a refusal) and the
job's output files. Messages name the caller's paths, never the sandbox's.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from modelserve.errors import UserError
from modelserve.sandbox import protocol
from modelserve.sandbox.policy import Limits
from modelserve.sandbox.protocol import (
    CheckRequest,
    CheckResult,
    ConvertRequest,
    ConvertResult,
    ImportRequest,
    ImportResult,
    ScoreRequest,
    ScoreResult,
)

PLAN_FILE = "plan.npz"
ROWS_FILE = "rows.npy"
OUTPUTS_FILE = "outputs.npy"
ARCHITECTURE, WEIGHTS, DATASET = "architecture", "weights", "dataset.csv"
BUNDLE_FILES = ("model.keras", "manifest.json")
Outputs = dict[str, Path]


class JobRefused(UserError):
    """The job's input does not pass; the message names the caller's files."""


def receive(stream: IO[bytes], into: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    """Unpack the input tar: the request (parsed) and the files (written under `into`)."""
    into.mkdir()
    request: Any = None
    files: dict[str, Path] = {}
    for name, content, _size in protocol.read_members(stream, Limits().max_input_bytes):
        if name == protocol.REQUEST_MEMBER:
            request = protocol.parse_json(content.read())
            continue
        path = into / name
        with path.open("xb") as file:
            while chunk := content.read(1 << 20):
                file.write(chunk)
        files[name] = path
    if not isinstance(request, dict):
        raise protocol.ProtocolError(f"no {protocol.REQUEST_MEMBER}")
    return request, files


def _shown(error: UserError, paths: Mapping[Path, str]) -> JobRefused:
    """The error with the sandbox's paths replaced by the names the caller gave."""
    message = str(error)
    for path, shown in sorted(paths.items(), key=lambda item: -len(str(item[0]))):
        message = message.replace(str(path), shown)
    return JobRefused(message)


def _bundle_from(files: dict[str, Path], workspace: Path) -> Path:
    """Gather the bundle's files (all but the rows) into one directory."""
    bundle = workspace / "bundle"
    bundle.mkdir()
    for name, path in files.items():
        if name != ROWS_FILE:
            path.rename(bundle / name)
    return bundle


def run_check(raw: dict[str, Any], files: dict[str, Path],
              workspace: Path) -> tuple[CheckResult, Outputs]:
    """Check a bundle; derive plan.npz from its checked model.keras when it compiles."""
    from modelserve.model.check import check_bundle

    request = protocol.from_json(CheckRequest, raw)
    bundle = _bundle_from(files, workspace)
    plan = workspace / PLAN_FILE
    try:
        report = check_bundle(bundle, plan_out=plan)
    except UserError as error:
        raise _shown(error, {bundle: request.shown}) from None
    return CheckResult(**report), ({PLAN_FILE: plan} if plan.is_file() else {})


def run_convert(raw: dict[str, Any], files: dict[str, Path],
                workspace: Path) -> tuple[ConvertResult, Outputs]:
    """Convert a legacy pair into a bundle evaluated on the dataset, then check it like any."""
    from modelserve.model.check import check_bundle
    from modelserve.model.dataset import load_dataset
    from modelserve.model.legacy import import_legacy

    request = protocol.from_json(ConvertRequest, raw)
    names = (request.architecture_name, request.weights_name)
    if not all(protocol.PLAIN_NAME.fullmatch(name) for name in names):
        raise protocol.ProtocolError("the legacy files need plain names")
    architecture = _move(files[ARCHITECTURE], workspace / "a" / request.architecture_name)
    weights = _move(files[WEIGHTS], workspace / "w" / request.weights_name)
    out = workspace / "out"
    shown = {architecture: request.architecture_shown, weights: request.weights_shown,
             files[DATASET]: request.dataset_shown, out: "the bundle"}
    plan = workspace / PLAN_FILE
    try:
        manifest = import_legacy(architecture, weights, load_dataset(files[DATASET]), out)
        # Checked here too, while TensorFlow is loaded: the bundle comes back with its plan.
        report = check_bundle(out, plan_out=plan)
    except UserError as error:
        raise _shown(error, shown) from None
    outputs = {name: out / name for name in BUNDLE_FILES}
    if plan.is_file():
        outputs[PLAN_FILE] = plan
    return ConvertResult(manifest["version"], report["runtime"]), outputs


def _move(path: Path, to: Path) -> Path:
    """Move a received file into a directory of its own, under its own name."""
    to.parent.mkdir()
    path.rename(to)
    return to


def run_score(raw: dict[str, Any], files: dict[str, Path],
              workspace: Path) -> tuple[ScoreResult, Outputs]:
    """Score rows.npy with the bundle: outputs.npy, float32 (rows, output width)."""
    import numpy as np

    from modelserve.model.runtime import ModelRuntime

    request = protocol.from_json(ScoreRequest, raw)
    rows = np.load(files[ROWS_FILE], allow_pickle=False)
    bundle = _bundle_from(files, workspace)
    try:
        runtime = ModelRuntime.load(bundle)
        outputs = runtime.score(rows).outputs
    except UserError as error:
        raise _shown(error, {bundle: request.shown}) from None
    out = workspace / OUTPUTS_FILE
    np.save(out, np.asarray(outputs, dtype=np.float32), allow_pickle=False)
    return ScoreResult(len(outputs), outputs.shape[1], runtime.kind), {OUTPUTS_FILE: out}


FEATURES_FILE, TARGET_FILE, KERAS_FILE = "features.npy", "target.npy", "model.keras"


def run_import(raw: dict[str, Any], files: dict[str, Path],
               workspace: Path) -> tuple[ImportResult, Outputs]:
    """Import a .keras made elsewhere on the table sent, then check the bundle like any."""
    import numpy as np

    from modelserve.model.check import check_bundle
    from modelserve.model.importing import import_model, table_from_record

    request = protocol.from_json(ImportRequest, raw)
    if not {KERAS_FILE, FEATURES_FILE, TARGET_FILE} <= set(files):
        raise protocol.ProtocolError("an import needs model.keras, features.npy and target.npy")
    # The model file in a directory of its own: the bundle is written beside nothing of it.
    model = _move(files[KERAS_FILE], workspace / "m" / KERAS_FILE)
    out = workspace / "out"
    shown = {model: request.model_shown, out: "the bundle"}
    plan = workspace / PLAN_FILE
    try:
        table = table_from_record(
            request.feature_names, request.task, request.classes, request.label,
            request.sha256, np.load(files[FEATURES_FILE], allow_pickle=False),
            np.load(files[TARGET_FILE], allow_pickle=False))
        manifest = import_model(model, table, out, model_shown=request.model_shown,
                                data_shown=request.data_shown, seed=request.seed,
                                test_fraction=request.test_fraction)
        report = check_bundle(out, plan_out=plan)  # while TensorFlow is loaded: with its plan
    except UserError as error:
        raise _shown(error, shown) from None
    except ValueError as error:  # a .npy numpy cannot read, a task that is not one
        raise protocol.ProtocolError(f"the data sent is not readable ({error})") from None
    outputs = {name: out / name for name in BUNDLE_FILES}
    if plan.is_file():
        outputs[PLAN_FILE] = plan
    return (ImportResult(manifest["version"], report["runtime"],
                         int(manifest["metrics"]["rows"])), outputs)


RUNNERS: dict[str, Callable[[dict[str, Any], dict[str, Path], Path], tuple[Any, Outputs]]] = {
    "check": run_check, "convert": run_convert, "score": run_score,
    "import": run_import,
}


def main(argv: list[str]) -> int:
    """Run the job argv[0] names on the tar from stdin; answer with a tar on stdout."""
    if len(argv) != 1 or argv[0] not in RUNNERS:
        print(f"usage: python -m modelserve.sandbox.jobs {'|'.join(RUNNERS)}", file=sys.stderr)
        return 2
    answer = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # what a model or a library prints goes to stderr, not into the answer
    workspace = Path(tempfile.mkdtemp(prefix="job-"))
    outputs: Outputs = {}
    try:
        request, files = receive(sys.stdin.buffer, workspace / "in")
        result, outputs = RUNNERS[argv[0]](request, files, workspace)
        payload: dict[str, Any] = {"result": asdict(result)}
    except UserError as error:
        payload = {"error": str(error)}
    except MemoryError:
        payload = {"error": "the model needs more memory than the sandbox allows"}
    members: dict[str, bytes | Path] = {protocol.RESULT_MEMBER: json.dumps(payload).encode()}
    protocol.write_tar(answer, {**members, **outputs})
    answer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
