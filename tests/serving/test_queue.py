"""The queue path under concurrency: every caller gets its own rows back, batched."""

from __future__ import annotations

import http.client as httpclient
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pytest

from modelserve.config import Settings
from modelserve.stack.rabbitmq import BrokerNode
from modelserve.web import metrics
from modelserve.web.predictors import QueuePredictor
from serving.conftest import expected
from serving.stack_helpers import http

CLIENTS = 64
LOAD_SECONDS = 30
HANG_SECONDS = 10  # far beyond the 5 s request deadline: an answer this late is a hang


@dataclass
class Tally:
    """What the clients saw, shared between their threads."""

    answered: int = 0
    wrong: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, ok: bool, problem: str = "", failure: bool = False) -> None:
        """Count one answer and keep the first few problems."""
        with self.lock:
            self.answered += 1
            target = self.failed if failure else self.wrong
            if not ok and len(target) < 20:
                target.append(problem)


def _client(number: int, stack, features: np.ndarray, want: np.ndarray, version: str,
            tally: Tally, stop_at: float) -> None:
    """Send requests of 1 to 3 rows unique to this client; check each answer is for them."""
    connection = httpclient.HTTPConnection("127.0.0.1", stack.port, timeout=HANG_SECONDS)
    rng = np.random.default_rng(number)
    mine = np.arange(number, len(features), CLIENTS)
    while time.monotonic() < stop_at:
        picked = rng.choice(mine, size=int(rng.integers(1, 4)))
        body = json.dumps({"rows": features[picked].tolist()})
        try:
            connection.request("POST", "/api/v1/predict", body,
                               {"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = json.loads(response.read())
        except (OSError, httpclient.HTTPException, ValueError) as error:
            tally.record(False, f"client {number}: {error!r}", failure=True)
            connection.close()
            connection = httpclient.HTTPConnection("127.0.0.1", stack.port, timeout=HANG_SECONDS)
            continue
        if response.status != 200:
            tally.record(False, f"client {number}: {response.status} {answer}", failure=True)
            continue
        ok = (answer["model_version"] == version
              and np.allclose(answer["probabilities"], want[picked], atol=1e-6))
        tally.record(ok, f"client {number}: rows {picked.tolist()} got {answer}")
    connection.close()


def _batch_sample(text: str, name: str) -> float:
    """Read one sample value from Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in metrics")


@pytest.mark.slow
def test_64_clients_for_30_seconds_each_get_their_own_answers(stack, dataset, versions,
                                                               runtimes):
    """The original rpc:// design cross-delivers under threads; ours must not, nor hang."""
    version = versions["production"]
    want = expected(runtimes[version], dataset.features)
    before = http("GET", f"{stack.url}/metrics").body.decode()
    tally = Tally()
    stop_at = time.monotonic() + LOAD_SECONDS
    with ThreadPoolExecutor(CLIENTS) as pool:
        clients = [pool.submit(_client, number, stack, dataset.features, want, version, tally,
                               stop_at) for number in range(CLIENTS)]
    for client in clients:
        client.result()  # a client that crashed is a failure of the test, not a silent one
    assert not tally.failed, tally.failed
    assert not tally.wrong, tally.wrong
    assert tally.answered > CLIENTS * 10, tally.answered
    after = http("GET", f"{stack.url}/metrics").body.decode()
    batches = (_batch_sample(after, "modelserve_batch_rows_count")
               - _batch_sample(before, "modelserve_batch_rows_count"))
    rows = (_batch_sample(after, "modelserve_batch_rows_sum")
            - _batch_sample(before, "modelserve_batch_rows_sum"))
    assert rows / batches > 1.5, "requests that arrive together must share messages"


def _broker_url(stack) -> str:
    """The URL of the stack's private broker, with its generated credentials."""
    return BrokerNode(stack.home / "broker", stack.broker_port).url()


def _batches_seen() -> tuple[float, float, float]:
    """Batches sent by this process so far: count, rows, and batches of at most 5 rows."""
    get = metrics.REGISTRY.get_sample_value
    return (get("modelserve_batch_rows_count") or 0.0, get("modelserve_batch_rows_sum") or 0.0,
            get("modelserve_batch_rows_bucket", {"le": "8.0"}) or 0.0)


@pytest.mark.slow  # the shared serving stack
def test_window_and_maximum_batch_are_honoured(stack, serving_home, dataset, versions, runtimes):
    """12 one-row requests in a 300 ms window, at most 5 rows a batch: 3 messages, own rows."""
    settings = Settings(home=serving_home, broker_url=_broker_url(stack), batch_window_ms=300,
                        max_batch_rows=5)
    predictor = QueuePredictor(settings)
    try:
        predictor.predict(dataset.features[:1], 5.0)  # connected and warm
        count, rows, small = _batches_seen()
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda i: predictor.predict(dataset.features[i:i + 1], 5.0),
                                    range(12)))
    finally:
        predictor.close()
    want = expected(runtimes[versions["production"]], dataset.features[:12])
    got = np.concatenate([answer.probabilities for answer in answers])
    np.testing.assert_allclose(got, want, atol=1e-6)
    new_count, new_rows, new_small = _batches_seen()
    assert new_rows - rows == 12
    assert new_count - count in (3, 4), "12 rows at most 5 a batch, all within the window"
    assert new_small - small == new_count - count, "no batch may exceed max_batch_rows"
