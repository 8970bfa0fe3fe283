"""The inference runtime: load a bundle once, score batches of rows, stamp the version."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelserve.errors import UserError
from modelserve.model.answers import labels_for
from modelserve.model.archive import ARCHIVE_LIMITS, ArchiveLimits, check_archive
from modelserve.model.backend import import_keras, import_tensorflow
from modelserve.model.bundle import MODEL_FILE, BundleError, verify_integrity
from modelserve.model.plan import Plan, compile_plan
from modelserve.model.spec import ModelSpec

PLAN_FILE = "plan.npz"
PLAN_TOLERANCE = 1e-5  # of the batch's largest output, or absolute below 1

log = logging.getLogger(__name__)


class InputError(UserError):
    """Rows that do not fit the model's input contract."""


@dataclass(frozen=True)
class Scores:
    """A batch's outputs and answers, with the version that computed them."""

    outputs: np.ndarray  # float32 (rows, output width): see answers.tensors for each task
    labels: np.ndarray  # class index per row (int8); empty for a regression model
    version: str

    @property
    def probabilities(self) -> np.ndarray:
        """A binary model's probability of the positive class per row (a regression: values)."""
        return self.outputs[:, 0]


def load_keras_model(path: Path, limits: ArchiveLimits = ARCHIVE_LIMITS) -> Any:
    """Check a .keras archive, then load it without compiling it or running arbitrary code."""
    try:
        # Before Keras sees a byte: a zip bomb or a booby-trapped weights file is refused here.
        check_archive(path, limits)
    except (BundleError, OSError) as error:
        reason = str(error) if isinstance(error, BundleError) else error.strerror or str(error)
        raise BundleError(f"{path}: cannot be loaded as a Keras model ({reason})") from None
    keras = import_keras()  # deferred: TensorFlow takes seconds to import, often needlessly

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many types for a bad file; all mean the same
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise BundleError(f"{path}: cannot be loaded as a Keras model ({message})") from None


def keras_function(model: Any, n_features: int) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap a Keras model in one traced TensorFlow function (never `model.predict`)."""
    tf = import_tensorflow()

    spec = tf.TensorSpec([None, n_features], tf.float32)
    traced = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    traced.get_concrete_function()  # traced now, at load: the first request does not pay for it
    return lambda rows: traced(rows).numpy()


def plan_matches(plan: Plan, model: Any, rows: np.ndarray) -> bool:
    """Check that a plan computes what Keras computes on the given rows."""
    expected = np.asarray(model(rows, training=False))
    # A regression model answers in its target's units: around 300, one float32 step is 3e-5,
    # and a small answer carries the rounding of the large offset it was computed from. So
    # the tolerance scales with the batch's largest output (probabilities: 1e-5 absolute).
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    return bool(np.allclose(plan(rows), expected, atol=PLAN_TOLERANCE * scale, rtol=0))


class ModelRuntime:
    """A loaded model version that scores batches of rows."""

    def __init__(self, spec: ModelSpec, predict: Callable[[np.ndarray], np.ndarray], kind: str):
        self.spec = spec
        self.version = spec.version
        self.features = spec.feature_names
        self.kind = kind
        self._predict = predict

    @classmethod
    def load(cls, bundle: Path, *, trust_cached_plan: bool = False) -> ModelRuntime:
        """Load a bundle with Keras (compiled to a plan or a graph), or its cached plan if trusted.

        plan.npz is not listed in the manifest, so anyone who hands over a bundle directory
        could put any numbers in it: only pass trust_cached_plan for a directory whose plan
        this platform derived itself from the checked model.keras (a registry version).
        """
        bundle = Path(bundle)
        spec = verify_integrity(bundle)
        model_sha = spec.files[MODEL_FILE]
        plan = None
        if trust_cached_plan:
            plan = _cached_plan(bundle / PLAN_FILE, model_sha, spec.width)
        if plan is not None:
            return cls(spec, plan, "plan")
        model = load_keras_model(bundle / MODEL_FILE)
        plan = compile_plan(model, model_sha)
        if plan is not None and plan_matches(plan, model, spec.example_rows()):
            return cls(spec, plan, "plan")
        return cls(spec, keras_function(model, spec.width), "keras")

    def score(self, rows: Any) -> Scores:
        """Score a batch of rows given as a (n, features) array-like of numbers."""
        batch = self.validate(rows)
        width = self.spec.output.width
        if len(batch) == 0:
            outputs = np.zeros((0, width), np.float32)
        else:
            outputs = np.asarray(self._predict(batch), dtype=np.float32)
            if outputs.shape != (len(batch), width):  # the check refuses such a model first
                raise BundleError(f"the model gave outputs of shape {outputs.shape} for "
                                  f"{len(batch)} rows; its contract is ({width},) per row")
        return Scores(outputs, labels_for(self.spec.output, outputs), self.version)

    def validate(self, rows: Any) -> np.ndarray:
        """Return rows as float32 (n, features), refusing wrong shapes and non-finite values."""
        try:
            batch = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError):
            raise InputError("rows must be numbers only") from None
        if batch.ndim != 2 or batch.shape[1] != len(self.features):
            raise InputError(
                f"rows must have {len(self.features)} values each "
                f"({', '.join(self.features)}); got shape {batch.shape}"
            )
        finite = np.isfinite(batch)
        if not finite.all():
            row, column = np.argwhere(~finite)[0]
            name, value = self.features[column], batch[row, column]
            raise InputError(f"row {row + 1}, {name}: {value} is not a finite number")
        return batch


def _cached_plan(path: Path, model_sha: str, features: int) -> Plan | None:
    """Load plan.npz if it exists, was derived from this very model file and takes its rows."""
    if not path.is_file():
        return None
    try:
        plan = Plan.load(path)
    except Exception as error:  # damaged bytes make zipfile/numpy raise many types
        # A damaged cache is ignored: the model itself is the truth (but slower to load).
        log.warning("%s is damaged (%s); loading the model with Keras instead", path, error)
        return None
    return plan if plan.source_sha256 == model_sha and plan.input_width == features else None
