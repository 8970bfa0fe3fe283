"""Many models in one registry: names, an old single-model home taken over, retirement."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from modelserve.registry import Registry, RegistryError
from modelserve.registry.catalog import Catalog, UnknownModel, check_name


def catalog_at(root: Path, checker: Any) -> Catalog:
    return Catalog(root, "diabetes", checker)


def test_models_keep_their_own_versions_links_and_histories(
    registry_root: Path, bundles: Any, checker: Any
) -> None:
    catalog = catalog_at(registry_root, checker)
    (path1, v1), (path2, v2) = bundles.make(1), bundles.make(2)
    iris, diabetes = catalog.registry_for_new("iris"), catalog.registry_for_new("diabetes")
    iris.add(path1, source="test")
    iris.activate(v1, source="test")
    diabetes.add(path2, source="test")
    diabetes.activate(v2, source="test")

    assert catalog.names() == ["diabetes", "iris"]
    assert catalog.served() == {"diabetes": v2, "iris": v1}
    assert [info.version for info in catalog.registry("iris").list_versions()] == [v1]
    assert iris.root == registry_root / "models" / "iris"
    assert diabetes.root == registry_root  # the default model is where a one-model home kept it
    assert [e["action"] for e in catalog.registry("iris").history()] == ["add", "activate"]


def test_a_home_written_before_names_is_the_default_model_as_it_is(
    registry_root: Path, bundles: Any, checker: Any
) -> None:
    # Written the way every release before names wrote a home: one Registry at the root.
    (path1, v1), (path2, v2) = bundles.make(1), bundles.make(2)
    old = Registry(registry_root, checker=checker)
    for path, version in ((path1, v1), (path2, v2)):
        old.add(path, source="test")
        old.activate(version, source="test")
    before = sorted(str(p.relative_to(registry_root)) for p in registry_root.rglob("*"))

    catalog = catalog_at(registry_root, checker)
    assert catalog.names() == ["diabetes"]
    assert catalog.served() == {"diabetes": v2}
    assert catalog.resolve_default() == "diabetes"
    assert catalog.registry("diabetes").rollback(source="test").version == v1
    after = sorted(str(p.relative_to(registry_root)) for p in registry_root.rglob("*"))
    assert after == before  # nothing moved or rewritten to take it over


def test_an_unknown_model_is_refused_naming_the_models_there_are(
    registry_root: Path, bundles: Any, checker: Any
) -> None:
    catalog = catalog_at(registry_root, checker)
    with pytest.raises(UnknownModel, match="no model named 'iris'; the models here: none yet"):
        catalog.registry("iris")
    path, _ = bundles.make(1)
    catalog.registry_for_new("wine").add(path, source="test")
    catalog.registry_for_new("cancer").add(path, source="test")
    with pytest.raises(UnknownModel, match="the models here: cancer, wine$"):
        catalog.registry("iris")


@pytest.mark.parametrize("name", ["", "Iris", "../etc", "a/b", "a.b", "-x", "x" * 49, "ir is"])
def test_a_name_that_is_not_plain_is_refused(name: str) -> None:
    with pytest.raises(RegistryError, match="is not a model name"):
        check_name(name)


def test_the_default_is_the_named_model_else_the_only_one_served(
    registry_root: Path, bundles: Any, checker: Any
) -> None:
    catalog = catalog_at(registry_root, checker)
    (path1, v1), (path2, v2) = bundles.make(1), bundles.make(2)
    assert catalog.resolve_default() is None
    iris = catalog.registry_for_new("iris")
    iris.add(path1, source="test")
    iris.activate(v1, source="test")
    assert catalog.resolve_default() == "iris"
    wine = catalog.registry_for_new("wine")
    wine.add(path2, source="test")
    wine.activate(v2, source="test")
    assert catalog.resolve_default() is None  # two served, neither is the default name


def test_retiring_stops_serving_keeps_versions_and_activation_brings_it_back(
    registry: Registry, bundles: Any
) -> None:
    (path1, v1), (path2, v2) = bundles.make(1), bundles.make(2)
    for path, version in ((path1, v1), (path2, v2)):
        registry.add(path, source="test")
        registry.activate(version, source="test")
    assert registry.retire(source="cli", reason="replaced") == v2
    assert registry.active_version() is None
    assert not os.path.lexists(registry.root / "active")
    assert [info.version for info in registry.list_versions()] == [v1, v2]
    event = registry.history()[-1]
    assert (event["action"], event["version"], event["previous"]) == ("retire", None, v2)
    with pytest.raises(RegistryError, match="nothing to retire"):
        registry.retire(source="cli")
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback(source="cli")
    registry.activate(v1, source="cli")
    assert registry.active_version() == v1
    assert not registry.recoveries  # the history agreed with the link all along
