"""`modelserve web`: the web app alone, for an existing broker (one container's command)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelserve.cli import main
from modelserve.stack.ports import wait_for_port
from modelserve.stack.rabbitmq import BrokerNode
from serving.conftest import as_json
from serving.stack_helpers import ROW, RunningStack, free_port, post_json


def test_web_without_a_broker_url_says_so(tmp_path: Path, monkeypatch):
    """No MODELSERVE_BROKER_URL: one line naming it, nothing started."""
    monkeypatch.setenv("MODELSERVE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MODELSERVE_BROKER_URL", raising=False)
    result = CliRunner().invoke(main, ["web", "--port", str(free_port())])
    assert result.exit_code == 1 and "MODELSERVE_BROKER_URL" in result.output, result.output


@pytest.mark.slow
def test_web_serves_through_the_broker_and_stops_on_sigterm(stack: RunningStack):
    """Beside a running stack's broker and workers: answers, is gunicorn itself, exits 0."""
    port = free_port()
    broker = BrokerNode(stack.home / "broker", stack.broker_port).url()
    env = dict(os.environ, MODELSERVE_HOME=str(stack.home), MODELSERVE_BROKER_URL=broker)
    web = subprocess.Popen(
        [sys.executable, "-m", "modelserve", "web", "--port", str(port), "--web-threads", "8"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, 60, web, "modelserve web")
        answer = post_json(f"http://127.0.0.1:{port}/api/v1/predict", {"rows": [ROW]})
        assert answer.status == 200, answer.body
        assert as_json(answer)["worker"]
        # exec, not a child: `docker stop` signals gunicorn with nothing in between.
        assert b"gunicorn" in Path(f"/proc/{web.pid}/cmdline").read_bytes()
        web.send_signal(signal.SIGTERM)
        assert web.wait(30) == 0
        output = web.stdout.read().decode()
        assert f"web: http://127.0.0.1:{port}/" in output
        assert BrokerNode(stack.home / "broker", stack.broker_port).credentials()["password"] \
            not in output
    finally:
        if web.poll() is None:
            os.killpg(web.pid, signal.SIGKILL)
            web.wait(10)
