"""The pre-receive gate: nothing reaches production that does not load, fit and score well.

Each model the push deploys (layout.py: the root for the default model, NAME/ for the
others) is materialized from the pushed commit (still in git's quarantine), converted if it
is a legacy pair, checked in the sandbox, compared with that model's live input contract,
and scored (in the sandbox too) against its live version on the rows of its own stored data.
Only a push whose models all pass is kept, under pending/<commit>, for the post-receive hook.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from modelserve.config import Settings
from modelserve.delivery import pushed
from modelserve.delivery.access import PUSHER_ENV
from modelserve.delivery.comparison import (
    Comparison,
    compare,
    contract_refusal,
    data_refusal,
    task_metrics,
)
from modelserve.delivery.config import DeliveryConfig, delivery_dir
from modelserve.delivery.known import failed_before, version_deployed_from
from modelserve.delivery.layout import (
    LEGACY_FILES,
    MODEL_FILES,
    deployed_models,
    model_folders,
    removed_models,
)
from modelserve.delivery.pushed import GitReadError
from modelserve.delivery.refs import (
    ZERO,
    TreeEntry,
    model_file_refusal,
    ref_refusal,
    too_large,
    too_many_entries,
)
from modelserve.errors import UserError
from modelserve.model import metrics
from modelserve.model.bundle import MANIFEST_FILE, MODEL_FILE, read_bundle_spec
from modelserve.model.dataset import DATA_FILE, TABLE_FILE, stored_dataset
from modelserve.model.holdout import HeldOut, held_out
from modelserve.model.plan import Plan
from modelserve.model.spec import Metrics, ModelSpec
from modelserve.registry import Registry, RegistryError
from modelserve.registry.catalog import Catalog
from modelserve.rollout.options import Planned, planned_rollout
from modelserve.rollout.state import RolloutError
from modelserve.sandbox.confined import (
    check_bundle_confined,
    convert_legacy_confined,
    score_confined,
)
from modelserve.sandbox.protocol import CheckResult
from modelserve.sandbox.runner import SandboxUnavailable

PLAN_FILE = "plan.npz"
NOTE_FILE = "delivery.json"
MODELS_DIR = "models"  # pending/<commit>/models/<name>/bundle: each judged model's candidate
STALE_SECONDS = 3600  # no push takes an hour between its two hooks
Say = Callable[[str], None]


class Refused(UserError):
    """The push carries something that must not go live; the message says why."""


@dataclass(frozen=True)
class Update:
    """One ref update of a push, as git hands it to the hooks."""

    old: str
    new: str
    ref: str


@dataclass(frozen=True)
class Verdict:
    """A candidate that passed: its task's metric beside the live model's, or what it restores."""

    judged: Comparison | None = None  # None for a revert (not scored again)
    earlier_version: str | None = None
    seconds: float = 0.0
    model: str = ""  # the model's name ("": not named, as a one-model line was)
    new: bool = False  # no model of this name here before this push


@dataclass(frozen=True)
class Pushed:
    """One model a push deploys: its name, its folder in the commit, its files' id."""

    name: str
    folder: str  # "" for the repository root
    files_id: str
    new: bool  # this server has no model of this name yet


@dataclass(frozen=True)
class Live:
    """The version production serves: where the registry keeps it, and its spec."""

    version: str
    path: Path
    spec: ModelSpec


def read_updates(text: str) -> list[Update]:
    """Parse the hooks' stdin: one `old new ref` line per updated ref."""
    return [Update(*line.split()) for line in text.splitlines() if line.strip()]


def push_options(env: Mapping[str, str]) -> dict[str, str]:
    """The `git push -o key[=value]` options, as a dict."""
    options = {}
    for i in range(int(env.get("GIT_PUSH_OPTION_COUNT", "0") or 0)):
        key, _, value = env.get(f"GIT_PUSH_OPTION_{i}", "").partition("=")
        options[key.strip()] = value.strip()
    return options


def pending_dir(settings: Settings, commit: str) -> Path:
    """Where a candidate that passed the gate waits for post-receive."""
    return delivery_dir(settings) / "pending" / commit


def pre_receive(settings: Settings, config: DeliveryConfig, updates: list[Update],
                options: dict[str, str], say: Say) -> None:
    """Refuse what must not be stored, then judge the deployed branch; Refused refuses all."""
    _check_limits(config, updates)
    branch_ref = f"refs/heads/{config.branch}"
    for update in updates:
        if update.ref != branch_ref:
            say(f"{update.ref}: stored, not deployed (only {config.branch} deploys)")
            continue
        for line in judge_push(settings, config, update, options, say):
            say(line)


