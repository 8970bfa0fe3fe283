"""Wait until a new server is contextualized: its stack answers, or cloud-init said it is done."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from modelserve.errors import UserError
from modelserve.provision.userdata import KEY_MARKER, READY_MARKER
from modelserve.tls import TLSError, fingerprint

Say = Callable[[str], None]


def health(url: str, timeout: float = 5.0, context: ssl.SSLContext | None = None) -> dict | None:
    """The stack's readiness JSON (a 503 carries it too), or None while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout,  # noqa: S310 (a URL we built)
                                    context=context) as response:
            return _status(response.read())
    except urllib.error.HTTPError as error:
        return _status(error.read())
    except (OSError, ValueError):
        return None


def served_models(status: dict) -> str:
    """Say which models a readiness document serves, e.g. `diabetes (ready), iris (not ready)`."""
    models = status.get("models")
    if isinstance(models, dict) and models:
        return ", ".join(f"{name} ({'ready' if ready else 'not ready'})"
                         for name, ready in sorted(models.items()))
    # A stack from before many models names only its one active version.
    return str(status.get("active_version") or "none yet: push one")


def _status(body: bytes) -> dict | None:
    """The readiness document if the body is one (anything else is not our stack)."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) and "ready" in data else None


def wait_for_stack(url: str, seconds: float, poll: float, say: Say,
                   context: ssl.SSLContext | None = None) -> dict | None:
    """Poll the readiness URL until the stack answers, saying how long it has been."""
    return poll_until(lambda: health(url, context=context), seconds, poll, say,
                      f"waiting for {url}")


class ImpostorError(UserError):
    """The server answering at the address is not the one the console vouches for."""


def server_certificate(host: str, port: int, expected: str, timeout: float = 5.0) -> str | None:
    """The PEM certificate served at host:port if its fingerprint is `expected`; None while
    nothing answers with TLS. Another certificate is refused: someone else answers there."""
    try:
        pem = ssl.get_server_certificate((host, port), timeout=timeout)
    except (OSError, ssl.SSLError):
        return None
    try:
        seen = fingerprint(pem)
    except TLSError:
        return None
    if seen != expected:
        raise ImpostorError(f"{host}:{port} presents the certificate {seen}, not {expected} "
                            "that the server printed on its console: not trusting it")
    return pem


def wait_for_certificate(host: str, port: int, expected: str, seconds: float, poll: float,
                         say: Say) -> str | None:
    """Poll until the server presents the certificate the console vouches for."""
    return poll_until(lambda: server_certificate(host, port, expected), seconds, poll, say,
                      f"waiting for https on {host}:{port}")


def wait_for_console(read: Callable[[], str], seconds: float, poll: float,
                     say: Say) -> str | None:
    """Poll the server's console log until cloud-init's final message appears."""

    def finished() -> str | None:
        output = read() or ""
        return output if READY_MARKER in output else None

    return poll_until(finished, seconds, poll, say, "waiting for cloud-init to finish")


def poll_until(probe: Callable[[], Any], seconds: float, poll: float, say: Say,
               waiting: str) -> Any:
    """Call probe until it gives something other than None, or None after `seconds`.

    Says `waiting` with the time spent every 30 s, so that a long wait shows it is alive.
    """
    start = time.monotonic()
    next_note = start + 30
    while True:
        result = probe()
        if result is not None:
            return result
        now = time.monotonic()
        if now - start >= seconds:
            return None
        if now >= next_note:
            say(f"{waiting}: {now - start:.0f} s")
            next_note = now + 30
        time.sleep(poll)


def console_reader(connection: Any, server_id: str) -> Callable[[], str]:
    """Read a server's console log (Nova's os-getConsoleOutput), '' while it has none."""

    def read() -> str:
        """The console's last lines."""
        from openstack import exceptions as sdk

        try:
            return connection.compute.get_server_console_output(server_id, length=200)["output"]
        except sdk.HttpException:
            return ""  # the console is not always available during the first seconds

    return read


def wait_for_marker(read: Callable[[], str], marker: str, seconds: float, poll: float,
                    say: Say) -> str | None:
    """Poll the console log until a line with the marker appears; return what follows it."""

    def found() -> str | None:
        return marker_value(read() or "", marker) or None

    return poll_until(found, seconds, poll, say, "waiting for the server's certificate")


def marker_value(output: str, marker: str) -> str:
    """What follows the marker on its last line of the console, or ''."""
    values = [line.split(marker, 1)[1].strip() for line in output.splitlines() if marker in line]
    # The echo command itself may be shown on the console before its output.
    values = [value for value in values if value and "$(" not in value]
    return values[-1] if values else ""


def deploy_key_in(output: str) -> str:
    """The development server's deploy key as printed on its console, or ''."""
    for line in output.splitlines():
        if KEY_MARKER in line:
            return line.split(KEY_MARKER, 1)[1].strip()
    return ""
