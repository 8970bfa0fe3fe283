"""When authentication is required, and what each endpoint needs: pure logic."""

from __future__ import annotations

import ipaddress
from enum import StrEnum

from modelserve.auth.tokens import Scope
from modelserve.errors import UserError


class AuthMode(StrEnum):
    """MODELSERVE_AUTH: `auto` (required off loopback), `required` or `off`."""

    AUTO = "auto"
    REQUIRED = "required"
    OFF = "off"


# Open to anyone: probes must work without credentials, and the login form cannot need one.
OPEN_ENDPOINTS = frozenset({"api.live", "api.ready", "auth.login", "auth.logout", "static"})
# What only an operator may see: who pushed what from where, and the process internals.
OPERATE_ENDPOINTS = frozenset({"api.prometheus_metrics", "ui.models"})


def parse_mode(text: str) -> AuthMode:
    """The mode MODELSERVE_AUTH names, or a one-line refusal."""
    try:
        return AuthMode(text.strip().lower())
    except ValueError:
        raise UserError(f"MODELSERVE_AUTH={text[:20]!r}: use auto, required or off") from None


def is_loopback(host: str) -> bool:
    """Tell whether a listen or peer address is on loopback (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def resolve_mode(mode: AuthMode, listen_host: str) -> AuthMode:
    """`auto` becomes `required` unless the web app listens on loopback only."""
    if mode is not AuthMode.AUTO:
        return mode
    return AuthMode.OFF if is_loopback(listen_host) else AuthMode.REQUIRED


def required_for_request(mode: AuthMode, peer: str | None) -> bool:
    """Whether this request must authenticate.

    `auto` reaches the app unresolved only when something other than `modelserve up` or
    `modelserve web` started it (gunicorn by hand, a test client): the bind address is not
    known there, so only requests from a loopback peer go without credentials.
    """
    if mode is AuthMode.AUTO:
        return not (peer and is_loopback(peer))
    return mode is AuthMode.REQUIRED


def needed_scope(endpoint: str | None) -> Scope | None:
    """The scope an endpoint needs (None: open); unknown paths need `predict`, not nothing."""
    if endpoint in OPEN_ENDPOINTS:
        return None
    return Scope.OPERATE if endpoint in OPERATE_ENDPOINTS else Scope.PREDICT


def effective_rate_limit(setting: str, auth_required: bool) -> str | None:
    """MODELSERVE_RATE_LIMIT as a limit string, or None for no limit.

    Unset, it is 600/minute wherever authentication is required and nothing on an open
    loopback stack (load tests and benchmarks run there); `off` turns it off everywhere.
    """
    text = setting.strip().lower()
    if text == "off":
        return None
    if not text:
        return DEFAULT_RATE_LIMIT if auth_required else None
    return text


DEFAULT_RATE_LIMIT = "600/minute"
LOGIN_RATE_LIMIT = "10/minute"  # per client address: the form takes a token, guesses are cheap
