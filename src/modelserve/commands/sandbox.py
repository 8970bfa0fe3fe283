"""`modelserve sandbox`: where model files are loaded, and installing what confines them."""

from __future__ import annotations

import click

from modelserve.errors import UserError
from modelserve.sandbox.policy import SANDBOX_USER, Backend, refusal
from modelserve.sandbox.runner import (
    current_choice,
    gather_facts,
    interpreter_paths,
    python_path,
    sudo_allows_jobs,
)
from modelserve.sandbox.setup import ensure_sandbox_user, install_rule, remove_rule, require_root


@click.group()
def sandbox() -> None:
    """The sandbox that model checks, conversions and gate scoring run in."""


@sandbox.command()
def status() -> None:
    """Say which sandbox this account's model jobs would run in, and why."""
    choice = current_choice()
    if choice.backend is None:
        raise UserError(choice.reason)
    if choice.backend is Backend.SUDO and not sudo_allows_jobs():
        raise UserError(refusal(gather_facts().user))
    click.echo(f"sandbox: {choice.backend.value}: {choice.reason}")
    click.echo(f"interpreter: {python_path()} (read-only inside: "
               f"{', '.join(interpreter_paths())})")


@sandbox.command()
@click.option("--for-user", "user", help="Let this (non-root) account run confined jobs "
              "through a sudo rule.")
@click.option("--trust-install", is_flag=True, help="Allow an installation the account can "
              "change (a developer's own checkout; the account may become root anyway).")
def setup(user: str | None, trust_install: bool) -> None:
    """Create the sandbox's system user and, with --for-user, the sudo rule (root only)."""
    require_root("modelserve sandbox setup")
    made = ensure_sandbox_user()
    click.echo(f"{'created' if made else 'exists'}: system user {SANDBOX_USER}")
    if user:
        path, changed = install_rule(user, trust_install=trust_install)
        click.echo(f"{'installed' if changed else 'unchanged'}: {path} ({user} may run the "
                   "confined jobs check, convert and score as root, nothing else)")


@sandbox.command()
@click.option("--for-user", "user", required=True, help="The account whose rule goes.")
def remove(user: str) -> None:
    """Remove an account's sudo rule (root only)."""
    removed = remove_rule(user)
    click.echo(f"{'removed' if removed else 'absent'}: the sandbox rule of {user}")
