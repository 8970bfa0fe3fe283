"""The development side: `delivery key` and `delivery remote add` on a real git checkout."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cli_helpers import assert_user_error, run_cli


def _config(checkout: Path, key: str) -> str:
    """One git config value of a checkout."""
    return subprocess.run(["git", "config", "--get", key], cwd=checkout, capture_output=True,
                          text=True, check=True).stdout.strip()


def test_remote_add_points_at_production_and_pushes_with_the_deploy_key(tmp_path: Path):
    """Added once, unchanged the second time, updated when the host changes."""
    checkout = tmp_path / "dev"
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    key = tmp_path / "keys" / "deploy"
    args = ("delivery", "remote", "add", "production", "deploy@prod.example", "--key", key,
            "--checkout", checkout)
    first = run_cli(*args, home=tmp_path / "home")
    assert first.returncode == 0 and "added: remote production" in first.stdout, first.stderr
    assert "unchanged" in run_cli(*args, home=tmp_path / "home").stdout
    url = _config(checkout, "remote.production.url")
    assert url == "deploy@prod.example:.local/share/modelserve/delivery/models.git"
    assert f"-i {key.resolve()}" in _config(checkout, "core.sshCommand")
    assert key.is_file() and (key.parent / "deploy.pub").read_text().startswith("ssh-ed25519")
    moved = run_cli("delivery", "remote", "add", "production", "deploy@new.example", "--key",
                    key, "--checkout", checkout, home=tmp_path / "home")
    assert "updated" in moved.stdout
    assert _config(checkout, "remote.production.url").startswith("deploy@new.example:")


def test_a_destination_without_an_account_is_refused(tmp_path: Path):
    """USER@HOST is required: the deploy account is part of the contract."""
    subprocess.run(["git", "init", "-q", str(tmp_path / "dev")], check=True)
    result = run_cli("delivery", "remote", "add", "production", "prod.example", "--key",
                     tmp_path / "k", "--checkout", tmp_path / "dev", home=tmp_path / "home")
    assert_user_error(result, "USER@HOST")