def _check_limits(config: DeliveryConfig, updates: list[Update]) -> None:
    """Every ref's rules, the tree-entry cap of every new commit, fast-forwards and sizes."""
    for update in updates:
        if refusal := ref_refusal(update.ref, update.old, update.new, config):
            raise Refused(refusal)
    tips = [_pushed_commit(update) for update in updates]
    # First of all the content checks: nothing below lists a tree that may hold 200,000 files.
    for tree, commit in pushed.new_trees(tips).items():
        count = pushed.count_entries(tree, config.max_tree_entries)
        if refusal := too_many_entries(commit, count, config.max_tree_entries):
            raise Refused(refusal)
    for update, tip in zip(updates, tips, strict=True):
        if update.ref.startswith("refs/heads/") and update.old != ZERO and not (
                pushed.is_ancestor(update.old, tip)):
            raise Refused(f"refused: {update.ref} {update.old[:12]} -> {tip[:12]} is not a "
                          "fast-forward; history that was pushed here is never rewritten "
                          "(push a revert or a merge instead)")
        _folder_files(tip, config)


def _pushed_commit(update: Update) -> str:
    """The commit a ref update points at, refusing a ref that would name a tree or a blob."""
    commit = pushed.peeled_commit(update.new)
    if commit is None:
        raise Refused(f"refused: {update.ref} points at {update.new[:12]}, which is not a commit")
    return commit


def _folder_files(commit: str, config: DeliveryConfig) -> list[TreeEntry]:
    """The entries of the model folder in a commit, refused over the size limit."""
    folder = config.folder.strip("/")
    listed = pushed.entries(commit, [folder] if folder else [], recursive=True)
    total = sum(entry.size or 0 for entry in listed)
    if refusal := too_large(total, config.max_bytes, folder or "the repository"):
        raise Refused(refusal)
    return listed


def _acceptance(commit: str, verdict: Verdict) -> str:
    """The `remote:` line of a candidate that passed."""
    named = f" for {verdict.model}" if verdict.model else ""
    if verdict.earlier_version or verdict.judged is None:
        return (f"accepted {commit[:12]}{named}: a revert to the model files of "
                f"{verdict.earlier_version}, live before; it goes back into service as it was")
    new = " (a new model here)" if verdict.new else ""
    return (f"accepted {commit[:12]}{named}{new} in {verdict.seconds:.1f} s: "
            f"{verdict.judged.summary()}")


def judge_push(settings: Settings, config: DeliveryConfig, update: Update,
               options: dict[str, str], say: Say) -> list[str]:
    """Judge every model a push deploys; keep them pending together only if all pass.

    Returns the lines to say: one per model, and one per model the push no longer holds.
    """
    started = time.time()
    planned = _planned(options)
    pending = pending_dir(settings, update.new)
    _prune_stale(_ensure(pending.parent))
    models, removed = _models_to_deploy(settings, config, update)
    scratch = Path(tempfile.mkdtemp(prefix=".gate-", dir=pending.parent))
    try:
        verdicts, refusals = [], []
        for model in models:
            try:
                verdicts.append(_judge_model(settings, config, update.new, model,
                                             scratch / MODELS_DIR / model.name, options, say))
            except (Refused, GitReadError) as error:  # judge the others: say every refusal
                refusals.append(_naming(model.name, str(error)))
        if refusals:
            raise Refused("\n".join(refusals + _none_deployed(verdicts)))
        if planned is not None and (new := [v.model for v in verdicts if v.new]):
            raise Refused(f"refused: {', '.join(new)} is new here: there is no live version to "
                          f"{planned.mode} against; push it without -o {planned.mode} first")
        _record(scratch / NOTE_FILE, update.new, models, verdicts, options, started, planned)
        shutil.rmtree(pending, ignore_errors=True)
        scratch.rename(pending)  # atomic: post-receive sees a whole push or none of it
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    lines = [_acceptance(update.new, verdict) for verdict in verdicts]
    if planned is not None and models:
        lines.append(f"rollout: not live yet; the candidate {planned.mode.share(planned.percent)}"
                     ", and its policy promotes or aborts it on live evidence")
    if not models:
        lines.append(f"accepted {update.new[:12]}: no model changed; nothing to deploy")
    return lines + [_removed_line(name) for name in removed]


