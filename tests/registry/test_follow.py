"""A worker host's registry follows production's with `modelserve models follow` (real rsync)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import run_cli
from serving.conftest import prepare_home, version_of_seed

from modelserve.registry import Registry

pytestmark = pytest.mark.slow  # root: each home's seed model is checked in the sandbox


@pytest.fixture
def production(tmp_path: Path, shared_data: Path, pima_csv: Path) -> Path:
    """A production home with both seed models registered and the production one live."""
    home = tmp_path / "production"
    prepare_home(home, shared_data, pima_csv, ("production", "development"))
    assert run_cli("models", "activate", version_of_seed(home, "production"),
                   home=home).returncode == 0
    return home


def follow_once(production: Path, follower: Path):
    """One round of following production's registry folder."""
    return run_cli("models", "follow", f"{production / 'registry'}/", "--once", home=follower)


def test_a_follower_serves_what_production_serves_through_swaps_and_rollbacks(production,
                                                                                tmp_path):
    """Activation and rollback on production reach the follower; its history says why."""
    follower = tmp_path / "worker-host"
    first = follow_once(production, follower)
    assert first.returncode == 0, first.stderr
    live = Registry(production / "registry").active_version()
    assert Registry(follower / "registry").active_version() == live
    assert f"now serving {live}" in first.stdout

    better = version_of_seed(production, "development")
    assert run_cli("models", "activate", better, home=production).returncode == 0
    assert follow_once(production, follower).returncode == 0
    assert Registry(follower / "registry").active_version() == better

    assert run_cli("models", "rollback", home=production).returncode == 0
    quiet = follow_once(production, follower)
    assert Registry(follower / "registry").active_version() == live
    assert quiet.returncode == 0 and "now serving" in quiet.stdout
    again = follow_once(production, follower)
    assert "now serving" not in again.stdout  # nothing moved: nothing to do
    event = Registry(follower / "registry").history()[-1]
    assert event["reason"] == "production serves it" and event["source"].startswith("follow ")


def test_a_corrupt_copy_is_refused_and_the_follower_keeps_serving(production, tmp_path):
    """A version whose files do not match their manifest is not activated on the follower."""
    follower = tmp_path / "worker-host"
    assert follow_once(production, follower).returncode == 0
    live = Registry(follower / "registry").active_version()
    other = version_of_seed(production, "development")
    model = production / "registry" / "versions" / other / "model.keras"
    model.chmod(0o644)
    model.write_bytes(b"not a model")
    assert run_cli("models", "activate", other, home=production).returncode == 0
    result = follow_once(production, follower)
    assert result.returncode != 0 and "sha256" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert Registry(follower / "registry").active_version() == live


def test_an_unreachable_production_is_one_clear_line(tmp_path):
    """No such source: exit non-zero with what failed, no traceback."""
    result = follow_once(tmp_path / "nowhere", tmp_path / "worker-host")
    assert result.returncode != 0 and "cannot copy" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
