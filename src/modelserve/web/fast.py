"""The hot path: the prediction endpoints answered on the event loop, not in a Flask thread.

A waiting request here is a coroutine awaiting its batch's future on the predictor's loop.
It applies the Flask app's checks in the Flask app's order (rate limit, credentials, the
model, body size, parsing) with the same shared pieces (auth.policy, the token store,
Flask-Limiter's own counters, web/answering.py), and answers with the same bodies, status
codes, security headers and /metrics. What it does not take (a browser's session cookie,
another method or path) goes to the Flask app unchanged (web/asgi.py).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import limits
from flask import Flask

from modelserve.auth import policy
from modelserve.registry.catalog import UnknownModel
from modelserve.tls import HSTS
from modelserve.web import DRAIN_LIMIT_BYTES, SECURITY_HEADERS, answering, metrics
from modelserve.web.app_service import ROUTING_HEADER, NotServed, Service
from modelserve.web.auth import HOW_TO, SESSION_COOKIE, bearer_record, challenge, too_many_requests
from modelserve.web.parsing import BadRequest
from modelserve.web.predictors import DeadlineExceeded, Unavailable

log = logging.getLogger(__name__)
Scope_ = MutableMapping[str, Any]  # an ASGI scope (not an auth Scope)
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
# Flask-Limiter counts application-wide limits under this scope name.
LIMITER_SCOPE = "global"


@dataclass(frozen=True)
class Route:
    """A prediction endpoint: its path pattern and Flask's rule for it (the /metrics label)."""

    pattern: re.Pattern[str]
    rule: str
    protocol: str  # "v1" (our JSON API) or "v2" (the Open Inference Protocol)


def _route(rule: str, protocol: str) -> Route:
    """A Route matching a Flask rule's path, each <part> one path segment, as Werkzeug does."""
    pattern = re.sub(r"<(\w+)>", r"(?P<\1>[^/]+)", rule)
    return Route(re.compile(pattern), rule, protocol)


ROUTES = (
    _route("/api/v1/predict", "v1"),
    _route("/api/v1/models/<name>/predict", "v1"),
    _route("/v2/models/<name>/infer", "v2"),
    _route("/v2/models/<name>/versions/<version>/infer", "v2"),
)


@dataclass(frozen=True)
class Call:
    """What the hot path reads of an HTTP request."""

    route: Route
    params: dict[str, str]
    headers: dict[str, str]  # lower-case names; a repeated header's values joined by ", "
    peer: str | None
    secure: bool

    def header(self, name: str) -> str | None:
        """A request header by name, in any case."""
        return self.headers.get(name.lower())


def take(scope: Scope_) -> Call | None:
    """The Call for a request the hot path answers, or None for one Flask answers."""
    if scope["method"] != "POST":
        return None
    for route in ROUTES:
        found = route.pattern.fullmatch(scope["path"])
        if found:
            headers = _headers(scope["headers"])
            if SESSION_COOKIE in headers.get("cookie", ""):
                return None  # a browser's login session: Flask-Login reads it
            client = scope.get("client")
            return Call(route, found.groupdict(), headers, client[0] if client else None,
                        scope.get("scheme") == "https")
    return None


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """ASGI's raw headers by lower-case name (latin-1, as WSGI reads them)."""
    headers: dict[str, str] = {}
    for name, value in raw:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


