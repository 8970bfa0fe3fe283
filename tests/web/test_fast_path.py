"""The hot path (web/fast.py) answers exactly as the Flask views do, in this process.

The served ASGI app (web/asgi.py) is driven over ASGI itself, scoring in-process over the
production seed model; every answer is compared with the Flask app's for the same request:
status, JSON body, security headers. The same app through gunicorn, uvicorn and the broker:
tests/serving.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from modelserve.auth.store import TokenStore
from modelserve.config import Settings, load_settings
from modelserve.model.check import check_bundle
from modelserve.model.dataset import FEATURES, import_dataset
from modelserve.predlog import ids
from modelserve.registry import Registry
from modelserve.web import SECURITY_HEADERS, asgi, create_app, fast
from modelserve.web.asgi import Front

ROW = [6, 148, 72, 35, 0, 33.6, 0.627, 50]
JSON = {"content-type": "application/json"}
V2_ROW = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 8], "data": ROW}]}


def check_here(staged: Path) -> None:
    """The sandbox's check and plan, run in this process (the seed model is our test data)."""
    check_bundle(staged, plan_out=staged / "plan.npz")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, legacy_bundle: Path,
             pima_csv: Path) -> Settings:
    """A home with the Pima data stored and the production seed model active."""
    settings = load_settings({"MODELSERVE_HOME": str(tmp_path_factory.mktemp("fast") / "home"),
                              "MODELSERVE_MAX_BODY_BYTES": "4096"})
    import_dataset(pima_csv, settings.data_dir)
    registry = Registry(settings.registry_dir, checker=check_here)
    registry.activate(registry.add(legacy_bundle, source="test").version, source="test")
    return settings


