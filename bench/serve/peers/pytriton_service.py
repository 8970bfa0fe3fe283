"""Triton peer through PyTriton: the same model as a Python model, dynamic batching on.

Triton speaks the V2 (Open Inference) protocol: POST /v2/models/classifier/infer with
{"inputs": [{"name": "rows", "shape": [1, 8], "datatype": "FP32", "data": [...]}]}, answered
with the "probabilities" output, shape [1, 1]. Triton's dynamic batcher joins concurrent
requests (up to BENCH_MAX_BATCH_SIZE rows, waiting at most BENCH_MAX_QUEUE_DELAY_US) and
@batch hands infer() the stacked rows. Started by bench/serve/run.py in its own venv as
`python pytriton_service.py` with BENCH_PLAN_PATH (see dense.py), BENCH_HTTP_PORT,
BENCH_GRPC_PORT, BENCH_METRICS_PORT and BENCH_WORKSPACE; SIGINT or SIGTERM stops it and
tritonserver with it.
"""

from __future__ import annotations

import os
import signal

import dense
import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

MODEL = "classifier"
N_FEATURES = 8


def main() -> None:
    """Bind the model on loopback-only Triton and serve until interrupted."""
    # Started in the background SIGINT may be ignored; both signals end serve() as Ctrl-C.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    score = dense.load(os.environ["BENCH_PLAN_PATH"])

    @batch
    def infer(rows: np.ndarray) -> dict[str, np.ndarray]:
        return {"probabilities": score(rows).astype(np.float32)}

    config = TritonConfig(
        http_address="127.0.0.1", http_port=int(os.environ["BENCH_HTTP_PORT"]),
        grpc_address="127.0.0.1", grpc_port=int(os.environ["BENCH_GRPC_PORT"]),
        metrics_address="127.0.0.1", metrics_port=int(os.environ["BENCH_METRICS_PORT"]),
        allow_gpu_metrics=False, log_verbose=0,
    )
    batcher = DynamicBatcher(
        max_queue_delay_microseconds=int(os.environ.get("BENCH_MAX_QUEUE_DELAY_US", "10000")))
    model_config = ModelConfig(
        max_batch_size=int(os.environ.get("BENCH_MAX_BATCH_SIZE", "64")), batcher=batcher)
    with Triton(config=config, workspace=os.environ["BENCH_WORKSPACE"]) as triton:
        triton.bind(
            model_name=MODEL, infer_func=infer,
            inputs=[Tensor(name="rows", dtype=np.float32, shape=(N_FEATURES,))],
            outputs=[Tensor(name="probabilities", dtype=np.float32, shape=(1,))],
            config=model_config, strict=True,
        )
        try:
            triton.serve()
        except KeyboardInterrupt:
            pass  # leaving the with-block stops tritonserver and removes the workspace


if __name__ == "__main__":
    main()
