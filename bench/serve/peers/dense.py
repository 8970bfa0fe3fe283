"""The benchmark model as plain numpy, for the peers that run without TensorFlow.

Reads the plan.npz that modelserve derived from the same model.keras (and checked against
Keras when it made it): a chain of `normalize`, `rescale` and `dense` steps. Standalone on
purpose: the peers' venvs have numpy but not modelserve. bench/serve/run.py checks each
peer's answer against `modelserve predict`, so a reader that went wrong would show.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np

ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "sigmoid": lambda x: 0.5 * np.tanh(0.5 * x) + 0.5,
    "tanh": np.tanh,
}


def load(path: str) -> Callable[[np.ndarray], np.ndarray]:
    """Return a function scoring (n, features) rows into (n, outputs) float32 probabilities."""
    with np.load(path, allow_pickle=False) as data:
        spec = json.loads(str(data["spec"]))
        steps = [(s["kind"], s["activation"], data[f"s{i}_0"], data[f"s{i}_1"])
                 for i, s in enumerate(spec["steps"])]

    def score(rows: np.ndarray) -> np.ndarray:
        x = np.asarray(rows, dtype=np.float32)
        for kind, activation, first, second in steps:
            if kind == "normalize":
                x = (x - first) / second
            elif kind == "rescale":
                x = x * first + second
            else:
                x = ACTIVATIONS[activation](x @ first + second)
        return x

    return score
