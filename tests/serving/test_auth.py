"""A stack that requires authentication: tokens, scopes, rate limits, login, uploads.

One real stack (RabbitMQ, a Celery worker, gunicorn with two web processes) in
MODELSERVE_AUTH=required mode, driven over HTTP and through headless Chromium.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.parse import urlencode

import pytest
from cli_helpers import run_cli
from playwright.sync_api import Browser, BrowserContext

from modelserve.auth.tokens import utcnow
from modelserve.fsutil import atomic_write_text
from serving.auth_helpers import bearer, create_token
from serving.conftest import prepare_home
from serving.stack_helpers import ROW, Response, RunningStack, http, running_stack
from serving.test_pages import upload

pytestmark = pytest.mark.slow  # a serving stack of its own, and Chromium

RATE = 60  # per minute, per token or address, per web process
WEB_PROCESSES = 2
UPLOAD_ROWS = 50
QUOTA = 2000  # bytes of results
TOKEN_FIELD = re.compile(r'name="csrf-token" value="([0-9a-f]{64})"')
STACK_ENV = {"MODELSERVE_AUTH": "required", "MODELSERVE_RATE_LIMIT": f"{RATE}/minute",
             "MODELSERVE_MAX_UPLOAD_ROWS": str(UPLOAD_ROWS),
             "MODELSERVE_RESULTS_QUOTA_BYTES": str(QUOTA)}
PREDICT_BODY = json.dumps({"rows": [ROW]}).encode()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared_data: Path, pima_csv: Path):
    """A stack on loopback with authentication required (as it is off loopback)."""
    home = tmp_path_factory.mktemp("auth") / "home"
    prepare_home(home, shared_data, pima_csv, active="production")
    with running_stack(home, "--web-processes", str(WEB_PROCESSES), workers=1,
                       env=STACK_ENV) as running:
        yield running


def make_token(stack: RunningStack, scope: str = "predict", *extra: str) -> tuple[str, str]:
    """A new token made with the real command line: (name, token)."""
    return create_token(stack.home, scope, *extra)


def predict(stack: RunningStack, headers: dict[str, str] | None = None) -> Response:
    """One /api/v1/predict call."""
    return http("POST", f"{stack.url}/api/v1/predict", PREDICT_BODY, "application/json",
                headers=headers)


def assert_401(answer: Response, invalid_token: bool = False) -> None:
    """A 401 in one line saying how to authenticate, with a Bearer challenge."""
    assert answer.status == 401, (answer.status, answer.body[:200])
    message = answer.json()["error"]
    assert "\n" not in message and "Authorization: Bearer TOKEN" in message, message
    challenge = answer.headers.get("WWW-Authenticate", "")
    assert challenge.startswith("Bearer "), answer.headers
    assert ('error="invalid_token"' in challenge) is invalid_token, challenge


# ---- the API ---------------------------------------------------------------------------------


def test_no_token_wrong_token_and_malformed_headers_get_401(stack, reliability):
    """Without a valid token nothing but the probes answers; the token answers."""
    attempts = {
        "no header": ({}, False),
        "unknown token": (bearer("mst_" + secrets.token_urlsafe(32)), True),
        "not a token": (bearer("letmein"), True),
        "basic auth": ({"Authorization": "Basic YWRtaW46YWRtaW4="}, False),
    }
    for kind, (headers, invalid) in attempts.items():
        answer = predict(stack, headers)
        assert b"probabilities" not in answer.body, kind
        assert_401(answer, invalid)
    for path in ("/v2", "/v2/models/diabetes", "/openapi.json", "/api/v1/no-such-path"):
        assert_401(http("GET", f"{stack.url}{path}"))
    page = http("GET", f"{stack.url}/no-such-page")  # a page: sent to the login form
    assert page.status == 200 and b'id="login-form"' in page.body
    _, token = make_token(stack)
    answer = predict(stack, bearer(token))
    assert answer.status == 200 and len(answer.json()["probabilities"]) == 1
    reliability.record("Security", "API without a valid token (auth required)",
                       refused=len(attempts) + 4, answered_without_token=0,
                       note="no header, unknown, malformed, Basic; 4 other paths: 401 + Bearer")


def test_a_token_revoked_while_serving_is_refused_at_once(stack, reliability):
    """Revoke with the CLI while the web runs: every web process refuses the next request."""
    name, token = make_token(stack)
    assert [predict(stack, bearer(token)).status for _ in range(4)] == [200] * 4
    revoked = run_cli("tokens", "revoke", name, home=stack.home)
    assert revoked.returncode == 0, revoked.stderr
    started = time.monotonic()
    after = [predict(stack, bearer(token)) for _ in range(10)]  # both processes, surely
    for answer in after:
        assert_401(answer, invalid_token=True)
    reliability.record("Security", "token revoked while the stack serves", requests_after=10,
                       accepted_after_revoke=0, web_processes=WEB_PROCESSES,
                       seconds_for_10=f"{time.monotonic() - started:.2f} s",
                       note="each web process re-reads auth/tokens.json when it changes")


def test_an_expired_token_is_refused(stack, reliability):
    """A token past its expiry (the store's expiry set to a second ago) gets 401."""
    name, token = make_token(stack, "predict", "--expires-days", "1")
    assert predict(stack, bearer(token)).status == 200
    store = stack.home / "auth" / "tokens.json"
    document = json.loads(store.read_text())
    for item in document["tokens"]:
        if item["name"] == name:
            item["expires"] = (utcnow() - timedelta(seconds=1)).isoformat()
    atomic_write_text(store, json.dumps(document))
    assert_401(predict(stack, bearer(token)), invalid_token=True)
    listing = run_cli("tokens", "list", home=stack.home).stdout
    assert re.search(rf"^{name}\s.*expired$", listing, re.MULTILINE), listing
    reliability.record("Security", "expired token", refused=1, note="expiry checked per request")


def test_metrics_and_models_need_operate(stack, reliability):
    """A predict token gets 403 naming the scope on /metrics and /models; operate gets 200."""
    _, reader = make_token(stack, "predict")
    _, operator = make_token(stack, "operate")
    for path in ("/metrics", "/models"):
        refused = http("GET", f"{stack.url}{path}", headers=bearer(reader))
        assert refused.status == 403, (path, refused.status)
        assert b"needs a token with scope operate" in refused.body, refused.body[:200]
        assert http("GET", f"{stack.url}{path}", headers=bearer(operator)).status == 200
    metrics = http("GET", f"{stack.url}/metrics", headers=bearer(operator)).body
    assert b"modelserve_rows_scored" in metrics
    assert predict(stack, bearer(operator)).status == 200  # operate includes predict
    reliability.record("Security", "scopes", forbidden=2, allowed=3,
                       note="/metrics and /models: predict 403, operate 200")


def test_health_endpoints_are_open_and_say_nothing_of_paths(stack, reliability):
    """Liveness and readiness answer without credentials, with no server path."""
    live = http("GET", f"{stack.url}/v2/health/live")
    ready = http("GET", f"{stack.url}/v2/health/ready")
    assert live.status == 200 and ready.status == 200 and ready.json()["ready"] is True
    for answer in (live, ready):
        text = answer.body.decode()
        assert str(stack.home) not in text and '"/' not in text and " /" not in text, text
    reliability.record("Security", "health endpoints without credentials", open=2,
                       paths_shown=0, note="readiness problem texts lose every absolute path")


def test_rate_limit_per_token_answers_429_with_retry_after(stack, reliability):
    """Past the limit a token gets 429 + Retry-After in our JSON; another token is unaffected."""
    _, token = make_token(stack)
    sent = RATE * WEB_PROCESSES + 30  # bounded: more than every process allows in a minute
    answers = [http("GET", f"{stack.url}/v2", headers=bearer(token)) for _ in range(sent)]
    ok = [a for a in answers if a.status == 200]
    limited = [a for a in answers if a.status == 429]
    assert len(ok) + len(limited) == sent, {a.status for a in answers}
    assert RATE <= len(ok) <= RATE * WEB_PROCESSES, len(ok)
    for answer in limited:
        retry = int(answer.headers["Retry-After"])
        assert 1 <= retry <= 61 and "too many requests" in answer.json()["error"]
        assert "for this token" in answer.json()["error"]
    _, other = make_token(stack)
    assert http("GET", f"{stack.url}/v2", headers=bearer(other)).status == 200
    reliability.record("Security", "rate limit per token", sent=sent, answered=len(ok),
                       refused_429=len(limited), limit=f"{RATE}/minute per web process",
                       retry_after_s=limited[0].headers["Retry-After"],
                       note=f"{WEB_PROCESSES} web processes, in-memory counters each")


# ---- pages in a real browser -----------------------------------------------------------------


@pytest.fixture
def contexts(browser: Browser, stack):
    """New browser contexts (independent sessions), closed after the test."""
    made: list[BrowserContext] = []

    def new() -> BrowserContext:
        context = browser.new_context(base_url=stack.url, accept_downloads=True)
        context.set_default_timeout(20_000)
        made.append(context)
        return context

    yield new
    for context in made:
        context.close()


def log_in(context: BrowserContext, token: str, start: str = "/"):
    """Open a page, get sent to the login form, log in; return the page."""
    page = context.new_page()
    page.goto(start)
    assert "/login" in page.url, page.url
    page.fill("#login-form input[name=token]", token)
    with page.expect_navigation():
        page.click("#login-form button[type=submit]")
    return page


def test_pages_need_a_login_with_a_token(stack, contexts, reliability):
    """A stranger lands on /login; a wrong token is refused; the right one opens the pages."""
    name, token = make_token(stack)
    context = contexts()
    page = context.new_page()
    page.goto("/predictions")
    assert page.url.endswith("/login?next=/predictions"), page.url
    page.fill("#login-form input[name=token]", "mst_" + secrets.token_urlsafe(32))
    with page.expect_response(lambda r: r.request.method == "POST") as refused:
        page.click("#login-form button[type=submit]")
    assert refused.value.status == 401 and "not valid" in page.inner_text("#problem")
    page.fill("#login-form input[name=token]", token)
    with page.expect_navigation():
        page.click("#login-form button[type=submit]")
    assert page.url == f"{stack.url}/predictions" and name in page.inner_text("#signed-in")
    cookie = next(c for c in context.cookies() if c["name"] == "modelserve_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and not cookie["secure"]
    assert token not in cookie["value"]
    page.goto("/")
    assert page.locator("#predict-form").count() == 1
    with page.expect_navigation():
        page.click("#logout-form button[type=submit]")
    assert "/login" in page.url
    page.goto("/")
    assert "/login" in page.url  # logged out for real
    reliability.record("Security", "page login (Chromium)", wrong_token_status=401, logged_in=1,
                       note="session cookie HttpOnly, SameSite=Lax, Secure over HTTPS; logout")


def test_a_login_form_post_without_csrf_token_is_refused(stack):
    """The login form is a form like the others: a post without its CSRF token is 403."""
    _, token = make_token(stack)
    answer = http("POST", f"{stack.url}/login", urlencode({"token": token}).encode(),
                  "application/x-www-form-urlencoded")
    assert answer.status == 403 and b"Set-Cookie" not in answer.body
    assert "modelserve_session" not in answer.headers.get("Set-Cookie", "")


def test_revoking_a_token_logs_its_sessions_out(stack, contexts):
    """A browser logged in with a token is sent back to /login once it is revoked."""
    name, token = make_token(stack)
    page = log_in(contexts(), token)
    assert page.locator("#predict-form").count() == 1
    assert run_cli("tokens", "revoke", name, home=stack.home).returncode == 0
    page.goto("/accuracy")
    assert "/login" in page.url


def _csv(tmp_path: Path, rows: int, name: str = "rows.csv") -> Path:
    """A headerless CSV of `rows` copies of the dataset's first patient."""
    path = tmp_path / name
    path.write_text((",".join(map(str, ROW)) + "\n") * rows)
    return path


def test_result_links_belong_to_their_session_and_expire(stack, contexts, tmp_path, reliability):
    """Another session, even logged in with the same token, gets 404; an old result is gone."""
    _, token = make_token(stack)
    _, other_token = make_token(stack)
    owner = log_in(contexts(), token)
    assert upload(owner, _csv(tmp_path, 3)).status == 201
    link = owner.get_attribute("#download", "href")
    assert owner.context.request.get(link).status == 200
    strangers = {"other token": log_in(contexts(), other_token),
                 "same token, other browser": log_in(contexts(), token)}
    for kind, page in strangers.items():
        answer = page.context.request.get(link)
        assert answer.status == 404, kind
        assert "probability" not in answer.text(), kind
    anonymous = http("GET", f"{stack.url}{link}")  # no session at all: the login form
    assert b'id="login-form"' in anonymous.body and b"probability" not in anonymous.body
    result_id = link.rsplit("/", 1)[1].removesuffix(".csv")
    (stored,) = (stack.home / "results").glob(f"*/{result_id}.csv")
    old = time.time() - 3601
    os.utime(stored, (old, old))
    expired = owner.context.request.get(link)
    assert expired.status == 404 and not stored.exists()
    reliability.record("Security", "result links", other_sessions=len(strangers),
                       fetched_by_others=0, anonymous="login form", expired_answer=404,
                       note="owner id in the session; age checked at download, file deleted")


# ---- uploads ---------------------------------------------------------------------------------


@dataclass
class FormClient:
    """A cookie-keeping HTTP client logged in through the login form (a browser's requests)."""

    stack: RunningStack
    opener: urllib.request.OpenerDirector

    @classmethod
    def logged_in(cls, stack: RunningStack, token: str) -> FormClient:
        """Log in through /login with the form's CSRF token."""
        client = cls(stack, urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(CookieJar())))
        answer = client.post("/login", urlencode({"csrf-token": client.form_token("/login"),
                                                   "token": token}).encode(),
                             "application/x-www-form-urlencoded")
        assert answer.status == 200 and b"predict-form" in answer.body, answer.status
        return client

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str | None = None, timeout: float = 60) -> Response:
        """One request with this client's cookies."""
        request = urllib.request.Request(f"{self.stack.url}{path}", data=body,  # noqa: S310
                                         method=method)
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with self.opener.open(request, timeout=timeout) as answer:
                return Response(answer.status, answer.headers, answer.read())
        except urllib.error.HTTPError as error:
            return Response(error.code, error.headers, error.read())

    def post(self, path: str, body: bytes, content_type: str) -> Response:
        """POST a body."""
        return self.request("POST", path, body, content_type)

    def form_token(self, path: str) -> str:
        """The CSRF token of the form on a page."""
        return TOKEN_FIELD.search(self.request("GET", path).body.decode()).group(1)

    def upload(self, content: bytes) -> Response:
        """Send the upload form with a CSV body."""
        boundary = secrets.token_hex(8)
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf-token\"\r\n\r\n"
                f"{self.form_token('/predictions')}\r\n--{boundary}\r\nContent-Disposition: "
                "form-data; name=\"file\"; filename=\"rows.csv\"\r\nContent-Type: text/csv"
                "\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
        return self.post("/predictions/upload", body, f"multipart/form-data; boundary={boundary}")