class Served:
    """The served ASGI app and, beside it, the Flask app alone, over one home."""

    def __init__(self, settings: Settings):
        self.front = Front(create_app(settings, inline=True), threads=4)
        self.flask = create_app(settings, inline=True).test_client()
        # A loop in a thread of its own: an earlier test of the session may have left one
        # marked running in this thread (asyncio then refuses to run another here).
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine):
        """Run a coroutine on the apps' loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

    def hot(self, path: str, body: bytes, headers: dict[str, str],
            peer: str = "127.0.0.1") -> tuple[int, dict[str, str], object]:
        """One POST through the ASGI app: status, headers, JSON body."""
        return self.run(asgi_post(self.front, path, body, headers, peer))

    def flask_post(self, path: str, body: bytes, headers: dict[str, str],
                   peer: str = "127.0.0.1") -> tuple[int, dict[str, str], object]:
        """The same POST to the Flask app alone."""
        answer = self.flask.post(path, data=body, headers=headers,
                                 environ_base={"REMOTE_ADDR": peer})
        return answer.status_code, {k.lower(): v for k, v in answer.headers}, answer.get_json()

    def close(self) -> None:
        """Stop both apps' predictors and the loop."""
        self.run(self.front.flask.extensions["modelserve"].aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
        self.flask.application.extensions["modelserve"].close()


async def asgi_post(app, path: str, body: bytes, headers: dict[str, str],
                    peer: str) -> tuple[int, dict[str, str], object]:
    """Drive one HTTP request through an ASGI app, the body in two chunks."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "client": (peer, 40000),
             "server": ("127.0.0.1", 5100),
             "headers": [(k.lower().encode(), v.encode()) for k, v in
                         {"host": "127.0.0.1:5100", "content-length": str(len(body)),
                          **headers}.items()]}
    half = len(body) // 2
    incoming = [{"type": "http.request", "body": body[:half], "more_body": True},
                {"type": "http.request", "body": body[half:], "more_body": False}]
    sent: list[dict] = []

    async def receive() -> dict:
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)  # a real server waits for the client's disconnect
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 30)
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    answer_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], answer_headers, json.loads(content)


@pytest.fixture(scope="module")
def served(settings: Settings):
    """The apps over the seed model's home."""
    apps = Served(settings)
    yield apps
    apps.close()


# (path, body, extra headers): good and bad requests of every hot route.
CASES = [
    ("/api/v1/predict", {"rows": [ROW, ROW]}, JSON),
    ("/api/v1/predict", {"rows": [dict(zip(FEATURES, ROW, strict=True))]}, JSON),
    ("/api/v1/predict", {"rows": [{"Glucose": 1}]}, JSON),
    ("/api/v1/models/diabetes/predict", {"rows": [ROW]}, JSON),
    ("/api/v1/models/nosuch/predict", {"rows": [ROW]}, JSON),
    ("/api/v1/predict", {"rows": [ROW[:3]]}, JSON),
    ("/api/v1/predict", {"rows": []}, JSON),
    ("/api/v1/predict", {"rows": [ROW], "extra": 1}, JSON),
    ("/api/v1/predict", b"{not json", JSON),
    ("/api/v1/predict", b"NaN", JSON),
    ("/api/v1/predict", {"rows": [ROW]}, {"content-type": "text/plain"}),
    ("/api/v1/predict", b"", JSON),
    ("/api/v1/predict", {"rows": [ROW] * 200}, JSON),  # larger than the 4096 bytes allowed
    ("/api/v1/predict", {"rows": [[1e39] * 8]}, JSON),
    ("/v2/models/diabetes/infer", V2_ROW, JSON),
    ("/v2/models/diabetes/infer", {**V2_ROW, "id": "r1",
                                   "outputs": [{"name": "probability"}]}, JSON),
    ("/v2/models/diabetes/versions/000000000000/infer", V2_ROW, JSON),
    ("/v2/models/nosuch/infer", V2_ROW, JSON),
    ("/v2/models/diabetes/infer", {"inputs": []}, JSON),
    ("/v2/models/diabetes/infer", V2_ROW, {"content-type": "application/octet-stream"}),
    ("/v2/models/diabetes/infer", V2_ROW, {**JSON, "inference-header-content-length": "10"}),
    ("/v2/models/diabetes/infer", V2_ROW, {**JSON, "content-encoding": "gzip"}),
    ("/v2/models/diabetes/infer", V2_ROW, {**JSON, "origin": "https://elsewhere.example"}),
]


def without_ids(answer: object) -> object:
    """An answer with its prediction id (a fresh one each time) checked and taken out."""
    if not isinstance(answer, dict):
        return answer
    answer = dict(answer)
    parameters = answer.pop("parameters", {})
    found = answer.pop("prediction_id", None) or parameters.get("prediction_id")
    if "error" not in answer:
        assert ids.is_id(found), answer
    return answer


def encoded(body: object) -> bytes:
    """A case's body on the wire."""
    return body if isinstance(body, bytes) else json.dumps(body).encode()


@pytest.mark.parametrize(("path", "body", "headers"), CASES,
                         ids=[f"{i}-{case[0]}" for i, case in enumerate(CASES)])
def test_the_hot_path_answers_as_flask_does(served, path, body, headers):
    """Same status, same JSON (answers and one-line refusals), the security headers."""
    data = encoded(body)
    hot = served.hot(path, data, headers)
    flask = served.flask_post(path, data, headers)
    assert hot[0] == flask[0], (hot, flask)
    assert without_ids(hot[2]) == without_ids(flask[2])
    for name, value in SECURITY_HEADERS.items():
        assert hot[1][name.lower()] == value
    assert hot[1]["content-type"] == "application/json"
    if hot[0] == 503:
        assert hot[1]["retry-after"] == flask[1]["retry-after"]


def test_only_the_prediction_posts_take_the_hot_path():
    """Other methods, paths and a browser's session cookie go to Flask."""
    def scope(method: str, path: str, cookie: str = "") -> dict:
        headers = [(b"cookie", cookie.encode())] if cookie else []
        return {"method": method, "path": path, "headers": headers, "client": ("::1", 1)}

    assert fast.take(scope("POST", "/api/v1/predict")) is not None
    found = fast.take(scope("POST", "/v2/models/m/versions/v1/infer"))
    assert found is not None and found.params == {"name": "m", "version": "v1"}
    assert fast.take(scope("GET", "/api/v1/predict")) is None
    assert fast.take(scope("POST", "/api/v1/predict/")) is None
    assert fast.take(scope("POST", "/api/v1/models/a/b/predict")) is None
    assert fast.take(scope("POST", "/predictions")) is None
    assert fast.take(scope("POST", "/api/v1/predict", "modelserve_session=x")) is None
    assert fast.take(scope("POST", "/api/v1/predict", "csrf=abc")) is not None


@pytest.fixture
def guarded(settings: Settings, tmp_path: Path):
    """The apps with authentication required and a 3 per minute budget, and three tokens."""
    home = tmp_path / "home"
    home.mkdir()
    for part in ("registry", "data"):
        (home / part).symlink_to(settings.home / part)
    strict = dataclasses.replace(settings, home=home, auth="required", rate_limit="3/minute")
    store = TokenStore(home)
    tokens = {scope: store.create(f"t-{scope}", scope)[0] for scope in ("predict", "operate")}
    apps = Served(strict)
    yield apps, tokens
    apps.close()


def test_credentials_are_checked_as_flask_checks_them(guarded):
    """No token, an unknown one: 401 with the challenge; a valid predict token: 200."""
    apps, tokens = guarded
    body = encoded({"rows": [ROW]})
    for extra, status in (({}, 401), ({"authorization": "Bearer nope"}, 401),
                          ({"authorization": f"Bearer {tokens['predict']}"}, 200)):
        hot = apps.hot("/api/v1/predict", body, {**JSON, **extra}, peer="10.0.0.9")
        flask = apps.flask_post("/api/v1/predict", body, {**JSON, **extra}, peer="10.0.0.9")
        assert hot[0] == flask[0] == status, (hot, flask)
        assert without_ids(hot[2]) == without_ids(flask[2])
        assert hot[1].get("www-authenticate") == flask[1].get("www-authenticate")


def test_the_rate_limit_is_one_budget_across_both_paths(guarded):
    """Flask-Limiter's counters: requests through Flask and the hot path share the budget."""
    apps, tokens = guarded
    body = encoded({"rows": [ROW]})
    auth = {**JSON, "authorization": f"Bearer {tokens['predict']}"}
    front = apps.front
    flask_side = front.flask.test_client()
    assert flask_side.get("/openapi.json", headers=auth,
                          environ_base={"REMOTE_ADDR": "10.0.0.9"}).status_code == 200
    assert [apps.hot("/api/v1/predict", body, auth, peer="10.0.0.9")[0]
            for _ in range(2)] == [200, 200]
    status, headers, answer = apps.hot("/api/v1/predict", body, auth, peer="10.0.0.9")
    assert status == 429 and int(headers["retry-after"]) >= 1
    assert answer["error"].startswith("too many requests: at most 3 per 1 minute for this token")
    # Another caller has a budget of its own.
    assert apps.hot("/api/v1/predict", body, {**JSON, "authorization":
                                              f"Bearer {tokens['operate']}"},
                    peer="10.0.0.9")[0] == 200


def test_a_starting_process_waits_boundedly_for_its_broker_before_taking_requests(
        tmp_path, monkeypatch, caplog):
    """The lifespan's start-up (before the first accept) waits for the broker connection; with
    no broker there it completes after the bound, saying so, and the process serves 503s."""
    monkeypatch.setattr(asgi, "STARTUP_CONNECT_SECONDS", 0.5)
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    settings = load_settings({"MODELSERVE_HOME": str(tmp_path / "home"),
                              "MODELSERVE_BROKER_URL": f"amqp://u:p@127.0.0.1:{free_port}//"})
    front = Front(create_app(settings), threads=2)
    sent: list[dict] = []

    async def run() -> float:
        messages = asyncio.Queue()
        await messages.put({"type": "lifespan.startup"})

        async def send(message: dict) -> None:
            sent.append(message)
            if message["type"] == "lifespan.startup.complete":
                await messages.put({"type": "lifespan.shutdown"})

        began = time.monotonic()
        await front({"type": "lifespan"}, messages.get, send)
        return time.monotonic() - began

    # A thread of its own: an event loop another test left running in this one (the suite has
    # several asyncio clients) would make asyncio.run refuse.
    with ThreadPoolExecutor(1) as pool:
        took = pool.submit(asyncio.run, run()).result()
    assert [m["type"] for m in sent] == ["lifespan.startup.complete",
                                         "lifespan.shutdown.complete"]
    assert 0.5 <= took < 5
    assert "no broker connection within" in caplog.text