def _planned(options: dict[str, str]) -> Planned | None:
    """The rollout the push options ask for (None: live at once); bad options refuse."""
    try:
        return planned_rollout(options)
    except RolloutError as error:
        raise Refused(f"refused: {error}") from None


def _naming(name: str, refusal: str) -> str:
    """A model's refusal line with the model named: `refused: model NAME: ...`."""
    return f"refused: model {name}: {refusal.removeprefix('refused: ')}"


def _none_deployed(passed: list[Verdict]) -> list[str]:
    """The line that says the models which passed are not deployed either (if any passed)."""
    if not passed:
        return []
    names = ", ".join(verdict.model for verdict in passed)
    return [f"nothing deployed: {names} passed the gate, but a push deploys all its models "
            "or none"]


def _removed_line(name: str) -> str:
    """What happens to a model whose files a push removed: nothing, and how to retire it."""
    return (f"{name}: no longer in the repository; still served as it was (`modelserve "
            f"models retire {name}` on the server stops serving it)")


def _models_to_deploy(settings: Settings, config: DeliveryConfig,
                      update: Update) -> tuple[list[Pushed], list[str]]:
    """The models this push deploys, and those whose files it removed."""
    after = _model_folders(update.new, config, settings.model_name)
    if not after:
        where = f" in {config.folder.strip('/')}/" if config.folder.strip("/") else ""
        raise Refused(f"refused: no model in the push{where}: expected model.keras + "
                      "manifest.json, or model.json + model.h5 (at the root for "
                      f"{settings.model_name}, in a folder NAME/ for any other model)")
    before = {} if update.old == ZERO else _model_folders(update.old, config,
                                                          settings.model_name)
    ids_after = {name: _model_files_id(update.new, folder) for name, folder in after.items()}
    ids_before = {name: _model_files_id(update.old, folder) for name, folder in before.items()}
    catalog = Catalog.of(settings)
    names = deployed_models(ids_before, ids_after,
                            lambda name, files: failed_before(settings, name, files))
    models = [Pushed(name, after[name], ids_after[name], not catalog.exists(name))
              for name in names]
    return models, removed_models(ids_before, ids_after)


def _model_folders(commit: str, config: DeliveryConfig, default: str) -> dict[str, str]:
    """Each model a commit holds, and its folder (the area itself for the default model)."""
    area = config.folder.strip("/")
    listed = pushed.entries(commit, [area] if area else [], recursive=True)
    return model_folders((entry.path for entry in listed), area, default)


def _judge_model(settings: Settings, config: DeliveryConfig, commit: str, model: Pushed,
                 out: Path, options: dict[str, str], say: Say) -> Verdict:
    """Judge one model of a push: a revert, or materialized, checked and scored into out."""
    started = time.time()
    earlier = _deployed_before(settings, model)
    if earlier:
        return Verdict(earlier_version=earlier, model=model.name, new=model.new)
    tree = _materialize(commit, model.folder, out / "tree")
    data_dir = settings.model_data_dir(model.name)
    if not _has_data(data_dir):
        # Never live unjudged: the next push would be judged on these very rows anyway.
        option = "" if model.name == settings.model_name else f" --name {model.name}"
        raise Refused(f"refused: this server stores no data to judge {model.name} on: store "
                      f"it first (`modelserve data import FILE{option}` on the server), then "
                      "push again")
    bundle = _checked_candidate(data_dir, tree, out / "bundle")
    judged = _compare(settings, config, model.name, bundle, options, say)
    shutil.rmtree(tree)  # kept: only the bundle
    return Verdict(judged, model=model.name, new=model.new, seconds=time.time() - started)


def _has_data(data_dir: Path) -> bool:
    """Tell whether a model has stored data (the Pima file or a table) to be judged on."""
    return (data_dir / DATA_FILE).is_file() or (data_dir / TABLE_FILE).is_file()


def _deployed_before(settings: Settings, model: Pushed) -> str | None:
    """The stored version these very model files became, if they fit the live contract."""
    version = version_deployed_from(settings, model.name, model.files_id)
    registry = _registry_of(settings, model.name)
    if version is None or registry is None:
        return None
    try:
        earlier = registry.get(version)
    except RegistryError:  # no longer stored: the files are judged as a new model
        return None
    live = _live(registry)
    if earlier.spec is None:  # damaged since it was stored: judge the files anew
        return None
    if live is not None and (refusal := contract_refusal(earlier.spec, live.spec, version)):
        raise Refused(refusal)
    return version


def _registry_of(settings: Settings, name: str) -> Registry | None:
    """A model's registry, or None for a model this server does not have yet."""
    catalog = Catalog.of(settings)
    return catalog.registry(name) if catalog.exists(name) else None


