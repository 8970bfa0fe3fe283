"""The pre-receive gate: nothing reaches production that does not load, fit and score well.

A candidate is materialized from the pushed commit (still in git's quarantine), converted if
it is a legacy pair, checked in a clean process, compared with the live model's input
contract, and scored against the live model on this server's own evaluation rows. Only a
candidate that passes is kept, under pending/<commit>, for the post-receive hook.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from modelserve.config import Settings
from modelserve.delivery.config import DeliveryConfig, delivery_dir
from modelserve.delivery.known import version_deployed_from
from modelserve.errors import UserError
from modelserve.model import metrics
from modelserve.model.bundle import MANIFEST_FILE, MODEL_FILE, feature_names
from modelserve.model.check import check_bundle, check_bundle_isolated
from modelserve.model.dataset import load_dataset, stored_dataset
from modelserve.model.holdout import held_out
from modelserve.model.legacy import import_legacy
from modelserve.model.runtime import ModelRuntime
from modelserve.registry import Registry, RegistryError

ZERO = "0" * 40
PLAN_FILE = "plan.npz"
NOTE_FILE = "delivery.json"
LEGACY_FILES = ("model.json", "model.h5")
MODEL_FILES = (MODEL_FILE, MANIFEST_FILE, *LEGACY_FILES)
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
    """A candidate that passed: its scores beside the live model's, or the version it restores."""

    accuracy: float | None
    live_accuracy: float | None
    rows: int
    earlier_version: str | None = None
    seconds: float = 0.0


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
    """Judge every update of the deployed branch; raise Refused to refuse the whole push."""
    branch_ref = f"refs/heads/{config.branch}"
    for update in updates:
        if update.ref != branch_ref:
            say(f"{update.ref}: stored, not deployed (only {config.branch} deploys)")
            continue
        if update.new == ZERO:
            raise Refused(f"refused: deleting {config.branch} would leave nothing deployed")
        verdict = judge(settings, config, update.new, options, say)
        say(_acceptance(update.new, verdict))


def _acceptance(commit: str, verdict: Verdict) -> str:
    """The `remote:` line of a candidate that passed."""
    if verdict.earlier_version:
        return (f"accepted {commit[:12]}: a revert to the model files of {verdict.earlier_version}"
                ", live before; it goes back into service as it was")
    return (f"accepted {commit[:12]} in {verdict.seconds:.1f} s: accuracy {verdict.accuracy:.4f} "
            f"on this server's {verdict.rows} evaluation rows" + _beside(verdict.live_accuracy))


def _beside(live_accuracy: float | None) -> str:
    """The live model's figure, for comparison."""
    return "" if live_accuracy is None else f" (live model: {live_accuracy:.4f})"


def judge(settings: Settings, config: DeliveryConfig, commit: str, options: dict[str, str],
          say: Say) -> Verdict:
    """Materialize, convert, check and score one pushed commit; keep it pending if it passes."""
    started = time.time()
    pending = pending_dir(settings, commit)
    _prune_stale(_ensure(pending.parent))
    files_id = _model_files_id(commit, config)
    scratch = Path(tempfile.mkdtemp(prefix=".gate-", dir=pending.parent))
    try:
        earlier = _deployed_before(settings, files_id)
        if earlier:
            verdict = Verdict(None, None, 0, earlier_version=earlier)
        else:
            verdict = _judge_new_model(settings, config, commit, scratch, options, say)
        _record(scratch / NOTE_FILE, commit, files_id, earlier, options, started)
        shutil.rmtree(pending, ignore_errors=True)
        scratch.rename(pending)  # atomic: post-receive sees a whole candidate or none
        return replace(verdict, seconds=time.time() - started)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _judge_new_model(settings: Settings, config: DeliveryConfig, commit: str, scratch: Path,
                     options: dict[str, str], say: Say) -> Verdict:
    """Extract, convert, check and score a model never deployed here; leave its bundle."""
    tree = _materialize(commit, config, scratch / "tree")
    bundle, converted_here = _candidate_bundle(settings, tree, scratch / "bundle")
    _check(bundle, converted_here)
    verdict = _compare(settings, config, bundle, options, say)
    shutil.rmtree(scratch / "tree")  # kept: only the bundle and the note
    return verdict


def _deployed_before(settings: Settings, files_id: str | None) -> str | None:
    """The stored version these very model files became, if they fit the live contract."""
    version = version_deployed_from(settings, files_id) if files_id else None
    if version is None:
        return None
    registry = Registry(settings.registry_dir)
    try:
        earlier = registry.get(version)
    except RegistryError:  # no longer stored: the files are judged as a new model
        return None
    live = registry.active_version()
    theirs = feature_names(earlier.manifest)
    if live and theirs != (expected := feature_names(registry.get(live).manifest)):
        raise Refused(f"refused: {version} takes {theirs}; production's input contract is "
                      f"{expected}")
    return version


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


