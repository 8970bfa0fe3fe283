"""The original design as a benchmark peer: Flask -> Celery over RabbitMQ (rpc://) -> Keras.

Each request's rows go to the Celery worker as one task; the request handler blocks on
`result.get(timeout=...)` with the rpc:// result backend, and the worker calls
`model.predict` on a Keras model loaded once per worker process. Nothing is tuned: this is
the system the project replaces, measured as it was built. bench/serve/run.py starts it as

    celery -A original_design:celery_app worker --pool prefork --concurrency 1
    gunicorn -k gthread -w 1 --threads 64 original_design:app

with BENCH_BROKER_URL (AMQP URL) and BENCH_MODEL_PATH (a model.keras file) set, and
BENCH_RESULT_TIMEOUT (seconds a request waits for its task, default 10).
"""

from __future__ import annotations

import os

import numpy as np
from celery import Celery
from flask import Flask, jsonify, request

celery_app = Celery(
    "original_design",
    broker=os.environ.get("BENCH_BROKER_URL", "amqp://127.0.0.1//"),
    backend="rpc://",
)
app = Flask(__name__)

_model = None


def load_model():
    """Load the Keras model on first use, once per worker process (never in the web process)."""
    global _model
    if _model is None:
        import keras  # only the worker pays for TensorFlow

        _model = keras.saving.load_model(os.environ["BENCH_MODEL_PATH"], compile=False)
    return _model


@celery_app.task(name="original_design.predict")
def predict_task(rows: list[list[float]]) -> list[float]:
    """Score rows with `model.predict`, as the original worker did."""
    probabilities = load_model().predict(np.asarray(rows, dtype=np.float32), verbose=0)
    return [float(p) for p in probabilities[:, 0]]


@app.post("/api/v1/predict")
def predict():
    """Send the rows to the worker and wait for its answer on the rpc:// backend."""
    rows = request.get_json()["rows"]
    timeout = float(os.environ.get("BENCH_RESULT_TIMEOUT", "10"))
    probabilities = predict_task.delay(rows).get(timeout=timeout)
    return jsonify(probabilities=probabilities, labels=[int(p > 0.5) for p in probabilities])
