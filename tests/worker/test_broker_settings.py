"""The broker's TLS settings: amqps:// always verifies the broker; bad combinations are one line."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from modelserve.config import load_settings
from modelserve.errors import UserError
from modelserve.worker.app import broker_tls, celery_config


def settings(tmp_path: Path, url: str, **files: str):
    """Settings from an environment with this broker URL and MODELSERVE_BROKER_<NAME> files."""
    env = {"MODELSERVE_HOME": str(tmp_path), "MODELSERVE_BROKER_URL": url}
    env.update({f"MODELSERVE_BROKER_{name.upper()}": value for name, value in files.items()})
    return load_settings(env)


def pem_files(tmp_path: Path) -> dict[str, str]:
    """Three files standing in for a CA, a certificate and a key (only their existence counts)."""
    paths = {}
    for name in ("ca", "cert", "key"):
        path = tmp_path / f"{name}.pem"
        path.write_text("-----BEGIN-----\n")
        paths[name] = str(path)
    return paths


def test_a_plain_url_uses_no_tls(tmp_path):
    """amqp:// (production's own processes, on loopback) stays plain."""
    assert broker_tls(settings(tmp_path, "amqp://u:p@127.0.0.1:5672/v")) is False
    assert celery_config(settings(tmp_path, "amqp://u:p@127.0.0.1:5672/v"))["broker_use_ssl"] \
        is False


def test_amqps_verifies_the_broker_and_its_name_and_presents_our_certificate(tmp_path):
    """CERT_REQUIRED, the CA given, the URL's host checked, TLS 1.2 at least, our identity."""
    files = pem_files(tmp_path)
    options = broker_tls(settings(tmp_path, "amqps://w:p@10.0.0.5:5671/modelserve", **files))
    assert options == {
        "cert_reqs": ssl.CERT_REQUIRED, "ca_certs": files["ca"], "certfile": files["cert"],
        "keyfile": files["key"], "server_hostname": "10.0.0.5",
        "tls_minimum_version": ssl.TLSVersion.TLSv1_2,
    }
    config = celery_config(settings(tmp_path, "amqps://w:p@10.0.0.5:5671/modelserve", **files))
    assert config["broker_use_ssl"] == options
    assert config["worker_enable_remote_control"] is False  # what the worker account allows


def test_amqps_without_a_ca_trusts_the_system_store_but_still_verifies(tmp_path):
    """No MODELSERVE_BROKER_CA: still CERT_REQUIRED, against the system's CAs."""
    options = broker_tls(settings(tmp_path, "amqps://w:p@broker.example.org/v"))
    assert options["cert_reqs"] == ssl.CERT_REQUIRED and options["ca_certs"] is None
    assert options["server_hostname"] == "broker.example.org"


@pytest.mark.parametrize(("url", "files", "message"), [
    ("amqp://u:p@h/v", {"ca": "CA"}, "MODELSERVE_BROKER_CA need an amqps://"),
    ("amqps://u:p@h/v", {"cert": "CERT"}, "both MODELSERVE_BROKER_CERT and MODELSERVE_BROKER_KEY"),
    ("amqps://u:p@h/v", {"key": "KEY"}, "both MODELSERVE_BROKER_CERT and MODELSERVE_BROKER_KEY"),
    ("amqps://u:p@h/v", {"ca": "/nonexistent/ca.pem"}, "MODELSERVE_BROKER_CA=/nonexistent"),
])
def test_inconsistent_tls_settings_are_one_clear_line(tmp_path, url, files, message):
    """A CA for a plain URL, half an identity, a missing file: refused, naming the setting."""
    given = pem_files(tmp_path)
    values = {name: given[name] if value.isupper() else value for name, value in files.items()}
    with pytest.raises(UserError, match=message.replace("/", ".")):
        broker_tls(settings(tmp_path, url, **values))
