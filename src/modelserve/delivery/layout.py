"""Which models a pushed commit holds, and which of them a push deploys: pure, no git.

The model area is the repository root, or the folder `delivery init --folder` names. Model
files directly in it are the home's default model (MODELSERVE_MODEL_NAME), as a one-model
repository always had them; each NAME/ folder in it that holds model files is the model NAME.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from modelserve.errors import UserError
from modelserve.model.bundle import MANIFEST_FILE, MODEL_FILE
from modelserve.registry import RegistryError
from modelserve.registry.catalog import check_name

LEGACY_FILES = ("model.json", "model.h5")
MODEL_FILES = (MODEL_FILE, MANIFEST_FILE, *LEGACY_FILES)


class LayoutError(UserError):
    """The commit's folders do not say which model is which; the message is one line."""


def model_folders(paths: Iterable[str], area: str, default: str) -> dict[str, str]:
    """Map each model in a recursive listing of the model area to its folder in the commit."""
    prefix = f"{area}/" if area else ""
    found: dict[str, str] = {}
    for path in paths:
        parts = path[len(prefix):].split("/") if path.startswith(prefix) else []
        if not parts or parts[-1] not in MODEL_FILES or len(parts) > 2:
            continue  # not a model file, or deeper than NAME/ (a model's own subfolders)
        name, folder = (default, area) if len(parts) == 1 else (parts[0], prefix + parts[0])
        if len(parts) == 2:
            _check_folder_name(folder, name)
        if found.setdefault(name, folder) != folder:
            raise LayoutError(f"refused: the default model {name} is both in "
                              f"{_shown(area)} and in {folder}/: keep one of them")
    return found


def _check_folder_name(folder: str, name: str) -> None:
    """Refuse a model folder whose name is not a model name, in one line."""
    try:
        check_name(name)
    except RegistryError as error:
        raise LayoutError(f"refused: {folder}/ holds model files, and {error}") from None


def deployed_models(before: Mapping[str, str], after: Mapping[str, str],
                    failed: Callable[[str, str], bool]) -> list[str]:
    """The models a push deploys: files changed since the branch's last commit, or failed.

    before/after map each model to its files' id in the old and the new commit. A model whose
    files are unchanged is left as it is (a rollback on the server stays), unless those files
    were accepted once and failed to go live: the next push then tries them again.
    """
    return sorted(name for name, files in after.items()
                  if before.get(name) != files or failed(name, files))


def removed_models(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """The models whose files the new commit no longer holds (a push never retires them)."""
    return sorted(set(before) - set(after))


def _shown(area: str) -> str:
    """The model area in a message."""
    return f"{area}/" if area else "the repository root"
