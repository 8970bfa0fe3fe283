"""Tokens for tests that talk to a stack requiring authentication (off loopback, or forced)."""

from __future__ import annotations

import secrets
from pathlib import Path

from cli_helpers import run_cli


def create_token(home: Path, scope: str = "predict", *extra: str) -> tuple[str, str]:
    """A new token made with the real command line for this home: (name, token)."""
    name = f"t-{secrets.token_hex(4)}"
    made = run_cli("tokens", "create", "--name", name, "--scope", scope, *extra, home=home)
    assert made.returncode == 0, made.stderr
    return name, made.stdout.strip()


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of a token."""
    return {"Authorization": f"Bearer {token}"}
