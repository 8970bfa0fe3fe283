"""Which models a pushed commit holds and which a push deploys: the pure rules of layout.py."""

from __future__ import annotations

import pytest

from modelserve.delivery.layout import (
    LayoutError,
    deployed_models,
    model_folders,
    removed_models,
)


def test_root_files_are_the_default_model_and_each_folder_a_model_of_its_name():
    """Root = the default model, NAME/ = NAME; other files and deeper folders are not models."""
    paths = ["model.json", "model.h5", "README", "iris/model.keras", "iris/manifest.json",
             "iris/notes/model.keras", "scripts/train.sh", "wine/model.json"]
    assert model_folders(paths, "", "diabetes") == {
        "diabetes": "", "iris": "iris", "wine": "wine"}


def test_the_configured_folder_is_the_model_area():
    """With --folder models, models/ holds the default model and models/NAME/ the others."""
    paths = ["model.keras", "models/model.keras", "models/manifest.json",
             "models/iris/model.keras", "iris/model.keras"]
    assert model_folders(paths, "models", "diabetes") == {
        "diabetes": "models", "iris": "models/iris"}


def test_a_repository_of_folders_only_has_no_default_model():
    """No files at the root: the push holds only the models its folders name."""
    assert model_folders(["iris/model.keras"], "", "diabetes") == {"iris": "iris"}
    assert model_folders(["README"], "", "diabetes") == {}


def test_a_folder_that_is_not_a_model_name_is_refused_naming_it():
    """Upper case or spaces cannot name a model (a URL, a queue, a label): one line."""
    with pytest.raises(LayoutError, match=r"^refused: My Model/ holds model files, and "
                                          r"'My Model' is not a model name"):
        model_folders(["My Model/model.keras"], "", "diabetes")


def test_the_default_model_at_the_root_and_in_its_folder_is_refused():
    """diabetes/ and the root would both be the default model: which one is meant is unclear."""
    with pytest.raises(LayoutError, match="both in the repository root and in diabetes/"):
        model_folders(["model.keras", "diabetes/model.keras"], "", "diabetes")


def test_only_changed_models_or_files_that_failed_to_go_live_are_deployed():
    """Unchanged files stay as they are (a rollback on the server too); failed ones are retried."""
    before = {"diabetes": "a", "iris": "b", "wine": "c"}
    after = {"diabetes": "a", "iris": "B", "wine": "c", "new": "d"}
    failed = {("wine", "c")}
    assert deployed_models(before, after, lambda name, files: (name, files) in failed) == [
        "iris", "new", "wine"]
    assert deployed_models(before, after, lambda name, files: False) == ["iris", "new"]
    assert deployed_models({}, {"diabetes": "a"}, lambda name, files: False) == ["diabetes"]


def test_a_model_whose_files_are_gone_is_reported_removed():
    """A push never retires a model: the gate only says so."""
    assert removed_models({"diabetes": "a", "iris": "b"}, {"diabetes": "a"}) == ["iris"]
    assert removed_models({"iris": "b"}, {"iris": "c"}) == []
