"""A fresh host boots from the production user-data (NoCloud) and serves predictions.

What a cloud VM does with `modelserve cloud user-data --role prod`: cloud-init makes the
accounts, installs modelserve from the wheel mirror, fetches the dataset and starts the stack
under systemd. The times printed are the contextualization time the issue asks for.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli
from containers.engine import CACHE
from serving.stack_helpers import ROW, Response

from hosts.mirror import serve, stage_mirror
from hosts.testhost import TestHost, gateway
from modelserve.provision.ready import marker_value
from modelserve.provision.userdata import TLS_MARKER
from modelserve.tls import HSTS, fingerprint

pytestmark = pytest.mark.slow

DATASET = "pima-indians-diabetes.csv"
PORT = 5100
SEED_DIR = "/srv/seed-model"  # where the operator copied the model in the host
DEPLOY_ENV = ("env", "HOME=/home/deploy", "MODELSERVE_HOME=/home/deploy/.local/share/modelserve")
CERT = "/home/deploy/.local/share/modelserve/tls/web.crt"  # made at boot by the user-data


def https(method: str, url: str, context: ssl.SSLContext, body: dict | None = None,
          timeout: float = 30, token: str = "") -> Response:
    """One request over TLS with a verifying context (and a token); any status is a Response."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method,  # noqa: S310
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout,  # noqa: S310
                                    context=context) as answer:
            return Response(answer.status, dict(answer.headers), answer.read())
    except urllib.error.HTTPError as error:
        return Response(error.code, dict(error.headers), error.read())


@pytest.fixture(scope="module")
def mirror(engine, host_network: str, shared_data: Path, tmp_path_factory):
    """The wheel and dataset mirror, on this machine's address in the hosts' network."""
    folder = stage_mirror(CACHE, tmp_path_factory.mktemp("mirror"),
                          {DATASET: shared_data / DATASET})
    with serve(folder, gateway(engine, host_network)) as url:
        yield url


def render(tmp_path: Path, role: str, key: Path, mirror: str, *extra: str) -> str:
    """Render a role's user-data with the real CLI, installing from the mirror only."""
    done = run_cli("cloud", "user-data", "--role", role, "--ssh-key", key.with_suffix(".pub"),
                   "--package", "modelserve", "--find-links", f"{mirror}/wheels/",
                   "--no-index", "--dataset-url", f"{mirror}/{DATASET}", *extra, home=tmp_path,
                   timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def wait_http(url: str, context: ssl.SSLContext, seconds: float = 120) -> Response:
    """Wait until a URL answers at all (any status); return the answer."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return https("GET", url, context, timeout=5)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def import_seed_model(host: TestHost, shared_data: Path) -> None:
    """Put the production seed model into service as deploy, the way an operator would."""
    seed = shared_data / "seed-model" / "production"
    host.put({f"{SEED_DIR}/{name}": (seed / name).read_bytes()
              for name in ("model.json", "model.h5")})
    host.exec("chmod", "-R", "a+rX", SEED_DIR)
    host.exec("runuser", "-u", "deploy", "--", *DEPLOY_ENV, "modelserve", "model",
              "import-legacy", f"{SEED_DIR}/model.json", f"{SEED_DIR}/model.h5", "--activate",
              "--reason", "NoCloud test", timeout=300)


def first_prediction(url: str, context: ssl.SSLContext, token: str,
                     seconds: float = 120) -> dict:
    """POST the test row until the stack answers 200; return the answer."""
    deadline = time.monotonic() + seconds
    while True:
        response = https("POST", f"{url}/api/v1/predict", context, {"rows": [ROW]}, token=token)
        if response.status == 200 or time.monotonic() > deadline:
            assert response.status == 200, response.body[:500]
            return json.loads(response.body)
        time.sleep(1)


def test_prod_boots_from_user_data_and_serves(fresh_host, host_key: Path, mirror: str,
                                              shared_data: Path, legacy_bundle: Path,
                                              tmp_path: Path) -> None:
    """cloud-init alone makes a serving production host, over HTTPS with the certificate it
    made at boot (its fingerprint on the console); the seed model then answers."""
    from modelserve.model.runtime import ModelRuntime

    started = time.monotonic()
    host = fresh_host("prod", user_data=render(tmp_path, "prod", host_key, mirror))
    contextualized = time.monotonic() - started
    assert host.ssh("hostname").stdout.strip() == "prod"  # from meta-data
    cert = host.exec("cat", CERT).stdout
    console = host.exec("cat", "/var/log/cloud-init-output.log").stdout
    assert marker_value(console, TLS_MARKER) == fingerprint(cert)
    # The certificate names the host's address: a client verifies it in full.
    context = ssl.create_default_context(cadata=cert)
    url = f"https://{host.address}:{PORT}"
    # Serving, with no model yet: readiness says why (a push or an import brings one).
    try:
        ready = wait_http(f"{url}/v2/health/ready", context)
    except OSError as error:
        raise AssertionError(f"{error}\n{host.journal('modelserve')}") from None
    assert ready.status in (200, 503) and ready.headers["Strict-Transport-Security"] == HSTS
    active = host.ssh("sudo", "-n", "systemctl", "is-active", "modelserve", check=False)
    assert active.stdout.strip() == "active", host.journal("modelserve")
    import_seed_model(host, shared_data)
    # The stack listens off loopback: the API wants a token, made as an operator would.
    assert https("POST", f"{url}/api/v1/predict", context, {"rows": [ROW]}).status == 401
    made = host.exec("runuser", "-u", "deploy", "--", *DEPLOY_ENV, "modelserve", "tokens",
                     "create", "--name", "tests")
    answer = first_prediction(url, context, made.stdout.strip().splitlines()[-1])
    serving = time.monotonic() - started
    expected = ModelRuntime.load(legacy_bundle).score(np.asarray([ROW], dtype=np.float32))
    assert answer["probabilities"][0] == pytest.approx(
        float(expected.probabilities[0]), abs=1e-5), answer
    print(f"\nprod via NoCloud: cloud-init done {contextualized:.0f} s after start; "
          f"first prediction after {serving:.0f} s")


def test_dev_boots_with_a_deploy_key_and_the_production_remote(fresh_host, host_key: Path,
                                                                mirror: str,
                                                                tmp_path: Path) -> None:
    """cloud-init alone makes a development host: the training account, its key, the remote."""
    started = time.monotonic()
    user_data = render(tmp_path, "dev", host_key, mirror, "--production-host", "203.0.113.7")
    host = fresh_host("dev", user_data=user_data)
    contextualized = time.monotonic() - started
    # The operator's key logs in as the training account too (the dev role allows it).
    assert host.ssh("id", "-un", user="dev").stdout.strip() == "dev"
    key = host.ssh("cat", ".ssh/modelserve_deploy.pub", user="dev").stdout
    assert key.startswith("ssh-ed25519 ")
    remote = host.ssh("git", "-C", "models", "remote", "get-url", "production", user="dev")
    assert remote.stdout.strip().startswith("deploy@203.0.113.7")
    print(f"\ndev via NoCloud: cloud-init done {contextualized:.0f} s after start")