def _live(registry: Registry | None) -> Live | None:
    """The live version; None when nothing (readable) is live."""
    active = registry.active_version() if registry is not None else None
    info = registry.get(active) if registry is not None and active else None
    if info is None or info.spec is None:
        return None
    return Live(info.version, info.path, info.spec)


def _prune_stale(pending_root: Path) -> None:
    """Drop candidates whose push never completed (a lost ref race, a killed hook)."""
    cutoff = time.time() - STALE_SECONDS
    for entry in pending_root.iterdir():
        if entry.is_dir() and entry.stat().st_mtime < cutoff:
            shutil.rmtree(entry, ignore_errors=True)


def _ensure(path: Path) -> Path:
    """Create a directory if needed and return it."""
    path.mkdir(parents=True, exist_ok=True)
    return path


def _model_files_id(commit: str, folder: str) -> str:
    """An id of a model's files alone (their git blob ids): equal ids, identical files."""
    paths = [f"{folder}/{name}" if folder else name for name in MODEL_FILES]
    done = subprocess.run(["git", "ls-tree", commit, "--", *paths],  # noqa: S603,S607
                          capture_output=True, check=False)
    if done.returncode != 0:
        raise GitReadError(f"refused: git ls-tree cannot read the model files of {commit[:12]}")
    return hashlib.sha256(done.stdout).hexdigest()


def _materialize(commit: str, folder: str, out: Path) -> Path:
    """Write a model's files of a commit (those alone) into out; refuse links."""
    wanted = [f"{folder}/{name}" if folder else name for name in MODEL_FILES]
    _extract(pushed.entries(commit, wanted), out)
    return out


def _extract(entries: list[TreeEntry], out: Path) -> None:
    """Copy the model files' blobs into out, refusing any entry that is not a plain file."""
    for entry in entries:
        if refusal := model_file_refusal(entry):
            raise Refused(refusal)
    out.mkdir(parents=True)
    for entry in entries:
        # The name is one of MODEL_FILES: the path git listed never decides where we write.
        pushed.write_blob(entry, out / PurePosixPath(entry.path).name)


def _checked_candidate(data_dir: Path, tree: Path, out: Path) -> Path:
    """Find a bundle or a legacy pair: check the bundle, or convert and check the pair (one job).

    Either way the candidate leaves the sandbox with the plan derived from its model.keras.
    """
    has_bundle = (tree / MODEL_FILE).is_file() and (tree / MANIFEST_FILE).is_file()
    has_legacy = all((tree / name).is_file() for name in LEGACY_FILES)
    if has_bundle and has_legacy:
        raise Refused("refused: the push holds both a bundle (model.keras + manifest.json) and "
                      "a legacy pair (model.json + model.h5); remove the one you do not mean")
    if has_bundle:
        out.mkdir()
        for name in (MODEL_FILE, MANIFEST_FILE):
            shutil.copy2(tree / name, out / name)
        _check(out)
        return out
    if has_legacy:
        try:
            convert_legacy_confined(tree / "model.json", tree / "model.h5",
                                    stored_dataset(data_dir), out)
        except SandboxUnavailable:
            raise
        except UserError as error:
            message = str(error).replace(f"{tree}/", "")  # the pusher's names, not our scratch
            raise Refused(f"refused: the legacy model cannot be converted: {message}") from None
        return out
    raise Refused("refused: no model in the push: expected model.keras + manifest.json, or "
                  "model.json + model.h5")


def _check(bundle: Path) -> CheckResult:
    """Load and run the model in the sandbox, where its scoring plan is derived too."""
    try:
        return check_bundle_confined(bundle, plan_out=bundle / PLAN_FILE)
    except SandboxUnavailable:
        raise
    except UserError as error:
        message = str(error).replace(str(bundle), "the pushed model")
        raise Refused(f"refused: {message}") from None


