"""Cross-site request forgery protection for the page forms: a signed double-submit token.

A page that shows a form gives the browser a random cookie and puts HMAC(secret, cookie) in
the form; a form post is accepted only when both arrive and agree. Another site can make a
browser send the cookie but cannot read it or compute the field; a cookie planted by a sibling
host does not help without the secret. Browsers also say where a request comes from
(Sec-Fetch-Site): a cross-site form post is refused before anything else. The JSON API needs
no token: it accepts only application/json bodies, which a cross-site page cannot send without
a CORS preflight that this app never grants. (The /v2 routes also take a body without
Content-Type, as tritonclient sends it, but not from a browser that says another site sent it.)
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask, Response, g, request

COOKIE = "modelserve_csrf"
FIELD = "csrf-token"  # not an identifier, so no feature (form field) can take its name
KEY_FILE = "web-secret"  # the name of the file holding the signing key
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
TRUSTED_SITES = frozenset({"same-origin", "none"})  # "none": typed or bookmarked by the user


class CrossSiteRequest(Exception):
    """A state-changing form post that did not come from one of our pages."""


def load_secret(home: Path) -> bytes:
    """The signing key shared by every web process on this home: made once, readable by us only."""
    path = home / KEY_FILE
    if not path.exists():
        _create_secret(path)
    return path.read_bytes()


def _create_secret(path: Path) -> None:
    """Write a new key atomically; the first of several racing processes wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{KEY_FILE}-{secrets.token_hex(8)}")
    descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(descriptor, secrets.token_bytes(32))
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    try:
        os.link(scratch, path)  # fails if another process made it first: then use theirs
    except FileExistsError:
        pass
    finally:
        scratch.unlink()


def install(app: Flask, secret: bytes, exempt_prefixes: tuple[str, ...]) -> None:
    """Check every unsafe request outside the API; give templates `csrf_token()`."""

    @app.before_request
    def check_origin_and_token() -> None:
        if request.method in SAFE_METHODS or request.path.startswith(exempt_prefixes):
            return
        if not from_this_origin():
            raise CrossSiteRequest("form posts from other sites are refused")
        nonce = request.cookies.get(COOKIE, "")
        sent = request.form.get(FIELD, "")
        if not nonce or not hmac.compare_digest(sent, _sign(secret, nonce)):
            raise CrossSiteRequest(
                "this form was not sent from this site's page, or the page is too old: "
                "reload the page and send the form again")

    @app.after_request
    def set_cookie(response: Response) -> Response:
        if g.get("csrf_new_nonce"):
            response.set_cookie(COOKIE, g.csrf_new_nonce, httponly=True, samesite="Strict",
                                secure=request.is_secure)
        return response

    @app.context_processor
    def token_for_templates() -> dict:
        return {"csrf_field": FIELD, "csrf_token": lambda: _token(secret)}


def from_this_origin() -> bool:
    """Whether the Flask request comes from this site's own pages (same_origin)."""
    return same_origin(request.headers.get("Sec-Fetch-Site"), request.headers.get("Origin"),
                       request.host)


def same_origin(site: str | None, origin: str | None, host: str) -> bool:
    """What the browser says of a request's origin: Sec-Fetch-Site, else Origin, else trust."""
    if site is not None:
        return site in TRUSTED_SITES
    if origin is None or origin == "null":  # not a browser, or an old one: the token decides
        return origin is None
    return urlsplit(origin).netloc == host


def _token(secret: bytes) -> str:
    """The form field for this browser's cookie, making the cookie if it has none."""
    nonce = g.get("csrf_new_nonce") or request.cookies.get(COOKIE)
    if not nonce:
        nonce = g.csrf_new_nonce = secrets.token_hex(16)
    return _sign(secret, nonce)


def _sign(secret: bytes, nonce: str) -> str:
    """HMAC-SHA256 of the nonce, hex."""
    return hmac.new(secret, nonce.encode(), hashlib.sha256).hexdigest()