def _results(stack: RunningStack) -> list[Path]:
    return list((stack.home / "results").glob("[0-9a-f]*/*.csv"))


def test_uploads_obey_the_row_limit_as_a_whole(stack, reliability):
    """Past MODELSERVE_MAX_UPLOAD_ROWS: 413 in one line before anything is scored."""
    _, token = make_token(stack)
    client = FormClient.logged_in(stack, token)
    line = (",".join(map(str, ROW)) + "\n").encode()
    before = _results(stack)
    just_over = client.upload(line * (UPLOAD_ROWS + 1))
    assert just_over.status == 413, just_over.body[:300]
    assert f"{UPLOAD_ROWS + 1} rows; an upload may have at most {UPLOAD_ROWS}".encode() \
        in just_over.body
    rows = 16_000_000 // len(line)  # as big as an upload may be: over half a million rows
    started = time.monotonic()
    huge = client.upload(line * rows)
    refused_in = time.monotonic() - started
    assert huge.status == 413 and f"{rows} rows".encode() in huge.body
    assert _results(stack) == before  # nothing scored, nothing kept
    assert client.upload(line * UPLOAD_ROWS).status == 201
    reliability.record("Security", "upload row limit", rows_sent=rows, limit=UPLOAD_ROWS,
                       refused_in=f"{refused_in:.2f} s", results_written=0,
                       note="rows counted before scoring; 413 in one line")


