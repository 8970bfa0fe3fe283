"""`modelserve tokens`: create, list and revoke the API tokens of this MODELSERVE_HOME."""

from __future__ import annotations

from datetime import datetime

import click

from modelserve.auth.store import TokenStore
from modelserve.auth.tokens import MAX_EXPIRY_DAYS, Scope, utcnow
from modelserve.config import Settings


@click.group()
def tokens() -> None:
    """Create, list and revoke API tokens (needed when the web app listens off loopback)."""


@tokens.command("create")
@click.option("--name", required=True, help="Who or what uses it, e.g. `billing-service`.")
@click.option("--scope", type=click.Choice([s.value for s in Scope]), default="predict",
              show_default=True,
              help="predict: the API, v2 inference and the pages; operate: also /metrics and "
                   "/models.")
@click.option("--expires-days", type=click.IntRange(1, MAX_EXPIRY_DAYS), default=None,
              help="Expire after this many days (default: never).")
@click.pass_obj
def create_command(settings: Settings, name: str, scope: str, expires_days: int | None) -> None:
    """Make a token and print it once: only its hash is stored."""
    token, record = TokenStore(settings.home).create(name, scope, expires_days)
    click.echo(token)
    expiry = f"expires {_stamp(record.expires)}" if record.expires else "does not expire"
    click.echo(f"created token {record.name!r} (scope {record.scope.value}, {expiry}); it is "
               "shown this once: store it now. Use it as `Authorization: Bearer TOKEN`.",
               err=True)


@tokens.command("list")
@click.pass_obj
def list_command(settings: Settings) -> None:
    """Show every token's name, scope, dates and state (never the token)."""
    records = TokenStore(settings.home).records()
    if not records:
        click.echo("no tokens yet; make one with `modelserve tokens create --name NAME`")
        return
    now = utcnow()
    header = ("NAME", "SCOPE", "CREATED (UTC)", "EXPIRES (UTC)", "REVOKED (UTC)", "STATE")
    rows = [(r.name, r.scope.value, _stamp(r.created), _stamp(r.expires), _stamp(r.revoked),
             r.state(now)) for r in records]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                   .rstrip())


@tokens.command("revoke")
@click.argument("name")
@click.pass_obj
def revoke_command(settings: Settings, name: str) -> None:
    """Revoke the token NAME: every web process refuses it from its next request on."""
    record = TokenStore(settings.home).revoke(name)
    click.echo(f"revoked token {record.name!r}; its sessions are logged out")


def _stamp(moment: datetime | None) -> str:
    """A UTC time for a listing, or a dash."""
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"
