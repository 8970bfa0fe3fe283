"""Check that a bundle is safe to serve: it loads, fits its contract and reproduces its examples.

It loads the model: run it on a model someone else made only inside the sandbox
(`modelserve.sandbox.confined.check_bundle_confined` runs it as the `check` job).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from modelserve.model.bundle import MODEL_FILE, BundleError, verify_integrity
from modelserve.model.plan import compile_plan
from modelserve.model.runtime import load_keras_model, plan_matches
from modelserve.model.spec import ModelSpec, Task

EXAMPLE_TOLERANCE = 1e-5
PROBE_ROWS = 256


def check_bundle(bundle: Path, plan_out: Path | None = None) -> dict:
    """Run every check in this process; write the compiled plan to plan_out if given."""
    bundle = Path(bundle)
    spec = verify_integrity(bundle)
    model = load_keras_model(bundle / MODEL_FILE)
    _check_input_shape(model, spec.width)
    examples = spec.example_rows()
    if len(examples) == 0:
        raise BundleError(f"{bundle}: the manifest has no example rows to check the model on")
    outputs = np.asarray(model(examples, training=False))
    difference = _check_outputs(outputs, spec, bundle)
    plan = compile_plan(model, spec.files[MODEL_FILE])
    if plan is not None and not plan_matches(plan, model, probe_rows(spec, examples)):
        plan = None  # a plan that disagrees with Keras is never served
    if plan is not None and plan_out is not None:
        plan.save(plan_out)
    return {
        "version": spec.version,
        "examples": len(examples),
        "max_difference": difference,
        "runtime": "plan" if plan is not None else "keras",
    }


def _check_input_shape(model: Any, width: int) -> None:
    """Refuse a model whose input is not (batch, width)."""
    shape = getattr(model, "input_shape", None)
    if not isinstance(shape, tuple) or len(shape) != 2 or shape[1] != width:
        raise BundleError(
            f"the model takes input of shape {shape}; the contract says (None, {width})"
        )


def _check_outputs(outputs: np.ndarray, spec: ModelSpec, bundle: Path) -> float:
    """Refuse wrong output shapes, non-finite or out-of-range values, or unexpected results."""
    width = spec.output.width
    if outputs.ndim != 2 or outputs.shape[1] != width:
        raise BundleError(
            f"the model gives output of shape {outputs.shape[1:]}; the contract is ({width},)"
        )
    if not np.isfinite(outputs).all():
        raise BundleError("the model gives NaN or infinite outputs on the contract's example rows")
    if spec.task is not Task.REGRESSION and (outputs.min() < 0 or outputs.max() > 1):
        raise BundleError("the model gives outputs outside [0, 1]; they must be probabilities")
    difference = float(np.abs(outputs - spec.example_outputs()).max())
    if difference > EXAMPLE_TOLERANCE:
        raise BundleError(
            f"{bundle}: the model's outputs differ from the manifest's by {difference:.3g}; "
            "the manifest does not belong to this model"
        )
    return difference


def probe_rows(spec: ModelSpec, examples: np.ndarray) -> np.ndarray:
    """Return the examples plus seeded random rows spread over each feature's range."""
    low = np.asarray([0.0 if f.minimum is None else f.minimum for f in spec.features], np.float32)
    high = np.asarray([1.0 if f.maximum is None else f.maximum for f in spec.features],
                      np.float32)
    rng = np.random.default_rng(0)
    random_rows = rng.uniform(low, high, size=(PROBE_ROWS, spec.width)).astype(np.float32)
    return np.concatenate([examples, random_rows])
