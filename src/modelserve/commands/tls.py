"""`modelserve tls`: a self-signed certificate for the web app, and certificate fingerprints."""

from __future__ import annotations

from pathlib import Path

import click

from modelserve.tls import fingerprint as sha256_fingerprint
from modelserve.tls import make_self_signed, self_signed_request


@click.group()
def tls() -> None:
    """Certificates for serving HTTPS (`modelserve up --tls-cert/--tls-key`)."""


@tls.command("self-signed")
@click.option("--out", "folder", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write web.crt and web.key (0600) into.")
@click.option("--name", "names", multiple=True, metavar="HOST",
              help="A host name clients use (repeatable; the first is the subject).")
@click.option("--ip", "ips", multiple=True, metavar="ADDR",
              help="An IP address clients use (repeatable).")
@click.option("--force", is_flag=True, help="Replace a certificate and key already there.")
def self_signed(folder: Path, names: tuple[str, ...], ips: tuple[str, ...],
                force: bool) -> None:
    """Make a key and a self-signed certificate naming the host, localhost and 127.0.0.1."""
    made = make_self_signed(self_signed_request(list(names), list(ips)), folder, force)
    click.echo(f"certificate: {made.cert}")
    click.echo(f"key: {made.key}")
    click.echo(f"sha256: {sha256_fingerprint(made.cert.read_text())}")
    click.echo(f"serve with: modelserve up --tls-cert {made.cert} --tls-key {made.key}")


@tls.command()
@click.argument("cert", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def fingerprint(cert: Path) -> None:
    """Print the SHA-256 fingerprint of a PEM certificate (what a client pins)."""
    click.echo(sha256_fingerprint(cert.read_text()))