class Refused(Exception):
    """A refusal before any work: status, one line, and headers to send with it."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


class Access:
    """The rate limit and the credential check, as web/auth.py applies them to Flask views."""

    def __init__(self, app: Flask):
        self._mode, self._store = app.extensions["modelserve_auth"]
        self._limiter = app.extensions["modelserve_limiter"]
        settings = app.extensions["modelserve"].settings
        text = policy.effective_rate_limit(settings.rate_limit,
                                           self._mode is policy.AuthMode.REQUIRED)
        self._limit = limits.parse(text) if text else None

    def check(self, call: Call) -> None:
        """Spend the caller's budget, then require a valid token if the mode wants one;
        Refused says why not."""
        record, problem = bearer_record(self._store, call.header("authorization"))
        self._spend(f"token:{record.id}" if record else f"address:{call.peer}",
                    "token" if record else "address")
        if not policy.required_for_request(self._mode, call.peer):
            return
        if record is None:
            raise Refused(401, problem or f"authentication required: {HOW_TO}",
                          {"WWW-Authenticate": challenge(bool(problem))})
        # Every scope allows predictions (auth.tokens.Scope.allows): no 403 here.

    def _spend(self, key: str, whose: str) -> None:
        """Count one request against the key's budget (Flask-Limiter's own counters)."""
        if self._limit is None:
            return
        strategy = self._limiter.limiter
        if strategy.hit(self._limit, key, LIMITER_SCOPE):
            return
        reset = strategy.get_window_stats(self._limit, key, LIMITER_SCOPE).reset_time
        wait = max(1, math.ceil(reset - time.time()))
        raise Refused(429, too_many_requests(self._limit, whose, wait),
                      {"Retry-After": str(wait)})


class HotPath:
    """Answer the prediction endpoints on the event loop."""

    def __init__(self, app: Flask):
        self._service: Service = app.extensions["modelserve"]
        self._settings = self._service.settings
        self._access = Access(app)
        self._retry_after = {"Retry-After": str(self._settings.retry_after_seconds)}
        self._timers: dict[tuple[str, int], Any] = {}  # /metrics children, made once each

    async def __call__(self, call: Call, receive: Receive, send: Send) -> None:
        """Answer one request and time it for /metrics."""
        started = time.perf_counter()
        status, answer, headers = await self._answer(call, receive)
        body = (json.dumps(answer, sort_keys=True, separators=(",", ":")) + "\n").encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": _response_headers(headers, len(body), call.secure)})
        await send({"type": "http.response.body", "body": body})
        self._timer(call.route.rule, status).observe(time.perf_counter() - started)

    def _timer(self, rule: str, status: int) -> Any:
        """The request-time histogram of an endpoint and status."""
        timer = self._timers.get((rule, status))
        if timer is None:
            timer = self._timers[rule, status] = metrics.REQUEST_SECONDS.labels(rule, str(status))
        return timer

    async def _answer(self, call: Call, receive: Receive) -> tuple[int, Any, dict[str, str]]:
        """Status, JSON answer and extra headers; every failure is one line, never a trace."""
        try:
            self._access.check(call)
            return 200, await self._predict(call, receive), {}
        except Refused as refusal:
            return refusal.status, {"error": str(refusal)}, refusal.headers
        except BadRequest as error:
            return error.status, {"error": str(error)}, {}
        except (UnknownModel, NotServed) as error:
            return 404, {"error": str(error)}, {}
        except Unavailable as error:
            return 503, {"error": str(error)}, self._retry_after
        except DeadlineExceeded as error:
            return 504, {"error": str(error)}, {}
        except Exception:
            log.exception("unexpected error on POST %s", call.route.rule)
            return 500, {"error": "internal error; the server log has the details"}, {}

    async def _predict(self, call: Call, receive: Receive) -> dict[str, Any]:
        """Read, score and answer, in the order the Flask views do."""
        name = call.params.get("name")
        if call.route.protocol == "v1":
            view = self._service.default() if name is None else self._service.served_model(name)
            body = await self._body(call, receive)
            rows = answering.v1_rows(view, body, call.header("content-type"))
            return answering.v1_answer(
                view, await view.predict_async(rows, call.header(ROUTING_HEADER)))
        name = call.params["name"]  # every v2 route names its model
        view, spec = answering.served_spec(self._service, name, call.params.get("version"))
        body = await self._body(call, receive)
        payload = answering.v2_payload(body, answering.transport(call.header),
                                       self._settings.max_body_bytes)
        request = answering.infer_call(view, spec, payload)
        prediction = await view.predict_async(request.rows, call.header(ROUTING_HEADER))
        return answering.infer_answer(name, view, request, prediction)

    async def _body(self, call: Call, receive: Receive) -> bytes:
        """The request body, refused with 413 once it is larger than allowed."""
        limit = self._settings.max_body_bytes
        declared = call.header("content-length")
        too_large = Refused(413, f"the body is larger than the {limit} bytes allowed")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            if int(declared) <= DRAIN_LIMIT_BYTES:
                await _drain(receive)  # the sender, still sending, then hears the 413
            raise too_large  # a bigger one is cut off unread
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("the client went away before the body was complete")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                if size <= DRAIN_LIMIT_BYTES:
                    await _drain(receive, DRAIN_LIMIT_BYTES - size)
                raise too_large
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


async def _drain(receive: Receive, budget: int = DRAIN_LIMIT_BYTES) -> None:
    """Read and drop the rest of a refused body, up to `budget` bytes."""
    more = True
    while more and budget > 0:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        budget -= len(message.get("body", b""))
        more = message.get("more_body", False)


def _response_headers(extra: dict[str, str], length: int, secure: bool) -> list[tuple[bytes,
                                                                                      bytes]]:
    """A JSON answer's headers: type, length, the security headers, HSTS over TLS."""
    headers = {"Content-Type": "application/json", "Content-Length": str(length),
               **SECURITY_HEADERS, **extra}
    if secure:
        headers["Strict-Transport-Security"] = HSTS
    return [(name.lower().encode(), value.encode("latin-1")) for name, value in headers.items()]
