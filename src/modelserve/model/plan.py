"""A compiled inference plan: a Sequential model of Normalization and Dense layers as numpy.

Keras' per-call overhead (0.4 ms for a direct call, 40 ms for `predict`) dwarfs the work of a
small MLP. The plan does the same arithmetic in a few numpy calls, and loads without importing
TensorFlow, so workers start in a fraction of a second. Plans are derived from model.keras,
verified against Keras when made, and cached beside the model as plan.npz.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PLAN_FORMAT = "modelserve.plan/1"
KERAS_EPSILON = 1e-7
# Rows per chunk: a chunk's widest activations stay in the L2 cache (8192 x 12 x 4 B = 384 KiB).
CHUNK_ROWS = 8192  # keras.backend.epsilon(), the floor Normalization puts under the stddev


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, in place, as 0.5 * tanh(x / 2) + 0.5: no overflow, one ufunc pass."""
    x *= 0.5
    np.tanh(x, out=x)
    x *= 0.5
    x += 0.5
    return x


def _softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax."""
    shifted = np.exp(x - x.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0, out=x),
    "sigmoid": _sigmoid,
    "tanh": lambda x: np.tanh(x, out=x),
    "softmax": _softmax,
}


@dataclass(frozen=True)
class Step:
    """One layer: `normalize` (x - shift) / scale, `rescale` x * scale + offset (scalars), or
    `dense` activation(x @ kernel + bias)."""

    kind: str
    arrays: tuple[np.ndarray, np.ndarray]
    activation: str = "linear"


@dataclass(frozen=True)
class Plan:
    """A chain of steps applied to float32 rows."""

    steps: tuple[Step, ...]
    source_sha256: str

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """Run the plan on a (n, features) float32 array, in cache-sized chunks."""
        rows = np.asarray(rows, dtype=np.float32)
        if len(rows) <= CHUNK_ROWS:
            return self._run(rows)
        return np.concatenate(
            [self._run(rows[i : i + CHUNK_ROWS]) for i in range(0, len(rows), CHUNK_ROWS)]
        )

    def _run(self, x: np.ndarray) -> np.ndarray:
        """Apply every step to one chunk."""
        for step in self.steps:
            first, second = step.arrays
            if step.kind == "normalize":
                x = (x - first) / second
            elif step.kind == "rescale":
                x = x * first + second
            else:
                x = x @ first
                x += second
                x = ACTIVATIONS[step.activation](x)
        return x

    @property
    def input_width(self) -> int:
        """How many values a row gives the first step."""
        return int(self.steps[0].arrays[0].shape[0])

    def save(self, path: Path) -> None:
        """Write the plan as an .npz (no pickles)."""
        spec = {
            "format": PLAN_FORMAT,
            "source_sha256": self.source_sha256,
            "steps": [{"kind": s.kind, "activation": s.activation} for s in self.steps],
        }
        arrays = {f"s{i}_{j}": a for i, s in enumerate(self.steps) for j, a in enumerate(s.arrays)}
        try:
            with open(path, "wb") as stream:
                np.savez(stream, spec=np.array(json.dumps(spec)), allow_pickle=False, **arrays)
        except OSError as error:  # a failed write does not name its file; a full disk must
            raise OSError(error.errno, error.strerror, str(path)) from None

    @classmethod
    def load(cls, path: Path) -> Plan:
        """Read a plan written by save(), refusing any that is not a well-formed chain.

        Plans are made in the sandbox from pushed models, then run by the serving account:
        what crosses is data, checked here (kinds, activations, dtypes, shapes that chain).
        """
        with np.load(path, allow_pickle=False) as data:
            spec = json.loads(str(data["spec"]))
            if not isinstance(spec, dict) or spec.get("format") != PLAN_FORMAT:
                raise PlanError(f"{path}: not a {PLAN_FORMAT} file")
            specs = spec.get("steps")
            if not isinstance(specs, list) or not specs or len(specs) > MAX_STEPS:
                raise PlanError(f"{path}: needs 1 to {MAX_STEPS} steps")
            steps = tuple(_step(s, data[f"s{i}_0"], data[f"s{i}_1"], path)
                          for i, s in enumerate(specs))
            source = spec.get("source_sha256")
        if not isinstance(source, str):
            raise PlanError(f"{path}: no source hash")
        _check_chain(steps, path)
        return cls(steps, source)


STEP_KINDS = ("normalize", "rescale", "dense")


class PlanError(ValueError):
    """A plan file that is not one this platform writes."""


MAX_STEPS = 64


def _step(spec: Any, first: np.ndarray, second: np.ndarray, path: Path) -> Step:
    """One step read from a file: a known kind and activation, float32 arrays."""
    if not isinstance(spec, dict) or spec.get("kind") not in STEP_KINDS:
        raise PlanError(f"{path}: a step of an unknown kind")
    if spec.get("activation") not in ACTIVATIONS:
        raise PlanError(f"{path}: a step with an unknown activation")
    if first.dtype != np.float32 or second.dtype != np.float32:
        raise PlanError(f"{path}: arrays must be float32")
    return Step(spec["kind"], (first, second), spec["activation"])


def _check_chain(steps: tuple[Step, ...], path: Path) -> None:
    """Each step takes the width the one before gives: a plan that cannot run is refused."""
    width: int | None = None
    for step in steps:
        first, second = step.arrays
        if step.kind == "normalize":
            if first.ndim != 1 or first.shape != second.shape or not len(first):
                raise PlanError(f"{path}: a normalize step needs two equal 1-D arrays")
            given = taken = first.shape[0]
        elif step.kind == "rescale":
            if first.shape != () or second.shape != () or width is None:
                raise PlanError(f"{path}: a rescale step needs two scalars, after another step")
            given = taken = width
        else:
            if first.ndim != 2 or second.shape != (first.shape[1],) or 0 in first.shape:
                raise PlanError(f"{path}: a dense step needs a kernel and a matching bias")
            taken, given = first.shape
        if width is not None and taken != width:
            raise PlanError(f"{path}: a step takes {taken} values where {width} arrive")
        width = given


def compile_plan(model: Any, source_sha256: str) -> Plan | None:
    """Translate a Keras Sequential model into a plan, or None if a layer is not supported."""
    if type(model).__name__ != "Sequential":
        return None
    steps = []
    for layer in model.layers:
        step = _compile_layer(layer)
        if step is None:
            return None
        steps.append(step)
    return Plan(tuple(steps), source_sha256)


def _compile_layer(layer: Any) -> Step | None:
    """Translate one layer; None when it is not plain Normalization or Dense."""
    kind = type(layer).__name__
    if kind == "Normalization" and not layer.invert and tuple(layer.axis) == (-1,):
        mean = np.asarray(layer.mean, dtype=np.float32).reshape(-1)
        stddev = np.sqrt(np.asarray(layer.variance, dtype=np.float32).reshape(-1))
        return Step("normalize", (mean, np.maximum(stddev, np.float32(KERAS_EPSILON))))
    if kind == "Rescaling" and np.ndim(layer.scale) == 0 and np.ndim(layer.offset) == 0:
        scale, offset = (np.asarray(value, np.float32) for value in (layer.scale, layer.offset))
        return Step("rescale", (scale, offset))
    if kind == "Dense" and not layer.lora_enabled:
        activation = getattr(layer.activation, "__name__", "")
        if activation not in ACTIVATIONS:
            return None
        kernel = np.asarray(layer.kernel, dtype=np.float32)
        bias = (
            np.asarray(layer.bias, dtype=np.float32)
            if layer.use_bias
            else np.zeros(kernel.shape[1], np.float32)
        )
        return Step("dense", (kernel, bias), activation)
    return None
