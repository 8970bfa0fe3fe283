"""Ray Serve peer: the same model behind POST /api/v1/predict, requests batched by @serve.batch.

Takes the benchmark's JSON body {"rows": [[...8 numbers...]]} and answers
{"probabilities": [...]}; @serve.batch gathers concurrent requests' rows into one numpy call.
Started by bench/serve/run.py in its own venv as `python ray_service.py`, with BENCH_PORT,
BENCH_PLAN_PATH (the model's plan.npz, see dense.py), BENCH_MAX_BATCH_SIZE and
BENCH_BATCH_WAIT_S and BENCH_RAY_TEMP (Ray's session directory). It runs until the runner
stops its process group: Ray's core replaces Python's SIGTERM handler, so there is no graceful
shutdown to hook. Everything listens on 127.0.0.1 except the replica's internal gRPC server,
which Ray binds to [::]:0 (hard-coded in serve/_private/replica.py).
"""

from __future__ import annotations

import os
import threading

import dense
import numpy as np
import ray
from ray import serve

MAX_BATCH_SIZE = int(os.environ.get("BENCH_MAX_BATCH_SIZE", "64"))
BATCH_WAIT_S = float(os.environ.get("BENCH_BATCH_WAIT_S", "0.01"))
# Ray's default of 5 ongoing requests per replica would cap every batch at 5 rows.
MAX_ONGOING = int(os.environ.get("BENCH_MAX_ONGOING", "256"))


@serve.deployment(num_replicas=1, max_ongoing_requests=MAX_ONGOING)
class Classifier:
    """Score the rows of each request, many requests per numpy call."""

    def __init__(self, plan_path: str) -> None:
        self._score = dense.load(plan_path)

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def score(self, batches: list[np.ndarray]) -> list[list[float]]:
        """One call for every request gathered: stack their rows, split the answers back."""
        scored = self._score(np.concatenate(batches))[:, 0].tolist()
        ends = np.cumsum([len(b) for b in batches]).tolist()
        return [scored[end - len(b):end] for b, end in zip(batches, ends, strict=True)]

    async def __call__(self, request) -> dict:
        """The HTTP handler: parse the body, wait for the batch, answer the probabilities."""
        rows = np.asarray((await request.json())["rows"], dtype=np.float32)
        probabilities = await self.score(rows)
        return {"probabilities": probabilities, "labels": [int(p > 0.5) for p in probabilities]}


def main() -> None:
    """Start a local Ray node on loopback, deploy, and wait to be stopped."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=os.environ["BENCH_RAY_TEMP"])
    serve.start(http_options={"host": "127.0.0.1", "port": int(os.environ["BENCH_PORT"])},
                logging_config={"enable_access_log": False, "log_level": "WARNING"})
    serve.run(Classifier.bind(os.environ["BENCH_PLAN_PATH"]), route_prefix="/api/v1/predict")
    print("ray serve ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
