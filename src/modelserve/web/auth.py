"""Who may use the web app: API tokens (Bearer), a login for the pages, rate limits.

Flask-Login keeps the page sessions (a signed cookie naming the token's random id, checked
against the token store on every request, so a revoked or expired token logs its sessions
out); Flask-Limiter counts requests per token, or per client address for anonymous requests
and logins, in each web process's memory. The policy (modes, scopes) is modelserve.auth's.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Request,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from flask_limiter import Limiter, RateLimitExceeded
from flask_login import LoginManager, current_user, login_user, logout_user

from modelserve.auth import policy
from modelserve.auth.policy import AuthMode
from modelserve.auth.store import StoreError, TokenStore
from modelserve.auth.tokens import Scope, TokenRecord
from modelserve.config import Settings
from modelserve.web import error_response, wants_json

log = logging.getLogger(__name__)
blueprint = Blueprint("auth", __name__)
SESSION_COOKIE = "modelserve_session"
HOW_TO = ("send the header `Authorization: Bearer TOKEN` (`modelserve tokens create` makes "
          "one), or log in at /login")


class Unauthenticated(Exception):
    """No credential, or one that is not valid: a 401."""


class MissingScope(Exception):
    """A valid token without the scope the endpoint needs: a 403."""


@dataclass(frozen=True)
class TokenUser:
    """The identity of a request: the token it authenticated with."""

    record: TokenRecord
    is_authenticated: bool = True
    is_active: bool = True
    is_anonymous: bool = False

    @property
    def name(self) -> str:
        """The token's name."""
        return self.record.name

    @property
    def scope(self) -> Scope:
        """The token's scope."""
        return self.record.scope

    def get_id(self) -> str:
        """What the login session remembers: the token's random id, never the token."""
        return self.record.id


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the Secure flag whenever the request is HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        """Secure over HTTPS, so the cookie never travels in clear; plain HTTP still works."""
        return request.is_secure


