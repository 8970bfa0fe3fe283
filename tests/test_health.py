"""`python -m modelserve.health`: the container health checks, on real sockets."""

from __future__ import annotations

import socket
import subprocess
import sys

from modelserve.health import broker_port, connected_to, healthy


def test_a_worker_is_healthy_while_it_holds_a_broker_connection():
    """An established connection to the broker's port counts; a listening socket does not."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert not connected_to(port)
        with socket.create_connection(("127.0.0.1", port)):
            accepted, _ = server.accept()
            with accepted:
                ok, what = healthy("worker", {"MODELSERVE_BROKER_URL":
                                              f"amqp://u:p@127.0.0.1:{port}//"})
                assert ok and str(port) in what
    assert not connected_to(port)


def test_the_broker_port_comes_from_the_url():
    """The port of the URL, else AMQP's."""
    assert broker_port("amqp://u:p@rabbitmq:5673//") == 5673
    assert broker_port("amqp://u:p@rabbitmq//") == 5672
    assert broker_port("amqps://u:p@rabbitmq//") == 5671


def test_an_unanswered_web_check_fails_with_one_line():
    """Nothing listens: exit 1 and say what was checked."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
    done = subprocess.run([sys.executable, "-m", "modelserve.health", "web", str(port)],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 1
    assert done.stdout.strip() == (f"unhealthy: checked that the web app answers "
                                   f"/v2/health/live on port {port}")
