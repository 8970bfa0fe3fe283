"""Import a Keras 3 file made elsewhere (a notebook's .keras) as a format-2 bundle.

The contract comes from the data's header and the model's input shape; the model's outputs
must fit the task; the metrics are the task's on the held-out rows. The table's side
(`table_for_features`, `table_record`, `table_from_record`) is pure and never imports Keras:
the CLI uses it. `import_model` loads the user's file, so it runs only inside the sandbox's
`import` job.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from modelserve.fsutil import sha256_file
from modelserve.model import contract
from modelserve.model.bundle import MODEL_FILE, BundleError, write_manifest
from modelserve.model.spec import CLASS_NAME, PLAIN_NAME, Task
from modelserve.model.table import Table, split_table

# The split every trained model is measured on by default, so imported metrics compare.
DEFAULT_SEED = 7
DEFAULT_TEST_FRACTION = 0.2
# How far a softmax's row may be from summing to 1 in float32 (k terms, each rounded).
SUM_TOLERANCE = 1e-4
SHOWN_NAMES = 10


def shown_names(names: Sequence[str]) -> str:
    """Column names for a message: the first few, then how many more."""
    head = ", ".join(names[:SHOWN_NAMES])
    return head + (f", ... ({len(names) - SHOWN_NAMES} more)" if len(names) > SHOWN_NAMES else "")


def refuse_non_archive(path: Path) -> None:
    """Refuse, before any sandbox starts, a path that is not a file or not a zip (.keras is one)."""
    if not path.exists():
        raise BundleError(f"{path}: no such file")
    if path.is_symlink() or not path.is_file():
        raise BundleError(f"{path}: not a regular file")
    if not zipfile.is_zipfile(path):
        raise BundleError(f"{path}: not a Keras 3 archive (a .keras file is a zip archive; "
                          "save the model with model.save('model.keras'))")


def table_for_features(table: Table, names: Sequence[str], task: Task | None,
                       classes: Sequence[str] | None) -> Table:
    """The stored table under the model's own feature names (and class names), checked."""
    columns = table.features.shape[1]
    if len(names) != columns:
        raise BundleError(f"--features names {len(names)} columns; the stored dataset has "
                          f"{columns} feature columns ({shown_names(table.feature_names)})")
    bad = next((name for name in names if not PLAIN_NAME.fullmatch(name)), None)
    if bad is not None:
        raise BundleError(f"--features: {bad[:40]!r} is not a plain name (a letter or _, then "
                          "letters, digits or _, at most 64)")
    if len(set(names)) != len(names):
        twice = next(name for name in names if list(names).count(name) > 1)
        raise BundleError(f"--features names {twice!r} twice")
    if task is not None and task is not table.task:
        raise BundleError(f"--task {task.value}: the stored dataset's label {table.label!r} is "
                          f"{table.task.value} (import the data again with --task)")
    if classes is None:
        return replace(table, feature_names=tuple(names))
    if table.task is Task.REGRESSION:
        raise BundleError("--classes: a regression model has no classes")
    if len(classes) != len(table.classes) or len(set(classes)) != len(classes):
        raise BundleError(f"--classes names {len(classes)} classes; the stored label "
                          f"{table.label!r} has {len(table.classes)} "
                          f"({shown_names(table.classes)})")
    unfit = next((name for name in classes if not CLASS_NAME.fullmatch(name)), None)
    if unfit is not None:
        raise BundleError(f"--classes: {unfit[:40]!r} is not a plain class name")
    return replace(table, feature_names=tuple(names), classes=tuple(classes))


def table_record(table: Table) -> dict[str, Any]:
    """What of a table crosses into the sandbox besides its two arrays."""
    return {"feature_names": list(table.feature_names), "task": table.task.value,
            "classes": list(table.classes), "label": table.label, "sha256": table.sha256}


def table_from_record(feature_names: Sequence[str], task: str, classes: Sequence[str],
                      label: str, sha256: str, features: np.ndarray, target: np.ndarray) -> Table:
    """Rebuild a table on the sandbox's side, refusing arrays that do not fit the record."""
    kind = Task(task)
    rows = len(features)
    if features.dtype != np.float32 or features.shape != (rows, len(feature_names)) \
            or target.shape != (rows,) or not rows:
        raise BundleError(f"the data sent is {features.shape} {features.dtype} features and "
                          f"{target.shape} targets for {len(feature_names)} names")
    wanted = np.float64 if kind is Task.REGRESSION else np.int64
    return Table(feature_names=tuple(feature_names), features=features,
                 target=target.astype(wanted), task=kind, classes=tuple(classes), label=label,
                 inferred="", sha256=sha256)


def input_width(model: Any, model_shown: str) -> int:
    """The width of the model's one (batch, n) input, or one line saying why it has none."""
    shape = getattr(model, "input_shape", None)
    if isinstance(shape, list):
        raise BundleError(f"{model_shown} takes {len(shape)} input tensors; a served model "
                          "takes one (rows, features) array")
    if not isinstance(shape, tuple) or len(shape) != 2 or not isinstance(shape[1], int):
        raise BundleError(f"{model_shown} takes input of shape {shape}; a served model takes "
                          "(rows, features)")
    return shape[1]


