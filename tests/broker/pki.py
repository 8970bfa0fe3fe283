"""Certificates for broker tests, made as the Ansible rabbitmq role makes them.

The same openssl commands as roles/rabbitmq (an EC P-256 CA, keys generated where they are used,
CSRs signed by the CA) and the role's own extension files, rendered from its templates: what the
tests prove about these certificates holds for the ones a converge makes.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import jinja2

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "deploy" / "ansible" / "roles" / "rabbitmq"


@dataclass(frozen=True)
class Authority:
    """A CA's certificate and key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Identity:
    """A certificate and its key, and the CA that signed it."""

    cert: Path
    key: Path
    ca: Path


def openssl(*args: str | Path) -> None:
    """Run openssl; fail with what it said."""
    done = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr


def render(template: str, **values: object) -> str:
    """Render one of the role's templates (with the Ansible filters they use)."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701
    env.filters["regex_replace"] = lambda value, pattern, replacement: re.sub(
        pattern, replacement, value)
    text = (ROLE / "templates" / template).read_text()
    return env.from_string(text).render(ansible_managed="made by the tests", **values)


def make_authority(folder: Path, name: str = "modelserve broker CA") -> Authority:
    """A CA as the role makes it on production (tasks/tls.yml)."""
    folder.mkdir(parents=True, exist_ok=True)
    key, cert = folder / "ca.key", folder / "ca.pem"
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    openssl("req", "-new", "-x509", "-key", key, "-sha256", "-days", "3650", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", cert)
    return Authority(cert, key)


def issue(authority: Authority, folder: Path, name: str, extensions: str) -> Identity:
    """A key made in `folder`, its CSR, and the certificate the CA signs for it."""
    folder.mkdir(parents=True, exist_ok=True)
    key, csr = folder / f"{name}.key", folder / f"{name}.csr"
    cert, ext = folder / f"{name}.pem", folder / f"{name}.ext"
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    openssl("req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", csr)
    ext.write_text(extensions)
    openssl("x509", "-req", "-in", csr, "-CA", authority.cert, "-CAkey", authority.key,
            "-CAserial", authority.cert.with_suffix(".srl"), "-CAcreateserial", "-days", "825",
            "-sha256", "-extfile", ext, "-out", cert)
    return Identity(cert, key, authority.cert)


def server_identity(authority: Authority, folder: Path, names: list[str]) -> Identity:
    """The broker's certificate for these names and addresses (the role's server extensions)."""
    return issue(authority, folder, "broker",
                 render("broker-server.ext.j2", rabbitmq_tls_names=names))


def client_identity(authority: Authority, folder: Path, name: str) -> Identity:
    """A worker host's certificate (the role's client extensions)."""
    return issue(authority, folder, name, render("broker-client.ext.j2"))
