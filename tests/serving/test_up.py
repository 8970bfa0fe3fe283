"""`modelserve up`: one command starts the stack, says what it runs, and stops it all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import assert_user_error, run_cli
from click.testing import CliRunner

from modelserve.cli import main
from modelserve.stack.ports import port_is_free, wait_for_port
from modelserve.stack.rabbitmq import BrokerNode, first_ephemeral_port, free_broker_port
from serving.conftest import as_json, prepare_home
from serving.stack_helpers import (
    alive,
    cmdline,
    free_port,
    http,
    post_json,
    start_stack,
    wait_until_answering,
)


@pytest.mark.slow
def test_up_serves_then_ctrl_c_stops_everything(tmp_path: Path, shared_data, pima_csv):
    """URLs and readiness are printed; SIGINT leaves no process and no port behind."""
    home = tmp_path / "home"
    prepare_home(home, shared_data, pima_csv, active="production")
    stack = start_stack(home, "--workers", "2")
    stack.wait_ready(workers=2)
    children = stack.children()
    assert len(stack.worker_pids()) == 2
    log = stack.log()
    assert f"web: http://127.0.0.1:{stack.port}/" in log
    assert "ready: models diabetes (ready); 2 worker(s) on the shared queue" in log
    assert "guest" not in (home / "broker" / "rabbitmq.conf").read_text()
    assert oct((home / "broker" / "credentials.json").stat().st_mode & 0o777) == "0o600"
    assert stack.stop(signal.SIGINT) == 0
    assert "stopped; nothing is left running" in stack.log()
    assert not [pid for pid in children if alive(pid)]
    for port in (stack.port, stack.broker_port, stack.broker_port + 19000,
                 stack.broker_port + 20000):
        assert port_is_free(port), f"port {port} still taken"


@pytest.mark.slow
def test_without_a_model_up_says_how_to_get_one(tmp_path: Path, pima_csv):
    """No active model: a hint on the terminal and the page, a clear 503 on the API."""
    home = tmp_path / "home"
    assert run_cli("data", "import", pima_csv, home=home).returncode == 0
    stack = start_stack(home, "--workers", "1", "--inline")
    try:
        wait_for_port(stack.port, 60, stack.process, "modelserve up")
        page = http("GET", f"{stack.url}/")
        assert page.status == 200 and b"No model is active yet" in page.body
        answer = post_json(f"{stack.url}/api/v1/predict", {"rows": [[1] * 8]})
        assert answer.status == 503 and "no model is active" in as_json(answer)["error"]
        assert answer.headers["Retry-After"] == "2"
        assert "modelserve train --activate" in stack.log()
    finally:
        assert stack.stop() == 0


@pytest.mark.slow  # runs modelserve up (which would start the stack)
def test_a_taken_port_is_one_clear_line(tmp_path: Path):
    """The web port is in use: say so and start nothing."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("up", "--port", str(port), home=tmp_path / "home", timeout=60)
    assert_user_error(result, f"port {port}", "already in use")


@pytest.mark.slow
def test_a_broker_that_stops_while_starting_says_why(tmp_path: Path):
    """The node dies booting (its data directory is a file): the line quotes the node's own
    reason, not the start script's exit code 0, and the broker's ports are free again."""
    home = tmp_path / "home"
    node = BrokerNode(home / "broker", free_broker_port())
    node.credentials()  # keeps the data directory
    (node.base / "mnesia").write_text("a file where the node keeps its data\n")
    result = run_cli("up", "--port", str(free_port()), "--broker-port", str(node.port),
                     "--workers", "1", home=home, timeout=120)
    assert_user_error(result, "the broker stopped while starting", "application_start_failure",
                      str(node.console_log))
    assert "code 0" not in result.stderr
    assert all(port_is_free(port) for port in node.ports())


@pytest.mark.slow
def test_a_private_broker_that_dies_is_started_again(tmp_path: Path, shared_data, pima_csv):
    """kill -9 the node: `up` says so, starts it again, and the same web and worker serve."""
    home = tmp_path / "home"
    prepare_home(home, shared_data, pima_csv, active="production")
    stack = start_stack(home, "--workers", "1")
    try:
        stack.wait_ready(workers=1)
        serving = set(stack.worker_pids())
        (node,) = [pid for pid in stack.children() if b"beam.smp" in cmdline(pid)]
        os.kill(node, signal.SIGKILL)
        wait_until_answering(stack.url, 90)
        assert "the broker stopped (it gave no reason); restarting it" in stack.log()
        assert set(stack.worker_pids()) == serving
    finally:
        assert stack.stop() == 0


def test_nodes_of_tests_take_no_port_an_outgoing_connection_could_take():
    """Nodes started by tests and benchmarks keep all three ports below the ephemeral range:
    a node whose distribution port a client connection took meanwhile would die booting."""
    for _ in range(100):
        ports = BrokerNode(Path(), free_broker_port()).ports()
        assert max(ports) < first_ephemeral_port(), ports


def test_missing_rabbitmq_server_is_one_clear_line(tmp_path, monkeypatch):
    """Without the broker package: say how to install it, or how to use another broker."""
    monkeypatch.setattr("modelserve.stack.rabbitmq.SERVER", str(tmp_path / "no-such-server"))
    monkeypatch.setenv("MODELSERVE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MODELSERVE_BROKER_URL", raising=False)
    result = CliRunner().invoke(main, ["up", "--port", str(free_port())])
    assert result.exit_code == 1, result.output
    assert "rabbitmq-server is not installed" in result.output
    assert "MODELSERVE_BROKER_URL" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.slow  # runs modelserve up, a RabbitMQ node
def test_a_broker_that_does_not_answer_is_one_clear_line(tmp_path: Path):
    """An external broker URL that nobody answers: one line, and no password in it."""
    url = f"amqp://someone:s3cret-word@127.0.0.1:{free_port()}//"
    result = subprocess.run(
        [sys.executable, "-m", "modelserve", "up", "--port", str(free_port())],
        env=dict(os.environ, MODELSERVE_HOME=str(tmp_path / "home"), MODELSERVE_BROKER_URL=url),
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert_user_error(result, "does not answer")
    assert "s3cret-word" not in result.stderr + result.stdout
