"""TLS for the web app: check a certificate and key, make a self-signed pair, verify a server.

Certificates are made with the `openssl` command (on every Debian/Ubuntu server through
ca-certificates) and checked with Python's own ssl module, so that a production install needs
no extra package; the Ansible role makes them the same way.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import shutil
import ssl
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from modelserve.errors import UserError

HSTS = "max-age=31536000"
CERT_FILE = "web.crt"
KEY_FILE = "web.key"
VALID_DAYS = 825  # renew by running the command again with --force (see the README)
LOCAL_NAMES = ("localhost",)
LOCAL_IPS = ("127.0.0.1", "::1")
_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
                   r"(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?")


_PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


class TLSError(UserError):
    """A certificate or key cannot be used; the message says which file and why."""


@dataclass(frozen=True)
class ServerTLS:
    """The certificate and key files gunicorn serves HTTPS with."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class SelfSigned:
    """What a self-signed certificate is made for: host names and IP addresses."""

    names: tuple[str, ...]
    ips: tuple[str, ...] = ()

    def subject_alt_names(self) -> str:
        """The subjectAltName value: our names and addresses, then loopback's."""
        names = _unique((*self.names, *LOCAL_NAMES))
        ips = _unique((*self.ips, *LOCAL_IPS))
        return ",".join([f"DNS:{name}" for name in names] + [f"IP:{ip}" for ip in ips])


def self_signed_request(names: list[str], ips: list[str]) -> SelfSigned:
    """Check the names and addresses a certificate is to name, refusing malformed ones."""
    if not names:
        raise TLSError("give the host's name (--name HOST): clients check it")
    for name in names:
        if not _NAME.fullmatch(name):
            raise TLSError(f"--name {name!r}: not a host name")
    checked = []
    for ip in ips:
        try:
            checked.append(str(ipaddress.ip_address(ip)))
        except ValueError:
            raise TLSError(f"--ip {ip!r}: not an IP address") from None
    return SelfSigned(tuple(name.rstrip(".").lower() for name in names), tuple(checked))


def openssl_argv(request: SelfSigned, cert: Path, key: Path, days: int = VALID_DAYS) -> list[str]:
    """The openssl command making a P-256 key and a self-signed server certificate."""
    return ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-sha256", "-days", str(days),
            "-subj", f"/CN={request.names[0]}", "-keyout", str(key), "-out", str(cert),
            "-addext", f"subjectAltName={request.subject_alt_names()}",
            "-addext", "basicConstraints=critical,CA:FALSE",
            "-addext", "keyUsage=critical,digitalSignature",
            "-addext", "extendedKeyUsage=serverAuth"]


def make_self_signed(request: SelfSigned, folder: Path, force: bool = False) -> ServerTLS:
    """Write web.crt (0644) and web.key (0600) into a folder; keep existing ones unless forced."""
    made = ServerTLS(folder / CERT_FILE, folder / KEY_FILE)
    if not force and (made.cert.exists() or made.key.exists()):
        raise TLSError(f"{folder} already holds {CERT_FILE} or {KEY_FILE}: --force replaces them")
    openssl = shutil.which("openssl")
    if openssl is None:
        raise TLSError("the openssl command is missing: install the openssl package")
    folder.mkdir(parents=True, exist_ok=True)
    # Made in a private folder and moved into place: the key is never readable by others,
    # not even for a moment, and a failed run leaves the old pair.
    with tempfile.TemporaryDirectory(dir=folder, prefix=".tls-") as scratch:
        staged = ServerTLS(Path(scratch) / CERT_FILE, Path(scratch) / KEY_FILE)
        argv = [openssl, *openssl_argv(request, staged.cert, staged.key)[1:]]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise TLSError(f"openssl could not make the certificate: {last}")
        os.chmod(staged.key, 0o600)
        os.chmod(staged.cert, 0o644)
        os.replace(staged.key, made.key)
        os.replace(staged.cert, made.cert)
    return made


def check_server_files(cert: Path | None, key: Path | None) -> ServerTLS | None:
    """Refuse, in one line, a pair gunicorn could not serve or that leaks the key."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise TLSError("--tls-cert and --tls-key go together")
    for path, what in ((cert, "--tls-cert"), (key, "--tls-key")):
        if not path.is_file():
            raise TLSError(f"{what} {path}: no such file")
        if not os.access(path, os.R_OK):
            raise TLSError(f"{what} {path}: not readable by this account")
    if key.stat().st_mode & stat.S_IROTH:
        raise TLSError(f"--tls-key {key}: readable by every account; chmod 600 it")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as error:
        reason = "the key does not belong to the certificate" if "mismatch" in str(error) \
            else f"not a PEM certificate and key ({error.reason or error})"
        raise TLSError(f"--tls-cert {cert} / --tls-key {key}: {reason}") from None
    return ServerTLS(cert.resolve(), key.resolve())


def client_context(cafile: Path, check_hostname: bool = True) -> ssl.SSLContext:
    """A client context trusting the certificates in cafile, a server's own one included."""
    try:
        context = ssl.create_default_context(cafile=str(cafile))
    except (OSError, ssl.SSLError) as error:
        raise TLSError(f"{cafile}: not a readable PEM certificate ({error})") from None
    # A self-signed server certificate is its own trust anchor; a CA-issued one given as is
    # (the file `up` serves) is trusted without its issuers.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.check_hostname = check_hostname
    return context


def fingerprint(pem: str) -> str:
    """The SHA-256 fingerprint of a PEM certificate, as openssl prints it (AB:CD:...)."""
    first = _PEM.search(pem)
    if first is None:
        raise TLSError("not a PEM certificate")
    der = ssl.PEM_cert_to_DER_cert(first.group(0))
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def _unique(items: tuple[str, ...]) -> list[str]:
    """Items in order, each once."""
    return list(dict.fromkeys(items))
