"""`modelserve tokens create|list|revoke` through the real click group (CliRunner)."""

from __future__ import annotations

import stat
from pathlib import Path

from click.testing import CliRunner

from modelserve.auth.store import TokenStore
from modelserve.auth.tokens import looks_like_token
from modelserve.cli import main


def _runner(home: Path) -> CliRunner:
    return CliRunner(env={"MODELSERVE_HOME": str(home)})


def test_create_shows_the_token_once_and_list_never(tmp_path: Path, reliability):
    """create prints the token on stdout once; list and the file never hold it; revoke works."""
    home = tmp_path / "home"
    runner = _runner(home)
    made = runner.invoke(main, ["tokens", "create", "--name", "billing", "--scope", "predict",
                                "--expires-days", "30"])
    assert made.exit_code == 0, made.output
    token = made.stdout.strip()
    assert looks_like_token(token) and "shown this once" in made.stderr
    assert "expires" in made.stderr and "scope predict" in made.stderr
    operator = runner.invoke(main, ["tokens", "create", "--name", "ops", "--scope", "operate"])
    assert operator.exit_code == 0
    listing = runner.invoke(main, ["tokens", "list"])
    assert listing.exit_code == 0
    lines = listing.output.splitlines()
    assert lines[0].split()[:2] == ["NAME", "SCOPE"]
    assert "billing" in lines[1] and "predict" in lines[1] and "valid" in lines[1]
    assert "ops" in lines[2] and "operate" in lines[2] and lines[2].split()[4] == "-"
    store_file = home / "auth" / "tokens.json"
    for text in (listing.output, store_file.read_text()):
        assert token not in text and operator.stdout.strip() not in text
    assert stat.S_IMODE(store_file.stat().st_mode) == 0o600

    revoked = runner.invoke(main, ["tokens", "revoke", "billing"])
    assert revoked.exit_code == 0 and "revoked token 'billing'" in revoked.output
    assert "revoked" in runner.invoke(main, ["tokens", "list"]).output.splitlines()[1]
    assert TokenStore(home).find(token) is None
    reliability.record("Security", "tokens on the command line", tokens_created=2,
                       token_shown_times=1, token_in_list=0, token_in_store_file=0,
                       note="stored as sha256 in auth/tokens.json (0600); revoke is immediate")


def test_refusals_are_one_line(tmp_path: Path):
    """A taken name, an unknown token, a bad scope or lifetime: exit 1 or 2, no traceback."""
    runner = _runner(tmp_path / "home")
    assert runner.invoke(main, ["tokens", "create", "--name", "a"]).exit_code == 0
    cases = {
        ("tokens", "create", "--name", "a"): "exists",
        ("tokens", "revoke", "nobody"): "no unrevoked token",
        ("tokens", "create", "--name", "b", "--scope", "root"): "'root' is not one of",
        ("tokens", "create", "--name", "c", "--expires-days", "0"): "0 is not in the range",
        ("tokens", "create", "--name", "bad name"): "must be 1-64",
    }
    for args, words in cases.items():
        result = runner.invoke(main, list(args))
        assert result.exit_code in (1, 2), (args, result.output)
        assert words in result.output and "Traceback" not in result.output, result.output
    empty = _runner(tmp_path / "other").invoke(main, ["tokens", "list"])
    assert "no tokens yet" in empty.output
