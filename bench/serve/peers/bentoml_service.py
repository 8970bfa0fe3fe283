"""BentoML peer: the same model.keras behind one batchable endpoint taking the same JSON body.

The API parameter is named `rows`, so BentoML decodes the body {"rows": [[...8 numbers...]]}
into a (1, 8) array; adaptive batching stacks such arrays along dimension 0. The answer is
the list of probabilities, e.g. [0.8241573].

Started by bench/serve/run.py as `bentoml serve bentoml_service:Classifier` in its own venv,
with BENCH_MODEL_PATH naming the bundle's model.keras and BENCH_MAX_BATCH_SIZE /
BENCH_MAX_LATENCY_MS setting adaptive batching. The model runs as one traced tf.function per
batch (never `model.predict`, which costs ~65 ms a call here).
"""

from __future__ import annotations

import os

import bentoml
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

N_FEATURES = 8
MAX_BATCH_SIZE = int(os.environ.get("BENCH_MAX_BATCH_SIZE", "64"))
MAX_LATENCY_MS = int(os.environ.get("BENCH_MAX_LATENCY_MS", "100"))


@bentoml.service(
    workers=int(os.environ.get("BENCH_WORKERS", "1")),
    traffic={"timeout": 30},
    logging={"access": {"enabled": False}},  # our servers log no access lines either
)
class Classifier:
    """Score rows of the Pima model with adaptive batching on."""

    def __init__(self) -> None:
        import keras
        import tensorflow as tf

        model = keras.saving.load_model(
            os.environ["BENCH_MODEL_PATH"], compile=False, safe_mode=True
        )
        spec = tf.TensorSpec([None, N_FEATURES], tf.float32)
        self._traced = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        self._traced(np.zeros((1, N_FEATURES), np.float32))  # trace once before serving

    @bentoml.api(
        route="/api/v1/predict",
        batchable=True,
        batch_dim=0,
        max_batch_size=MAX_BATCH_SIZE,
        max_latency_ms=MAX_LATENCY_MS,
    )
    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Return one probability per row for a batch stacked from many requests."""
        # The model answers shape (n, 1); flat (n,) keeps the batch dimension and makes the
        # body a plain list of probabilities, as ours lists them under "probabilities".
        return self._traced(np.asarray(rows, dtype=np.float32)).numpy()[:, 0]
