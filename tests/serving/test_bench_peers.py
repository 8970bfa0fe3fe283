"""The benchmark's peer modules that run without modelserve: the numpy model and the echo."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from modelserve.model.plan import Plan, Step

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "serve" / "peers"))
import dense  # noqa: E402 (bench/serve/peers is not a package)
import echo_app  # noqa: E402


def test_dense_reads_a_plan_as_modelserve_computes_it(tmp_path):
    """dense.load gives the peers the same probabilities as modelserve's Plan, every step kind."""
    rng = np.random.default_rng(16)
    f32 = np.float32
    plan = Plan((
        Step("normalize", (rng.normal(size=8).astype(f32), rng.uniform(1, 2, 8).astype(f32))),
        Step("rescale", (np.array(0.5, f32), np.array(0.1, f32))),
        Step("dense", (rng.normal(size=(8, 12)).astype(f32), rng.normal(size=12).astype(f32)),
             "relu"),
        Step("dense", (rng.normal(size=(12, 4)).astype(f32), rng.normal(size=4).astype(f32)),
             "tanh"),
        Step("dense", (rng.normal(size=(4, 1)).astype(f32), rng.normal(size=1).astype(f32)),
             "sigmoid"),
    ), "0" * 64)
    plan.save(tmp_path / "plan.npz")
    rows = rng.normal(scale=3, size=(50, 8)).astype(f32)
    np.testing.assert_allclose(dense.load(str(tmp_path / "plan.npz"))(rows), plan(rows.copy()),
                               rtol=1e-5, atol=1e-6)


def test_echo_answers_the_row_count_and_refuses_other_bodies():
    """The echo parses the body: one dummy score per row; a body without rows is a 400."""
    status, body = echo_app.answer(json.dumps({"rows": [[1] * 8, [2] * 8]}).encode())
    assert status == 200
    assert json.loads(body) == {"model": "echo", "rows": 2, "probabilities": [0.5, 0.5],
                                "labels": [1, 1]}
    assert echo_app.answer(b'{"inputs": []}')[0] == 400
    assert echo_app.answer(b"not json")[0] == 400


def test_wsgi_and_asgi_echoes_answer_alike():
    """Both echo apps give the same status and body for the benchmark's path and for others."""
    body = json.dumps({"rows": [[6, 148, 72, 35, 0, 33.6, 0.627, 50]]}).encode()
    for path, status in ((echo_app.PATH, 200), ("/elsewhere", 404)):
        wsgi = call_wsgi(path, body)
        assert wsgi[0] == status
        assert call_asgi(path, body) == wsgi


def call_wsgi(path: str, body: bytes) -> tuple[int, bytes]:
    """One request through echo_app.wsgi_app."""
    seen = []
    environ = {"PATH_INFO": path, "REQUEST_METHOD": "POST", "CONTENT_LENGTH": str(len(body)),
               "wsgi.input": io.BytesIO(body)}
    chunks = echo_app.wsgi_app(environ, lambda status, headers: seen.append(status))
    return int(seen[0].split()[0]), b"".join(chunks)


def call_asgi(path: str, body: bytes) -> tuple[int, bytes]:
    """One request through echo_app.asgi_app, the body in two chunks."""
    incoming = [{"type": "http.request", "body": body[:5], "more_body": True},
                {"type": "http.request", "body": body[5:], "more_body": False}]
    sent: list[dict] = []

    async def receive() -> dict:
        return incoming.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "path": path, "method": "POST"}
    # A thread of its own: an event loop left running in this one by another test (the suite
    # has several asyncio clients) would make asyncio.run refuse.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, echo_app.asgi_app(scope, receive, send)).result()
    return sent[0]["status"], sent[1]["body"]
