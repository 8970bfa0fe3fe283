"""The readiness wait against real local HTTP servers: only our stack's answer counts."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from modelserve.provision.ready import (
    deploy_key_in,
    health,
    served_models,
    wait_for_console,
    wait_for_stack,
)


def serve(status: int, body: bytes) -> ThreadingHTTPServer:
    """An HTTP server on a free port answering every GET with status and body."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize(("status", "body", "answers"), [
    (200, b'{"ready": true, "active_version": "abc"}', True),
    (503, b'{"ready": false, "active_version": null}', True),  # up, but no model pushed yet
    (200, b"<html>another service</html>", False),
    (404, b'{"error": "not found"}', False),
])
def test_only_the_readiness_document_counts(status: int, body: bytes, answers: bool) -> None:
    """A 503 with our JSON is an answer; another program on the port is not."""
    server = serve(status, body)
    try:
        result = health(f"http://127.0.0.1:{server.server_port}/v2/health/ready")
    finally:
        server.shutdown()
        server.server_close()
    assert (result is not None) == answers


def test_wait_for_stack_gives_up_after_its_time() -> None:
    """Nothing listening: None after about the given seconds, not before."""
    server = serve(200, b"")
    port = server.server_port
    server.shutdown()
    server.server_close()
    start = time.monotonic()
    assert wait_for_stack(f"http://127.0.0.1:{port}/", 0.3, 0.05, print) is None
    assert 0.3 <= time.monotonic() - start < 5


def test_console_wait_returns_the_output_with_the_key() -> None:
    """The console is read until cloud-init's final message; the key line is found in it."""
    reads = iter(["booting\n", "booting\nmodelserve-deploy-key: ssh-ed25519 AAAA k\n"
                  "modelserve-cloud-init-done dev: cloud-init finished after 80 seconds\n"])
    output = wait_for_console(lambda: next(reads), 5, 0.01, print)
    assert deploy_key_in(output) == "ssh-ed25519 AAAA k"
    assert wait_for_console(lambda: "booting\n", 0.1, 0.02, print) is None


def test_cloud_up_names_every_served_model_or_the_one_of_an_older_stack() -> None:
    """Many models: each with its readiness; an older document: its version; none: a hint."""
    assert served_models({"ready": True, "active_version": "abc",
                          "models": {"iris": False, "diabetes": True}}) == \
        "diabetes (ready), iris (not ready)"
    assert served_models({"ready": True, "active_version": "abc"}) == "abc"
    assert served_models({"ready": False, "active_version": None, "models": {}}) == \
        "none yet: push one"
