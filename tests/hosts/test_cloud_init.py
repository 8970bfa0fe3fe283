"""A fresh host boots from the production user-data (NoCloud) and serves predictions.

What a cloud VM does with `modelserve cloud user-data --role prod`: cloud-init makes the
accounts, installs modelserve from the wheel mirror, fetches the dataset and starts the stack
under systemd. The times printed are the contextualization time the issue asks for (the
hosts boot at once, sharing the machine: tests/hosts/booting.py, once per session:
tests/hosts/fixtures.py).
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
from serving.stack_helpers import ROW, Response

from hosts.booting import DEPLOY_ENV, Booted, import_seed_model
from hosts.fixtures import DEV_PRODUCTION_HOST
from modelserve.provision.ready import marker_value
from modelserve.provision.userdata import TLS_MARKER
from modelserve.tls import HSTS, fingerprint

pytestmark = pytest.mark.slow

PORT = 5100
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
            return Response(answer.status, answer.headers, answer.read())
    except urllib.error.HTTPError as error:
        return Response(error.code, error.headers, error.read())


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


def test_prod_boots_from_user_data_and_serves(prod_from_user_data: Booted, shared_data: Path,
                                              legacy_bundle: Path) -> None:
    """cloud-init alone makes a serving production host, over HTTPS with the certificate it
    made at boot (its fingerprint on the console); the seed model then answers."""
    from modelserve.model.runtime import ModelRuntime

    checks_began = time.monotonic()
    host, contextualized = prod_from_user_data.host, prod_from_user_data.seconds
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
    serving = contextualized + time.monotonic() - checks_began
    expected = ModelRuntime.load(legacy_bundle).score(np.asarray([ROW], dtype=np.float32))
    assert answer["probabilities"][0] == pytest.approx(
        float(expected.probabilities[0]), abs=1e-5), answer
    print(f"\nprod via NoCloud: cloud-init done {contextualized:.0f} s after start; "
          f"first prediction after {serving:.0f} s (booted alongside "
          f"{', '.join(prod_from_user_data.alongside)})")


def test_dev_boots_with_a_deploy_key_and_the_production_remote(dev_from_user_data: Booted
                                                                ) -> None:
    """cloud-init alone makes a development host: the training account, its key, the remote."""
    host, contextualized = dev_from_user_data.host, dev_from_user_data.seconds
    # The operator's key logs in as the training account too (the dev role allows it).
    assert host.ssh("id", "-un", user="dev").stdout.strip() == "dev"
    key = host.ssh("cat", ".ssh/modelserve_deploy.pub", user="dev").stdout
    assert key.startswith("ssh-ed25519 ")
    remote = host.ssh("git", "-C", "models", "remote", "get-url", "production", user="dev")
    assert remote.stdout.strip().startswith(f"deploy@{DEV_PRODUCTION_HOST}")
    print(f"\ndev via NoCloud: cloud-init done {contextualized:.0f} s after start (booted "
          f"alongside {', '.join(dev_from_user_data.alongside)})")