def test_the_results_quota_answers_507_when_full(stack, reliability):
    """Uploads fill the results quota, then get 507 in one line; expired results free it."""
    _, token = make_token(stack)
    client = FormClient.logged_in(stack, token)
    line = (",".join(map(str, ROW)) + "\n").encode()
    accepted, full = 0, None
    for _ in range(12):  # each result is ~600 bytes: the 2000-byte quota fills within 4
        answer = client.upload(line * 20)
        if answer.status == 507:
            full = answer
            break
        assert answer.status == 201, answer.body[:200]
        accepted += 1
    assert full is not None, "the quota never filled"
    assert b"results storage is full" in full.body and b"\n" not in full.body.split(
        b'id="problem">')[1].split(b"</p>")[0]
    used = sum(path.stat().st_size for path in _results(stack))
    assert used <= QUOTA, used
    old = time.time() - 3601
    for path in _results(stack):
        os.utime(path, (old, old))
    assert client.upload(line * 20).status == 201  # the upload swept the expired results
    reliability.record("Security", "results disk quota", quota_bytes=QUOTA, used_bytes=used,
                       accepted_before_full=accepted, answer=507,
                       note="checked before and after scoring; expired results are deleted")


def test_anonymous_requests_and_logins_are_limited_per_address(stack, reliability):
    """Last here (it spends this address's budget): failed logins and 401s end in 429."""
    client = FormClient(stack, urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(CookieJar())))
    token_field = client.form_token("/login")
    logins = []
    for _ in range(10 * WEB_PROCESSES + 5):  # 10/minute per address and web process
        body = urlencode({"csrf-token": token_field, "token": "mst_" + "A" * 43}).encode()
        logins.append(client.post("/login", body, "application/x-www-form-urlencoded").status)
    assert set(logins) == {401, 429} and logins[0] == 401, logins
    statuses = [predict(stack).status for _ in range(RATE * WEB_PROCESSES + 10)]
    assert set(statuses) <= {401, 429} and 429 in statuses
    assert http("GET", f"{stack.url}/v2/health/ready").status == 200  # probes stay free
    reliability.record("Security", "per-address limits for strangers",
                       failed_logins=len(logins), login_429=logins.count(429),
                       anonymous_requests=len(statuses), anonymous_429=statuses.count(429),
                       note="login 10/minute, anonymous requests share the address budget")


def test_the_delivery_hook_confirms_a_model_with_the_local_token(stack, monkeypatch,
                                                                   reliability):
    """The post-receive confirmation (as the hook runs it) is answered on an auth stack."""
    from modelserve.delivery.activate import wait_until_served
    from modelserve.delivery.config import DeliveryConfig
    from modelserve.registry import Registry

    monkeypatch.setenv("MODELSERVE_HOME", str(stack.home))  # as the hook's shim sets it
    registry = Registry(stack.home / "registry")
    spec = registry.get(registry.active_version()).spec
    started = time.monotonic()
    assert wait_until_served(DeliveryConfig(web_url=stack.url), spec, 10)
    confirmed_in = time.monotonic() - started
    local = stack.home / "auth" / "local-token"
    assert oct(local.stat().st_mode & 0o777) == "0o600"
    listing = run_cli("tokens", "list", home=stack.home).stdout
    assert re.search(r"^local-serving-account\s+predict\s", listing, re.MULTILINE), listing
    assert local.read_text().strip() not in listing
    reliability.record("Security", "delivery hook on an auth stack", confirmed=1,
                       seconds=f"{confirmed_in:.2f} s",
                       note="auth/local-token (0600, scope predict), made on first use")