def install(app: Flask, settings: Settings, secret: bytes) -> None:
    """Add login sessions, the token check on every request and the rate limits."""
    mode = policy.parse_mode(settings.auth)
    store = TokenStore(settings.home)
    app.extensions["modelserve_auth"] = (mode, store)
    # A key of its own for session cookies, derived from the web secret CSRF uses as well.
    app.secret_key = hmac.new(secret, b"modelserve session cookie", hashlib.sha256).digest()
    app.session_interface = _SessionInterface()
    app.config.update(SESSION_COOKIE_NAME=SESSION_COOKIE, SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Lax")
    _install_login(app, store)
    limiter = _install_limits(app, settings, mode)
    app.register_blueprint(blueprint)
    # Guesses at the form are counted per address, whatever they guess (the view is wrapped
    # here, where the limiter exists, rather than decorated where it is defined).
    app.view_functions["auth.login"] = limiter.limit(
        policy.LOGIN_RATE_LIMIT, key_func=_address, methods=["POST"],
        exempt_when=lambda: not _auth_required(mode))(login)

    @app.before_request
    def check_credentials() -> None:
        if not _auth_required(mode):
            return
        needed = policy.needed_scope(request.endpoint)
        if needed is None:
            return
        if not current_user.is_authenticated:
            raise Unauthenticated(g.get("auth_problem") or f"authentication required: {HOW_TO}")
        if not current_user.scope.allows(needed):
            raise MissingScope(f"this needs a token with scope {needed.value}; token "
                               f"{current_user.name!r} has scope {current_user.scope.value}")

    _install_error_handlers(app)


def _auth_required(mode: AuthMode) -> bool:
    """Whether this request must authenticate."""
    return policy.required_for_request(mode, request.remote_addr)


def _install_login(app: Flask, store: TokenStore) -> None:
    """Flask-Login: sessions name a token by id; API requests carry the token itself."""
    manager = LoginManager(app)
    manager.session_protection = "basic"

    @manager.user_loader
    def from_session(record_id: str) -> TokenUser | None:
        record = lookup(lambda: store.by_id(record_id))
        return TokenUser(record) if record else None

    @manager.request_loader
    def from_header(req: Request) -> TokenUser | None:
        record, problem = bearer_record(store, req.headers.get("Authorization"))
        if problem:
            g.auth_problem = problem
        return TokenUser(record) if record else None


def bearer_record(store: TokenStore,
                  authorization: str | None) -> tuple[TokenRecord | None, str | None]:
    """The usable record an `Authorization: Bearer` header names, else what is wrong with
    the token (None: no Bearer credential at all)."""
    kind, _, token = (authorization or "").partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        return None, None
    record = lookup(lambda: store.find(token.strip()))
    if record is None:
        return None, f"the token is not valid (unknown, revoked or expired): {HOW_TO}"
    return record, None


def challenge(invalid_token: bool) -> str:
    """The WWW-Authenticate value of a 401."""
    return 'Bearer realm="modelserve"' + (', error="invalid_token"' if invalid_token else "")


def too_many_requests(limit: object, whose: str, wait: int) -> str:
    """The one line of a 429: the budget, whose it is, when to retry."""
    return f"too many requests: at most {limit} for this {whose}; retry in {wait} s"


def lookup(find) -> TokenRecord | None:
    """Run a store lookup; a damaged store refuses every token (and says so in the log)."""
    try:
        return find()
    except StoreError as error:
        log.error("%s: every token is refused until it is repaired", error)
        return None


def _install_limits(app: Flask, settings: Settings, mode: AuthMode) -> Limiter:
    """One budget per token (or client address) over every endpoint but the open probes."""
    limit = policy.effective_rate_limit(settings.rate_limit, mode is AuthMode.REQUIRED)
    limiter = Limiter(_rate_key, app=app, storage_uri="memory://", headers_enabled=False,
                      application_limits=[limit] if limit else [], strategy="fixed-window")

    @limiter.request_filter
    def probes_are_free() -> bool:
        return request.endpoint in ("api.live", "api.ready", "static")

    app.extensions["modelserve_limiter"] = limiter
    return limiter


def _rate_key() -> str:
    """Whose budget a request spends: its token's, else its client address's."""
    if current_user.is_authenticated:
        return f"token:{current_user.get_id()}"
    return _address()


def _address() -> str:
    """The client address (the peer of the connection: no proxy header is trusted)."""
    return f"address:{request.remote_addr}"


def _install_error_handlers(app: Flask) -> None:
    """401 with how to authenticate, 403 naming the scope, 429 with Retry-After."""

    @app.errorhandler(Unauthenticated)
    def unauthenticated(error: Unauthenticated):
        if request.method == "GET" and not wants_json():
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return error_response(401, str(error),
                              {"WWW-Authenticate": challenge(bool(g.get("auth_problem")))})

    @app.errorhandler(MissingScope)
    def missing_scope(error: MissingScope):
        return error_response(403, str(error))

    @app.errorhandler(RateLimitExceeded)
    def too_many(error: RateLimitExceeded):
        current = current_app.extensions["modelserve_limiter"].current_limit
        wait = max(1, math.ceil(current.window[0] - time.time())) if current else 1
        whose = "token" if current_user.is_authenticated else "address"
        return error_response(429, too_many_requests(error.description, whose, wait),
                              {"Retry-After": str(wait)})


def _safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site only, never another site."""
    if not target:
        return url_for("ui.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("ui.index")
    return target


@blueprint.route("/login", methods=["GET", "POST"])
def login():
    """Take a token in a form and remember it in this browser's session."""
    target = _safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("login.html", next=target, problem=None)
    _mode, store = current_app.extensions["modelserve_auth"]
    record = lookup(lambda: store.find(request.form.get("token", "").strip()))
    if record is None:
        return render_template("login.html", next=target,
                               problem="that token is not valid (unknown, revoked or expired)"), 401
    session.clear()  # a new owner id too: results uploaded before the login stay behind
    login_user(TokenUser(record))
    return redirect(target)


@blueprint.post("/logout")
def logout():
    """Forget this browser's login (and its result links)."""
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))
