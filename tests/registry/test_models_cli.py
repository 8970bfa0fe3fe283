"""`modelserve models ...` through click's test runner, on a real registry directory."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from modelserve.commands.models import EMPTY_HINT, models
from modelserve.config import Settings
from modelserve.model.bundle import MODEL_FILE, BundleError
from modelserve.registry import Registry, RegistryError


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


@pytest.fixture
def store(settings: Settings, checker: Any) -> Registry:
    """The registry the commands use, filled through the API with the TensorFlow-free checker."""
    return Registry(settings.registry_dir, checker=checker)


def run(settings: Settings, *args: str) -> Result:
    """Invoke `models ARGS...` with the settings the top-level group would put on the context."""
    return CliRunner().invoke(models, list(args), obj=settings)


def add_three(store: Registry, bundles: Any) -> list[str]:
    """Register bundles 1, 2 and 3; return their versions."""
    versions = []
    for number in (1, 2, 3):
        path, version = bundles.make(number)
        store.add(path, source=str(path))
        versions.append(version)
    return versions


def test_list_on_an_empty_store_says_how_to_get_a_model(settings: Settings) -> None:
    result = run(settings, "list")
    assert result.exit_code == 0
    assert result.output.strip() == EMPTY_HINT


def test_list_shows_version_created_metrics_source_and_the_active_marker(
    settings: Settings, store: Registry, bundles: Any
) -> None:
    v1, v2, v3 = add_three(store, bundles)
    store.activate(v2, source="test")
    result = run(settings, "list")
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split() == ["VERSION", "CREATED", "(UTC)", "TASK", "METRIC", "SOURCE",
                              "RUNTIME", "ACTIVE", "FILES"]
    assert [row.split()[0] for row in rows] == [v1, v2, v3]
    assert rows[1].split() == [v2, "2026-01-01", "00:00", "binary", "accuracy", "0.702", "test",
                               "keras", "*", "ok"]  # this store's checker derives no plan
    assert rows[0].split()[-1] == rows[2].split()[-1] == "ok"  # no * on the others


def test_activate_rollback_and_history(settings: Settings, store: Registry, bundles: Any) -> None:
    v1, v2, _v3 = add_three(store, bundles)
    result = run(settings, "activate", v1[:4], "--reason", "first model")
    assert (result.exit_code, result.output) == (0, f"active: {v1} (was nothing)\n")
    result = run(settings, "activate", v2)
    assert result.output == f"active: {v2} (was {v1})\n"
    assert run(settings, "activate", v2).output == f"{v2} is already active\n"

    result = run(settings, "rollback", "--reason", "worse on new data")
    assert (result.exit_code, result.output) == (0, f"rolled back: {v1} is active (was {v2})\n")
    assert store.active_version() == v1

    result = run(settings, "history")
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split()[:4] == ["WHEN", "(UTC)", "ACTION", "VERSION"]
    assert [row.split()[2:5] for row in rows[3:]] == [
        ["activate", v1, "-"],
        ["activate", v2, v1],
        ["rollback", v1, v2],
    ]
    assert re.search(r" cli +first model ", rows[3]) and "worse on new data" in rows[5]
    source = rows[0].split()[5]  # a long source path keeps its end
    assert source.startswith("...") and source.endswith("/bundles/bundle-1") and len(source) == 40
    assert store.history()[-1]["user"] in rows[5]

    limited = run(settings, "history", "--limit", "1").output.splitlines()
    assert len(limited) == 2 and "rollback" in limited[1]


def test_history_of_an_empty_store(settings: Settings) -> None:
    assert run(settings, "history").output == "no changes recorded yet\n"


def test_unknown_version_and_bad_ids_are_user_errors(settings: Settings, store: Registry) -> None:
    result = run(settings, "activate", "abcdef")
    assert result.exit_code == 1
    assert isinstance(result.exception, RegistryError)
    assert str(result.exception) == "unknown model version 'abcdef'; see `modelserve models list`"
    result = run(settings, "activate", "../x")
    assert isinstance(result.exception, RegistryError)
    assert "'../x' is not a model version" in str(result.exception)


def test_rollback_with_nothing_to_roll_back_to(settings: Settings) -> None:
    result = run(settings, "rollback")
    assert result.exit_code == 1
    assert isinstance(result.exception, RegistryError)
    assert str(result.exception).startswith("nothing to roll back to")


def test_add_refuses_a_corrupt_bundle(settings: Settings, store: Registry, bundles: Any) -> None:
    path, _version = bundles.make(1)
    (path / MODEL_FILE).write_bytes(b"not the model that was hashed")
    result = run(settings, "add", str(path))
    assert result.exit_code == 1
    assert isinstance(result.exception, BundleError)
    assert "model.keras does not match its sha256" in str(result.exception)
    assert store.list_versions() == [] and store.history() == []


def test_add_of_a_registered_bundle_adds_nothing_and_can_activate_it(
    settings: Settings, store: Registry, bundles: Any
) -> None:
    path, version = bundles.make(1)
    store.add(path, source="test")
    result = run(settings, "add", str(path), "--activate", "--reason", "ship it")
    assert result.exit_code == 0, result.output
    assert result.output == (
        f"{version} is already registered; nothing added\nactive: {version} (was nothing)\n"
    )
    assert [(e["action"], e["reason"]) for e in store.history()] == [
        ("add", ""),
        ("activate", "ship it"),
    ]


def test_through_the_top_level_command(tmp_path: Path, bundles: Any, checker: Any) -> None:
    from modelserve.cli import main  # imports every command module, not only ours

    home = tmp_path / "elsewhere"
    runner = CliRunner(env={"MODELSERVE_HOME": str(home)})
    assert runner.invoke(main, ["models", "list"]).output.strip() == EMPTY_HINT

    result = runner.invoke(main, ["models", "rollback"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: nothing to roll back to")
    assert "Traceback" not in result.output

    path, version = bundles.make(1)
    Registry(home / "registry", checker=checker).add(path, source="test")
    result = runner.invoke(
        main, ["models", "activate", "ffff" if version[:4] != "ffff" else "0000"]
    )
    assert result.exit_code == 1
    assert result.output.startswith("Error: unknown model version")
    assert "Traceback" not in result.output
    result = runner.invoke(main, ["models", "activate", version[:5]])
    assert (result.exit_code, result.output) == (0, f"active: {version} (was nothing)\n")
