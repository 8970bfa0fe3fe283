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
from modelserve.registry.catalog import Catalog


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
    assert header.split() == ["MODEL", "VERSION", "CREATED", "(UTC)", "TASK", "METRIC",
                              "SOURCE", "RUNTIME", "ACTIVE", "FILES"]
    assert [row.split()[1] for row in rows] == [v1, v2, v3]
    assert rows[1].split() == ["diabetes", v2, "2026-01-01", "00:00", "binary", "accuracy",
                               "0.702", "test", "keras", "*", "ok"]  # no plan: test checker
    assert rows[0].split()[-1] == rows[2].split()[-1] == "ok"  # no * on the others


def test_activate_rollback_and_history(settings: Settings, store: Registry, bundles: Any) -> None:
    v1, v2, _v3 = add_three(store, bundles)
    result = run(settings, "activate", v1[:4], "--reason", "first model")
    assert (result.exit_code, result.output) == (0, f"active: {v1} (was nothing)\n")
    result = run(settings, "activate", v2)
    assert result.output == f"active: {v2} (was {v1})\n"
    assert run(settings, "activate", v2).output == f"{v2} is already active\n"

    result = run(settings, "rollback", "--reason", "worse on new data")
    assert result.exit_code == 0
    assert result.output == f"rolled back diabetes: {v1} is active (was {v2})\n"
    assert store.active_version() == v1

    result = run(settings, "history")
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split()[:5] == ["WHEN", "(UTC)", "MODEL", "ACTION", "VERSION"]
    assert [row.split()[3:6] for row in rows[3:]] == [
        ["activate", v1, "-"],
        ["activate", v2, v1],
        ["rollback", v1, v2],
    ]
    assert re.search(r" cli +first model ", rows[3]) and "worse on new data" in rows[5]
    source = rows[0].split()[6]  # a long source path keeps its end
    assert source.startswith("...") and source.endswith("/bundles/bundle-1") and len(source) == 40
    assert store.history()[-1]["user"] in rows[5]

    limited = run(settings, "history", "--limit", "1").output.splitlines()
    assert len(limited) == 2 and "rollback" in limited[1]


def test_history_of_an_empty_store(settings: Settings) -> None:
    assert run(settings, "history").output == "no changes recorded yet\n"


def test_unknown_version_and_bad_ids_are_user_errors(
    settings: Settings, store: Registry, bundles: Any
) -> None:
    store.add(bundles.make(1)[0], source="test")
    result = run(settings, "activate", "abcdef")
    assert result.exit_code == 1
    assert isinstance(result.exception, RegistryError)
    assert str(result.exception) == "unknown model version 'abcdef'; see `modelserve models list`"
    result = run(settings, "activate", "../x")
    assert isinstance(result.exception, RegistryError)
    assert "'../x' is not a model version" in str(result.exception)


def test_rollback_with_nothing_to_roll_back_to(
    settings: Settings, store: Registry, bundles: Any
) -> None:
    result = run(settings, "rollback")
    assert str(result.exception) == "no model named 'diabetes'; the models here: none yet"
    path, version = bundles.make(1)
    store.add(path, source="test")
    store.activate(version, source="test")
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
        f"{version} is already registered as diabetes; nothing added\n"
        f"active: {version} (was nothing)\n"
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
    assert result.output.startswith("Error: no model named 'diabetes'")
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


def many(settings: Settings, checker: Any) -> Catalog:
    """The catalog the commands use, with the TensorFlow-free checker."""
    return Catalog(settings.registry_dir, settings.model_name, checker)


def test_models_by_name_list_activate_rollback_history_retire_remove(
    settings: Settings, bundles: Any, checker: Any
) -> None:
    catalog = many(settings, checker)
    (p1, v1), (p2, v2), (p3, v3) = bundles.make(1), bundles.make(2), bundles.make(3)
    iris, wine = catalog.registry_for_new("iris"), catalog.registry_for_new("wine")
    for registry, path in ((iris, p1), (iris, p2), (wine, p3)):
        registry.add(path, source="test")
    assert run(settings, "activate", "iris", v1).output == f"active: {v1} (was nothing)\n"
    assert run(settings, "activate", "iris", v2[:6]).output == f"active: {v2} (was {v1})\n"
    assert run(settings, "activate", "wine", v3).exit_code == 0

    rows = run(settings, "list").output.splitlines()[1:]
    assert [(row.split()[0], row.split()[1], "*" in row.split()) for row in rows] == [
        ("iris", v1, False), ("iris", v2, True), ("wine", v3, True)]
    only = run(settings, "list", "--name", "wine").output.splitlines()[1:]
    assert [row.split()[:2] for row in only] == [["wine", v3]]

    result = run(settings, "rollback", "iris", "--reason", "worse")
    assert result.output == f"rolled back iris: {v1} is active (was {v2})\n"
    assert wine.active_version() == v3  # the other model is untouched
    history = run(settings, "history", "wine").output.splitlines()[1:]
    assert [row.split()[2:4] for row in history] == [["wine", "add"], ["wine", "activate"]]
    everything = run(settings, "history", "--limit", "0").output.splitlines()[1:]
    assert sorted({row.split()[2] for row in everything}) == ["iris", "wine"]
    assert len(everything) == 7

    result = run(settings, "activate", "cancer", v1)
    assert str(result.exception) == "no model named 'cancer'; the models here: iris, wine"
    retired = run(settings, "retire", "wine").output
    assert retired == f"retired wine: it is no longer served (was {v3})\n"
    assert catalog.served() == {"iris": v1}
    assert "wine is retired" in run(settings, "list").output
    assert run(settings, "retire", "wine", "--remove").output == "removed wine and its versions\n"
    assert catalog.names() == ["iris"]
    result = run(settings, "retire", "iris", "--remove")
    assert result.output.startswith("retired iris") and catalog.names() == []


def test_add_by_name_creates_the_model(settings: Settings, bundles: Any) -> None:
    path, version = bundles.make(1)
    result = run(settings, "add", str(path), "--name", "Iris")
    assert "'Iris' is not a model name" in str(result.exception)
    catalog = Catalog.of(settings)
    assert catalog.names() == []
    # The real checker would start TensorFlow in the sandbox; the store takes a pre-checked add.
    many(settings, lambda staged: None).registry_for_new("iris").add(path, source="test")
    result = run(settings, "add", str(path), "--name", "iris", "--activate")
    assert result.output == (f"{version} is already registered as iris; nothing added\n"
                             f"active: {version} (was nothing)\n")
    assert catalog.served() == {"iris": version}
    result = run(settings, "retire", "diabetes")
    assert str(result.exception) == "no model named 'diabetes'; the models here: iris"