def check_input_width(width: int, table: Table, model_shown: str, data_shown: str) -> None:
    """One line naming both when the model's inputs are not the data's feature columns."""
    columns = len(table.feature_names)
    if width != columns:
        raise BundleError(f"{model_shown} takes {width} inputs; {data_shown} has {columns} "
                          f"feature columns ({shown_names(table.feature_names)})")


def check_outputs(outputs: np.ndarray, table: Table, model_shown: str) -> None:
    """Refuse outputs that do not fit the task: width, finiteness, probabilities, sums."""
    width = outputs.shape[1] if outputs.ndim == 2 else None
    task, classes = table.task, table.classes
    want = len(classes) if task is Task.MULTICLASS else 1
    if outputs.ndim != 2 or width != want:
        given = f"{width} outputs per row" if width is not None else \
            f"outputs of shape {outputs.shape[1:]} per row"
        raise BundleError(f"{model_shown} gives {given}; {_wanted(table)}")
    if not np.isfinite(outputs).all():
        row = int(np.argwhere(~np.isfinite(outputs))[0][0])
        raise BundleError(f"{model_shown} gives NaN or infinite outputs (held-out row {row + 1})")
    if task is Task.REGRESSION:
        return
    outside = np.flatnonzero((outputs < 0).any(axis=1) | (outputs > 1).any(axis=1))
    last = "a sigmoid" if task is Task.BINARY else "a softmax"
    if len(outside):
        row = int(outside[0])
        value = float(outputs[row].max() if outputs[row].max() > 1 else outputs[row].min())
        raise BundleError(f"{model_shown} gives outputs outside [0, 1] ({value:.4g} on "
                          f"held-out row {row + 1}); a {task.value} model's outputs are "
                          f"probabilities: end it in {last}")
    if task is Task.MULTICLASS:
        sums = outputs.astype(np.float64).sum(axis=1)
        off = np.flatnonzero(np.abs(sums - 1) > SUM_TOLERANCE)
        if len(off):
            row = int(off[0])
            raise BundleError(f"{model_shown} gives probabilities summing to {sums[row]:.4g} on "
                              f"held-out row {row + 1}; the {len(classes)} classes' must sum to "
                              f"1: end it in {last}")


def _wanted(table: Table) -> str:
    """What outputs the task needs, in words."""
    if table.task is Task.BINARY:
        return (f"a binary model gives 1 output per row (the probability that {table.label} is "
                f"{table.classes[1]})")
    if table.task is Task.MULTICLASS:
        return (f"the {len(table.classes)} classes of {table.label} "
                f"({shown_names(table.classes)}) need {len(table.classes)} outputs per row")
    return f"a regression model gives 1 output per row (the predicted {table.label})"


def import_model(model_path: Path, table: Table, out: Path, *, model_shown: str,
                 data_shown: str, seed: int = DEFAULT_SEED,
                 test_fraction: float = DEFAULT_TEST_FRACTION) -> dict[str, Any]:
    """Load the user's .keras (safe mode), check it against the table, write the bundle."""
    from modelserve.model.runtime import load_keras_model  # deferred: Keras, in the sandbox

    model = load_keras_model(model_path)
    check_input_width(input_width(model, model_shown), table, model_shown, data_shown)
    _, test_idx = split_table(table, test_fraction, seed)

    def predict(rows: np.ndarray) -> np.ndarray:
        return _outputs(model, rows, model_shown)

    check_outputs(predict(table.features[test_idx]), table, model_shown)
    split = contract.table_split_record(table, seed, test_fraction, table.rows - len(test_idx),
                                        len(test_idx))
    manifest = contract.table_manifest(predict, table, test_idx, split)
    manifest.update(training=None, source={"kind": "imported", "file": Path(model_shown).name})
    return write_imported_bundle(out, model_path, manifest)


def _outputs(model: Any, rows: np.ndarray, model_shown: str) -> np.ndarray:
    """The model's own outputs, as float32; a model whose call fails is refused in one line."""
    try:
        outputs = model(rows, training=False)
        if isinstance(outputs, (list, tuple, dict)):
            raise BundleError(f"{model_shown} gives {len(outputs)} output tensors; a served "
                              "model gives one (rows, outputs) array")
        return np.asarray(outputs, dtype=np.float32)
    except BundleError:
        raise
    except Exception as error:  # Keras raises many types for a model that cannot run rows
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise BundleError(f"{model_shown} cannot run on the data's rows ({first[:300]})") from None


def write_imported_bundle(out: Path, model_path: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write the user's .keras byte for byte as model.keras, and the manifest listing it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / MODEL_FILE
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".model.", suffix=".keras")
    os.close(fd)
    try:
        shutil.copyfile(model_path, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    manifest = dict(manifest, files={MODEL_FILE: {"sha256": sha256_file(target),
                                                  "bytes": target.stat().st_size}})
    return write_manifest(out, manifest)
