"""The web front end: pages for people, a JSON API for programs, one Flask app factory."""

from __future__ import annotations

import logging
import sys
import time

from flask import Flask, Response, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from modelserve.config import Settings, load_settings
from modelserve.model.metrics import format_value
from modelserve.registry.catalog import UnknownModel
from modelserve.tls import HSTS
from modelserve.web import csrf, metrics
from modelserve.web.app_service import NotServed, Service
from modelserve.web.parsing import BadRequest
from modelserve.web.predictors import DeadlineExceeded, Unavailable

log = logging.getLogger(__name__)
GIL_SWITCH_SECONDS = 0.0005
API_PREFIXES = ("/api/", "/v2", "/metrics", "/openapi.json")
# A refused body up to this size is read and dropped, so that its sender, still sending,
# hears the 413 instead of a broken pipe; a bigger one is cut off unread.
DRAIN_LIMIT_BYTES = 64 << 20
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
}


def create_app(settings: Settings | None = None, inline: bool = False) -> Flask:
    """Build the app; `inline` scores in-process instead of through the broker."""
    settings = settings or load_settings()
    # Answers pass between threads (request, batcher, reply); at the default 5 ms GIL
    # switch interval each hand-over can wait that long behind a busy request thread.
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    app = Flask(__name__)
    # Werkzeug refuses anything bigger before reading it; API views lower it to max_body_bytes.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.extensions["modelserve"] = Service(settings, inline=inline)
    from modelserve.web import api, auth, ui

    app.register_blueprint(api.blueprint)
    app.register_blueprint(ui.blueprint)
    app.jinja_env.filters["metric"] = format_metric
    _install_hooks(app)
    secret = csrf.load_secret(settings.home)
    auth.install(app, settings, secret)  # before CSRF: a stranger hears 401, not a form error
    csrf.install(app, secret, exempt_prefixes=API_PREFIXES)
    _install_error_handlers(app)
    return app


def format_metric(value: object, digits: int = 4) -> str:
    """A metric for a page: the number, or a dash when it is undefined (e.g. one class only)."""
    return format_value(value, digits, undefined="–")


def service() -> Service:
    """The Service of the app handling this request."""
    from flask import current_app

    return current_app.extensions["modelserve"]


def wants_json() -> bool:
    """API paths answer errors in JSON; pages answer with an HTML page."""
    return request.path.startswith(API_PREFIXES)


def _install_hooks(app: Flask) -> None:
    """Time every request for /metrics and add security headers to every response."""

    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def finish(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.is_secure:  # served over TLS: browsers then refuse plain HTTP for a year
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        started = g.get("started")
        if started is not None:
            endpoint = request.url_rule.rule if request.url_rule else "unmatched"
            metrics.REQUEST_SECONDS.labels(endpoint, str(response.status_code)).observe(
                time.perf_counter() - started
            )
        return response


def error_response(status: int, message: str, headers: dict | None = None):
    """Answer an error as JSON (API) or as a page (people)."""
    if wants_json():
        response = jsonify(error=message)
    else:
        response = Response(render_template("error.html", status=status, message=message))
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _install_error_handlers(app: Flask) -> None:
    """Every failure becomes a clear 4xx/5xx with a message, never a traceback."""
    retry_after = {"Retry-After": str(app.extensions["modelserve"].settings.retry_after_seconds)}

    @app.errorhandler(BadRequest)
    def bad_request(error: BadRequest):
        return error_response(error.status, str(error))

    @app.errorhandler(UnknownModel)
    @app.errorhandler(NotServed)
    def not_served(error: UnknownModel | NotServed):
        return error_response(404, str(error))

    @app.errorhandler(csrf.CrossSiteRequest)
    def cross_site(error: csrf.CrossSiteRequest):
        return error_response(403, str(error))

    @app.errorhandler(Unavailable)
    def unavailable(error: Unavailable):
        return error_response(503, str(error), retry_after)

    @app.errorhandler(DeadlineExceeded)
    def deadline(error: DeadlineExceeded):
        return error_response(504, str(error))

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error: RequestEntityTooLarge):
        limit = request.max_content_length
        _drain_refused_body()
        return error_response(413, f"the body is larger than the {limit} bytes allowed")

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        # Keep headers such as Allow on a 405; the body is ours.
        headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
        return error_response(error.code or 500, error.description or error.name, headers)

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "internal error; the server log has the details")


def _drain_refused_body() -> None:
    """Read and drop the body of a refused request, if it is not absurdly large."""
    remaining = request.content_length or 0
    stream = request.environ.get("wsgi.input")
    if stream is None or remaining > DRAIN_LIMIT_BYTES:
        return
    while remaining > 0:
        chunk = stream.read(min(remaining, 1 << 16))
        if not chunk:
            return
        remaining -= len(chunk)
