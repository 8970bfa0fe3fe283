"""HTTPS: `modelserve up --tls-cert/--tls-key` serves TLS itself, to clients that verify it.

A real stack (broker, worker, gunicorn) and real TLS clients: Python's ssl with a verifying
context, and curl. Plain HTTP on the port gets no answer; HSTS is on every answer.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import assert_user_error, run_cli
from click.testing import CliRunner
from cryptography import x509

from modelserve.cli import main
from modelserve.delivery.activate import wait_until_served
from modelserve.delivery.config import DeliveryConfig
from modelserve.registry import Registry
from modelserve.tls import HSTS, fingerprint, make_self_signed, self_signed_request
from serving.conftest import prepare_home, version_of_seed
from serving.stack_helpers import ROW, free_port, start_stack

pytestmark = pytest.mark.slow


def self_signed(folder: Path, *args: str) -> tuple[Path, Path, str]:
    """Run `modelserve tls self-signed` through click; return cert, key and what it printed."""
    result = CliRunner().invoke(main, ["tls", "self-signed", "--out", str(folder), *args])
    assert result.exit_code == 0, result.output
    return folder / "web.crt", folder / "web.key", result.output


def https(port: int, context: ssl.SSLContext, method: str = "GET", path: str = "/",
          body: dict | None = None, host: str = "127.0.0.1"):
    """One request over TLS; return (status, headers, body)."""
    connection = http.client.HTTPSConnection(host, port, timeout=15, context=context)
    try:
        data = json.dumps(body).encode() if body is not None else None
        connection.request(method, path, body=data,
                           headers={"Content-Type": "application/json"} if data else {})
        answer = connection.getresponse()
        return answer.status, answer.headers, answer.read()
    finally:
        connection.close()


def trusting(cert: Path) -> ssl.SSLContext:
    """What a client does with a self-signed server: trust its certificate, check the rest."""
    return ssl.create_default_context(cafile=str(cert))


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory, shared_data: Path, pima_csv: Path):
    """A stack with one worker serving HTTPS with a self-signed certificate for localhost."""
    root = tmp_path_factory.mktemp("tls")
    home = root / "home"
    prepare_home(home, shared_data, pima_csv, active="production")
    version = version_of_seed(home, "production")
    cert, key, _ = self_signed(root / "tls", "--name", "modelserve.test")
    stack = start_stack(home, "--workers", "1", "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        deadline = time.monotonic() + 120
        while True:
            assert stack.process.poll() is None, stack.log()
            if "ready: model" in stack.log():
                break
            assert time.monotonic() < deadline, stack.log()
            time.sleep(0.3)
        yield stack, cert, version
    finally:
        assert stack.stop() == 0


def test_self_signed_makes_a_key_only_its_owner_reads_and_names_the_host(tmp_path: Path):
    """The certificate names the host, its addresses, localhost and 127.0.0.1; key 0600."""
    cert, key, printed = self_signed(tmp_path / "out", "--name", "Web.Example.org",
                                     "--ip", "192.0.2.10")
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    names = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["web.example.org", "localhost"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == [
        "192.0.2.10", "127.0.0.1", "::1"]
    assert f"sha256: {fingerprint(cert.read_text())}" in printed
    again = CliRunner().invoke(main, ["tls", "self-signed", "--out", str(tmp_path / "out"),
                                      "--name", "x"])
    assert again.exit_code == 1 and "--force replaces them" in again.output
    shown = CliRunner().invoke(main, ["tls", "fingerprint", str(cert)])
    assert shown.output.strip() == fingerprint(cert.read_text())


@pytest.mark.parametrize(("args", "fragment"), [
    (["--name", "a b"], "--name 'a b': not a host name"),
    (["--name", "ok", "--ip", "300.1.1.1"], "--ip '300.1.1.1': not an IP address"),
    ([], "give the host's name"),
])
def test_self_signed_refuses_malformed_names_in_one_line(tmp_path: Path, args, fragment):
    """Names go into the certificate's extension: anything else than a name is refused."""
    result = CliRunner().invoke(main, ["tls", "self-signed", "--out", str(tmp_path), *args])
    assert result.exit_code == 1 and fragment in result.output
    assert "Traceback" not in result.output and not (tmp_path / "web.key").exists()


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> dict[str, Path]:
    """Two certificate and key pairs, for the refusals."""
    root = tmp_path_factory.mktemp("pairs")
    made = {}
    for name in ("a", "b"):
        pair = make_self_signed(self_signed_request([f"{name}.test"], []), root / name)
        made[f"{name}.crt"], made[f"{name}.key"] = pair.cert, pair.key
    loose = root / "loose.key"
    shutil.copyfile(made["a.key"], loose)
    loose.chmod(0o644)
    made["loose.key"] = loose
    return made


@pytest.mark.parametrize(("cert", "key", "fragments"), [
    ("a.crt", "b.key", ["the key does not belong to the certificate"]),
    ("a.crt", "loose.key", ["readable by every account; chmod 600 it"]),
    ("missing.crt", "a.key", ["--tls-cert", "no such file"]),
    ("a.crt", None, ["--tls-cert and --tls-key go together"]),
    ("a.key", "a.key", ["not a PEM certificate and key"]),
])
@pytest.mark.parametrize("command", ["up", "web"])
def test_unusable_files_are_refused_before_anything_starts(tmp_path: Path, pairs, cert, key,
                                                          fragments, command):
    """A wrong pair is one line, before a broker or gunicorn starts."""
    args = ["--tls-cert", str(pairs.get(cert, tmp_path / cert))]
    if key:
        args += ["--tls-key", str(pairs[key])]
    home = tmp_path / "home"
    if command == "web":
        result = subprocess.run(
            [*_modelserve(), "web", "--port", str(free_port()), *args],
            env=_env(home, MODELSERVE_BROKER_URL="amqp://u:p@127.0.0.1:1//"),
            capture_output=True, text=True, timeout=60, check=False)
    else:
        result = run_cli("up", "--port", str(free_port()), *args, home=home, timeout=60)
    assert_user_error(result, *fragments)
    assert not (home / "broker").exists()