def _compare(settings: Settings, config: DeliveryConfig, name: str, bundle: Path,
             options: dict[str, str], say: Say) -> Comparison:
    """Refuse a model unfit for production or its data, non-finite outputs, or a worse model.

    `-o force-deploy` lets a worse model through, never an unfit one.
    """
    live = _live(_registry_of(settings, name))
    spec = read_bundle_spec(bundle)  # checked in the sandbox, with its model
    if live is not None and (refusal := contract_refusal(spec, live.spec)):
        raise Refused(refusal)
    rows = _evaluation_rows(settings.model_data_dir(name), spec)
    outputs = _bundle_scores(bundle, spec, rows.features, "the pushed model")
    if not np.isfinite(outputs).all():
        raise Refused("refused: the model gives NaN or infinite outputs on evaluation rows")
    live_metrics = None
    if live is not None:  # same task, features and classes: it is judged on the same rows
        live_outputs = _bundle_scores(live.path, live.spec, rows.features, "the live model")
        live_metrics = _metrics(live.spec, rows, live_outputs)
    judged = compare(_metrics(spec, rows, outputs), live_metrics, config.tolerance)
    if judged.refusal:
        if "force-deploy" not in options:
            raise Refused(f"refused: {judged.refusal}; override with "
                          "`git push -o force-deploy -o reason=...`")
        say(f"forced despite (model {name}): {judged.refusal}")
    return judged

def _evaluation_rows(data_dir: Path, spec: ModelSpec) -> HeldOut:
    """This server's own rows: the default held-out split of its stored data, for both models.

    The default split ({}), not a model's recorded one: the pusher never chooses the rows
    its model is judged on (a candidate's manifest is its author's word); every push is
    judged on the same rows whatever is live, so the `accepted` lines compare from push to
    push; and it is the split `modelserve train` and the imports hold out by default, so a
    live model trained here with the defaults has not seen these rows either.
    """
    try:
        rows = held_out(data_dir, {}, features=spec.feature_names)
    except UserError as error:  # other columns, or no readable stored data
        raise Refused(_task_unfit(data_dir, spec) or f"refused: {error}") from None
    if refusal := data_refusal(spec, rows.task, rows.classes):
        raise Refused(refusal)
    return rows


def _task_unfit(data_dir: Path, spec: ModelSpec) -> str:
    """Why the stored data's task does not fit the model ("" if it does or cannot be read).

    Asked only when the columns differ too: the task is the clearer reason.
    """
    try:
        rows = held_out(data_dir, {})
    except UserError:
        return ""
    return data_refusal(spec, rows.task, rows.classes) if rows.task is not spec.task else ""


def _metrics(spec: ModelSpec, rows: HeldOut, outputs: np.ndarray) -> Metrics:
    """A model's metrics of its task on the evaluation rows, from its outputs."""
    evaluated = metrics.evaluate_task(spec.task, rows.labels, outputs, spec.threshold)
    return task_metrics(spec.task, evaluated)


def _scores(bundle: Path, rows: np.ndarray, shown: str) -> np.ndarray:
    """Score rows with a bundle in the sandbox: its outputs, (rows, width)."""
    try:
        return score_confined(bundle, rows)
    except SandboxUnavailable:
        raise
    except UserError as error:
        raise Refused(f"refused: {str(error).replace(str(bundle), shown)}") from None


def _bundle_scores(bundle: Path, spec: ModelSpec, rows: np.ndarray, shown: str) -> np.ndarray:
    """The model's outputs (rows, width) by the plan the sandbox derived (numpy, no model code).

    A model without a plan (a Functional one) is scored in the sandbox instead.
    """
    plan_path = bundle / PLAN_FILE
    try:
        plan = Plan.load(plan_path) if plan_path.is_file() else None
    except Exception:  # damaged bytes make zipfile/numpy raise many types: score it confined
        plan = None
    if (plan is not None and plan.source_sha256 == spec.files[MODEL_FILE]
            and plan.input_width == rows.shape[1]):
        outputs = np.asarray(plan(np.asarray(rows, dtype=np.float32)), np.float32)
        if outputs.shape == (len(rows), spec.output.width):
            return outputs
    return _scores(bundle, rows, shown)


def _record(path: Path, commit: str, models: list[Pushed], verdicts: list[Verdict],
            options: dict[str, str], started: float, planned: Planned | None) -> None:
    """Note, beside the candidates, what post-receive reports and records (and the rollout
    that puts them in service, if the push asked for one)."""
    note = {"commit": commit, "received_at": started, "forced": "force-deploy" in options,
            "models": [{"name": model.name, "model_files": model.files_id, "new": model.new,
                        "earlier_version": verdict.earlier_version}
                       for model, verdict in zip(models, verdicts, strict=True)],
            "reason": options.get("reason", ""), "account": os.environ.get("USER", ""),
            # The name of the deploy key that pushed (set by serve-git; none for a local push).
            "pusher": os.environ.get(PUSHER_ENV, ""),
            "rollout": None if planned is None else planned.to_note()}
    path.write_text(json.dumps(note) + "\n")
