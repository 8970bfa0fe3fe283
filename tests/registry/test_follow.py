"""A worker host's registry follows production's with `modelserve models follow` (real rsync)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cli_helpers import run_cli
from serving.conftest import prepare_home, version_of_seed

from modelserve.model.bundle import verify_integrity
from modelserve.registry import Registry
from modelserve.registry.catalog import Catalog
from modelserve.registry.store import PLAN_FILE

pytestmark = pytest.mark.slow  # root: each home's seed model is checked in the sandbox


@pytest.fixture
def production(tmp_path: Path, shared_data: Path, pima_csv: Path) -> Path:
    """A production home with both seed models registered and the production one live."""
    home = tmp_path / "production"
    # The session's template with that `models activate` already run on it (serving/conftest).
    prepare_home(home, shared_data, pima_csv, ("production", "development"), active="production")
    return home


def follow_once(production: Path, follower: Path):
    """One round of following production's registry folder."""
    return run_cli("models", "follow", f"{production / 'registry'}/", "--once", home=follower)


def served(home: Path) -> dict[str, str]:
    """The version each model of a home serves."""
    return Catalog(home / "registry").served()


@pytest.fixture
def three_models(production: Path) -> Path:
    """Production serving three models: diabetes (the default), alpha and beta, the last two
    under models/ and registered from the seed versions (alpha has both, beta one)."""
    stored = production / "registry" / "versions"
    catalog = Catalog(production / "registry", checker=lambda staged: _checked_plan(stored, staged))
    seeds = [version_of_seed(production, seed) for seed in ("production", "development")]
    for name, versions in (("alpha", seeds), ("beta", seeds[:1])):
        registry = catalog.registry_for_new(name)
        for version in versions:
            registry.add(stored / version, source="test")
        registry.activate(versions[0], source="test")
    # What must never be copied: a model's staging area, lock and history stay production's.
    (production / "registry" / "models" / "alpha" / "staging" / "add-x").mkdir(parents=True)
    return production


def _checked_plan(stored: Path, staged: Path) -> None:
    """Check a copy of a version production stores by taking the plan its own check derived.

    Setup only (the sandbox's check of the same bytes writes the same plan, ~10 s a model);
    every model the follower registers is still checked by `models follow` itself.
    """
    version = verify_integrity(staged).version
    shutil.copyfile(stored / version / PLAN_FILE, staged / PLAN_FILE)


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


def test_a_follower_carries_every_model_through_a_swap_and_a_retirement(three_models, tmp_path):
    """Three models reach the follower; a swap of one and a retirement of another follow, and
    a model whose copy is corrupt does not stop the others."""
    production, follower = three_models, tmp_path / "worker-host"
    first = follow_once(production, follower)
    assert first.returncode == 0, first.stderr
    assert served(follower) == served(production) and len(served(follower)) == 3
    for name, version in served(production).items():
        assert f"{name}: now serving {version}" in first.stdout
    copied = {str(path.relative_to(follower / "mirror"))
              for path in (follower / "mirror").rglob("*") if "versions/" not in str(path)}
    assert copied == {"active", "versions", "models", "models/alpha", "models/beta",
                      "models/alpha/active", "models/alpha/versions", "models/beta/active",
                      "models/beta/versions"}

    production_models = Catalog(production / "registry")
    better = version_of_seed(production, "development")
    production_models.registry("alpha").activate(better, source="test")
    production_models.registry("beta").retire(source="test")
    second = follow_once(production, follower)
    assert second.returncode == 0, second.stderr
    assert served(follower) == served(production) and "beta" not in served(follower)
    assert second.stdout.count("now serving") == 1 and f"alpha: now serving {better}" in \
        second.stdout
    assert "beta: retired" in second.stdout
    assert Registry(follower / "registry" / "models" / "beta").history()[-1]["action"] == "retire"

    # alpha (first by name) fails: the version production goes back to is corrupt in its copy.
    # diabetes, after it, is still followed.
    first_alpha = version_of_seed(production, "production")
    model = production / "registry" / "models" / "alpha" / "versions" / first_alpha / "model.keras"
    model.chmod(0o644)
    model.write_bytes(b"not a model")
    production_models.registry("alpha").rollback(source="test")
    assert run_cli("models", "activate", better, home=production).returncode == 0
    third = follow_once(production, follower)
    assert third.returncode != 0 and "alpha:" in third.stderr and "sha256" in third.stderr
    assert "Traceback" not in third.stderr and "could not follow alpha" in third.stderr
    assert f"diabetes: now serving {better}" in third.stdout
    assert served(follower) == {"alpha": better, "diabetes": better}