def _git(*args: str) -> bytes:
    """Run git in the hook's repository (quarantined objects included) and return stdout."""
    done = subprocess.run(["git", *args], capture_output=True, check=False)  # noqa: S603,S607
    if done.returncode != 0:
        raise Refused(f"refused: git {args[0]} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout


def _model_files_id(commit: str, config: DeliveryConfig) -> str | None:
    """An id of the pushed model files alone (their git blob ids): equal ids, identical files."""
    folder = config.folder.strip("/")
    paths = [f"{folder}/{name}" if folder else name for name in MODEL_FILES]
    done = subprocess.run(["git", "ls-tree", commit, "--", *paths],  # noqa: S603,S607
                          capture_output=True, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        return None
    return hashlib.sha256(done.stdout).hexdigest()


def _materialize(commit: str, config: DeliveryConfig, out: Path) -> Path:
    """Extract the model folder of a commit, refusing it when it is over the size limit."""
    folder = config.folder.strip("/")
    where = [folder] if folder else []
    listing = _git("ls-tree", "-r", "-l", commit, "--", *where).decode()
    sizes = [int(line.split()[3]) for line in listing.splitlines() if line.split()[3] != "-"]
    if not sizes:
        raise Refused(f"refused: no files in {folder or 'the repository root'} of {commit[:12]}")
    if sum(sizes) > config.max_bytes:
        raise Refused(f"refused: the model files are {sum(sizes):,} bytes, over the "
                      f"{config.max_bytes:,} byte limit")
    archive = _git("archive", "--format=tar", commit, *where)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        _extract(tar, out)
    return out / folder if folder else out


def _extract(tar: tarfile.TarFile, out: Path) -> None:
    """Extract a pushed tree, refusing links and paths that leave `out`."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(out, filter="data")
        return
    # Python before 3.11.4 (Debian 12's python3 is 3.11.2) has no extraction filters.
    for member in tar.getmembers():
        inside = (out / member.name).resolve().is_relative_to(out.resolve())
        if not inside or not (member.isfile() or member.isdir()):
            raise Refused(f"refused: {member.name} is not a plain file in the model folder")
    tar.extractall(out)  # noqa: S202 (every member was checked above)


def _candidate_bundle(settings: Settings, tree: Path, out: Path) -> tuple[Path, bool]:
    """Find a bundle or a legacy pair; convert a pair. True when we wrote the model file."""
    has_bundle = (tree / MODEL_FILE).is_file() and (tree / MANIFEST_FILE).is_file()
    has_legacy = all((tree / name).is_file() for name in LEGACY_FILES)
    if has_bundle and has_legacy:
        raise Refused("refused: the push holds both a bundle (model.keras + manifest.json) and "
                      "a legacy pair (model.json + model.h5); remove the one you do not mean")
    if has_bundle:
        out.mkdir()
        for name in (MODEL_FILE, MANIFEST_FILE):
            shutil.copy2(tree / name, out / name)
        return out, False
    if has_legacy:
        dataset = load_dataset(stored_dataset(settings.data_dir))
        try:
            import_legacy(tree / "model.json", tree / "model.h5", dataset, out)
        except UserError as error:
            message = str(error).replace(f"{tree}/", "")  # the pusher's names, not our scratch
            raise Refused(f"refused: the legacy model cannot be converted: {message}") from None
        return out, True
    raise Refused("refused: no model in the push: expected model.keras + manifest.json, or "
                  "model.json + model.h5")


def _check(bundle: Path, converted_here: bool) -> dict:
    """Load and run the model, derive its scoring plan; a pushed model file in a clean process.

    A converted legacy pair was parsed by our own readers and written by us: checking it here,
    where Keras is already imported, saves a second TensorFlow start (~5 s) on every push.
    """
    try:
        if converted_here:
            return check_bundle(bundle, plan_out=bundle / PLAN_FILE)
        return check_bundle_isolated(bundle, plan_out=bundle / PLAN_FILE)
    except UserError as error:
        message = str(error).replace(str(bundle), "the pushed model")
        raise Refused(f"refused: {message}") from None


def _compare(settings: Settings, config: DeliveryConfig, bundle: Path,
             options: dict[str, str], say: Say) -> Verdict:
    """Refuse a contract mismatch, non-finite outputs, or a worse model (unless forced)."""
    registry = Registry(settings.registry_dir)
    active = registry.active_version()
    live = registry.get(active) if active else None
    candidate = ModelRuntime.load(bundle)
    if live is not None and feature_names(live.manifest) != candidate.features:
        raise Refused(f"refused: the model takes {candidate.features}; production's input "
                      f"contract is {feature_names(live.manifest)}")
    # This server's own rows: the default held-out split of its stored dataset.
    rows = held_out(settings.data_dir, {})
    features, labels = rows.features, rows.labels
    probabilities = candidate.score(features).probabilities
    if not np.isfinite(probabilities).all():
        raise Refused("refused: the model gives NaN or infinite outputs on evaluation rows")
    accuracy = metrics.accuracy(labels, probabilities >= candidate.threshold)
    live_accuracy = None
    if live is not None:
        live_runtime = ModelRuntime.load(live.path)
        live_accuracy = metrics.accuracy(labels, live_runtime.score(features).labels)
        worse = live_accuracy - accuracy
        if worse > config.tolerance:
            message = (f"accuracy {accuracy:.4f} on this server's {len(labels)} evaluation rows "
                       f"is {worse:.4f} below the live model's {live_accuracy:.4f} "
                       f"(tolerance {config.tolerance})")
            if "force-deploy" not in options:
                raise Refused(f"refused: {message}; override with "
                              "`git push -o force-deploy -o reason=...`")
            say(f"forced despite: {message}")
    return Verdict(accuracy, live_accuracy, len(labels))


def _record(path: Path, commit: str, files_id: str | None, earlier: str | None,
            options: dict[str, str], started: float) -> None:
    """Note, beside the candidate, what post-receive reports and records."""
    note = {"commit": commit, "model_files": files_id, "earlier_version": earlier,
            "received_at": started, "forced": "force-deploy" in options,
            "reason": options.get("reason", ""), "pusher": os.environ.get("USER", "")}
    path.write_text(json.dumps(note) + "\n")
