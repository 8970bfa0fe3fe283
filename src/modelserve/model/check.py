"""Check that a bundle is safe to serve: it loads, fits its contract and reproduces its examples.

It loads the model: run it on a model someone else made only inside the sandbox
(`modelserve.sandbox.confined.check_bundle_confined` runs it as the `check` job).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from modelserve.model.bundle import MODEL_FILE, BundleError, feature_names, verify_integrity
from modelserve.model.plan import compile_plan
from modelserve.model.runtime import example_rows, load_keras_model, plan_matches

EXAMPLE_TOLERANCE = 1e-5
PROBE_ROWS = 256


def check_bundle(bundle: Path, plan_out: Path | None = None) -> dict:
    """Run every check in this process; write the compiled plan to plan_out if given."""
    bundle = Path(bundle)
    manifest = verify_integrity(bundle)
    model = load_keras_model(bundle / MODEL_FILE)
    width = len(feature_names(manifest))
    _check_input_shape(model, width)
    examples = example_rows(manifest)
    if len(examples) == 0:
        raise BundleError(f"{bundle}: the manifest has no example rows to check the model on")
    outputs = np.asarray(model(examples, training=False))
    difference = _check_outputs(outputs, manifest, bundle)
    plan = compile_plan(model, manifest["files"][MODEL_FILE]["sha256"])
    if plan is not None and not plan_matches(plan, model, probe_rows(manifest, examples)):
        plan = None  # a plan that disagrees with Keras is never served
    if plan is not None and plan_out is not None:
        plan.save(plan_out)
    return {
        "version": manifest["version"],
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


def _check_outputs(outputs: np.ndarray, manifest: dict, bundle: Path) -> float:
    """Refuse wrong output shapes, non-finite or out-of-range values, or unexpected results."""
    if outputs.ndim != 2 or outputs.shape[1] != 1:
        raise BundleError(
            f"the model gives output of shape {outputs.shape[1:]}; the contract is (1,)"
        )
    if not np.isfinite(outputs).all():
        raise BundleError("the model gives NaN or infinite outputs on the contract's example rows")
    if outputs.min() < 0 or outputs.max() > 1:
        raise BundleError("the model gives outputs outside [0, 1]; they must be probabilities")
    recorded = np.asarray([e["probability"] for e in manifest["input"]["examples"]])
    difference = float(np.abs(outputs.ravel() - recorded).max())
    if difference > EXAMPLE_TOLERANCE:
        raise BundleError(
            f"{bundle}: the model's outputs differ from the manifest's by {difference:.3g}; "
            "the manifest does not belong to this model"
        )
    return difference


def probe_rows(manifest: dict, examples: np.ndarray) -> np.ndarray:
    """Return the examples plus seeded random rows spread over each feature's range."""
    features = manifest["input"]["features"]
    low = np.asarray([f.get("min", 0.0) for f in features], dtype=np.float32)
    high = np.asarray([f.get("max", 1.0) for f in features], dtype=np.float32)
    rng = np.random.default_rng(0)
    random_rows = rng.uniform(low, high, size=(PROBE_ROWS, len(features))).astype(np.float32)
    return np.concatenate([examples, random_rows])