def test_up_serves_https_that_a_verifying_client_trusts(tls_stack, reliability):
    """Predictions and pages over TLS to a client trusting the certificate, HSTS on each."""
    stack, cert, version = tls_stack
    log = stack.log()
    assert f"web: https://127.0.0.1:{stack.port}/" in log
    assert f"curl --cacert {cert}" in log
    context = trusting(cert)
    seconds = []
    for _ in range(10):
        started = time.perf_counter()
        status, headers, body = https(stack.port, context, "POST", "/api/v1/predict",
                                      {"rows": [ROW]})
        seconds.append(time.perf_counter() - started)
        assert status == 200, body
        assert json.loads(body)["model_version"] == version
        assert headers["Strict-Transport-Security"] == HSTS
    for path in ("/", "/v2/health/ready", "/no-such-page"):
        status, headers, _ = https(stack.port, context, path=path)
        assert headers.get("Strict-Transport-Security") == HSTS, (path, status)
    # localhost is in the certificate as well: a browser on the server verifies it too.
    status, _, _ = https(stack.port, context, host="localhost", path="/v2/health/live")
    assert status == 200
    reliability.record("Security", "HTTPS served by `modelserve up`",
                       "new connection + TLS handshake + one-row prediction, verifying client",
                       requests=len(seconds), median_ms=round(statistics.median(seconds) * 1000, 1),
                       hsts=HSTS)


def test_clients_not_trusting_it_or_expecting_another_name_are_refused(tls_stack, reliability):
    """The system's CAs do not vouch for it; the right certificate under a wrong name fails."""
    stack, cert, _ = tls_stack
    with pytest.raises(ssl.SSLCertVerificationError, match="self-signed|unable to get local"):
        https(stack.port, ssl.create_default_context(), path="/v2/health/live")
    with socket.create_connection(("127.0.0.1", stack.port), timeout=15) as raw:
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            trusting(cert).wrap_socket(raw, server_hostname="wrong.example")
    curl = shutil.which("curl")
    refused_by_curl = None
    if curl:
        url = f"https://localhost:{stack.port}/v2/health/live"
        good = subprocess.run([curl, "-sS", "--cacert", str(cert), url], capture_output=True,
                              text=True, timeout=30, check=False)
        assert good.returncode == 0 and '"live"' in good.stdout, good.stderr
        bad = subprocess.run([curl, "-sS", url], capture_output=True, text=True, timeout=30,
                             check=False)
        refused_by_curl = bad.returncode
        assert bad.returncode == 60, bad.stderr  # peer certificate cannot be authenticated
    reliability.record("Security", "HTTPS: untrusted or misnamed certificate",
                       "Python ssl (system CAs; right CA, wrong name), curl without --cacert",
                       refused=3 if curl else 2, curl_exit=refused_by_curl)


def test_plain_http_on_the_tls_port_gets_no_answer(tls_stack, reliability):
    """A plain-HTTP request to the port is not answered: no status line, no page, no data."""
    stack, _, _ = tls_stack
    connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError,
                        http.client.BadStatusLine)):
        connection.request("POST", "/api/v1/predict", body=json.dumps({"rows": [ROW]}),
                           headers={"Content-Type": "application/json"})
        connection.getresponse()
    connection.close()
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as raw:
        raw.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        received = _read_until_closed(raw)
    assert b"HTTP/" not in received and b"ready" not in received
    reliability.record("Security", "plain HTTP to the HTTPS port", "no status line answered",
                       http_answers=0, bytes_back=len(received))


def test_the_delivery_hook_confirms_over_https_with_the_certificate(tls_stack, tmp_path: Path):
    """The post-receive wait (delivery/activate.py) reaches https://127.0.0.1 verifying the
    stack's certificate given by `delivery init --web-ca`; without it, no confirmation."""
    stack, cert, version = tls_stack
    spec = Registry(stack.home / "registry").get(version).spec
    url = f"https://127.0.0.1:{stack.port}"
    assert wait_until_served(DeliveryConfig(web_url=url, web_ca=str(cert)), spec, 15)
    assert not wait_until_served(DeliveryConfig(web_url=url), spec, 1)
    home = tmp_path / "home"
    init = run_cli("delivery", "init", "--web-url", url, "--web-ca", cert, home=home)
    assert init.returncode == 0, init.stderr
    stored = json.loads((home / "delivery" / "config.json").read_text())
    assert stored["web_url"] == url and stored["web_ca"] == str(cert.resolve())


def _read_until_closed(raw: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or resets it)."""
    received = b""
    try:
        while chunk := raw.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def _modelserve() -> list[str]:
    """The command line running our modelserve."""
    return [sys.executable, "-m", "modelserve"]


def _env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a modelserve run with its own home."""
    return dict(os.environ, MODELSERVE_HOME=str(home), **extra)
