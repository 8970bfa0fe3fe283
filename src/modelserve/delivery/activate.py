"""The post-receive hook: register, activate atomically, wait until the workers answer with it."""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from modelserve.config import Settings
from modelserve.delivery.config import DeliveryConfig, delivery_dir
from modelserve.delivery.gate import NOTE_FILE, PLAN_FILE, ZERO, Say, Update, pending_dir
from modelserve.delivery.known import remember
from modelserve.model.runtime import example_rows
from modelserve.registry import Registry


@contextmanager
def serialized(settings: Settings) -> Iterator[None]:
    """One activation at a time, whatever the number of pushes in flight."""
    path = delivery_dir(settings) / ".activation.lock"
    with open(path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def post_receive(settings: Settings, config: DeliveryConfig, updates: list[Update],
                 say: Say) -> None:
    """Put every accepted commit of the deployed branch into service, in push order."""
    branch_ref = f"refs/heads/{config.branch}"
    for update in updates:
        if update.ref != branch_ref or update.new == ZERO:
            continue
        pending = pending_dir(settings, update.new)
        if not (pending / NOTE_FILE).is_file():
            say(f"{update.new[:12]}: no checked candidate found; nothing deployed")
            continue
        with serialized(settings):
            # A push that landed after this one while we waited deploys itself: going live
            # now would put an older model over a newer one.
            tip = branch_tip(branch_ref)
            if tip != update.new:
                say(f"{update.new[:12]}: superseded by {tip[:12]}, pushed meanwhile; "
                    "that push deploys its own model")
                shutil.rmtree(pending, ignore_errors=True)
                continue
            go_live(settings, config, pending, say)


def branch_tip(ref: str) -> str:
    """The commit a branch of the hook's repository points at now."""
    done = subprocess.run(["git", "rev-parse", "--verify", "--quiet", ref],  # noqa: S603,S607
                          capture_output=True, text=True, check=False)
    return done.stdout.strip()


def go_live(settings: Settings, config: DeliveryConfig, pending: Path, say: Say) -> str:
    """Register and activate a checked candidate, then wait for the workers to serve it."""
    note = json.loads((pending / NOTE_FILE).read_text())
    registry = _registry_reusing_gate_plan(settings, pending)
    previous = registry.active_version()
    reason = ("force-deploy: " if note["forced"] else "") + (note["reason"] or "git push")
    source = f"git push {note['commit'][:12]}"
    if note.get("earlier_version"):
        info = registry.get(note["earlier_version"])
        reason = f"revert to {info.version}" + (f": {note['reason']}" if note["reason"] else "")
    else:
        info = registry.add(pending / "bundle", source=source, reason=reason)
    registry.activate(info.version, source=source, reason=reason)
    if note.get("model_files"):
        remember(settings, note["model_files"], info.version)
    shutil.rmtree(pending, ignore_errors=True)
    served = wait_until_served(config, info.manifest, config.live_timeout)
    elapsed = time.time() - note["received_at"]
    say(f"live: {info.version} (was {previous or 'none'})" + _metrics_line(registry, info,
                                                                          previous))
    if served:
        say(f"push -> live in {elapsed:.1f} s")
    else:
        say(f"activated; the workers did not confirm within {config.live_timeout:g} s "
            f"(is `modelserve up` running at {config.web_url}?)")
    return info.version


def _registry_reusing_gate_plan(settings: Settings, pending: Path) -> Registry:
    """The registry, told to take the scoring plan the gate derived instead of deriving it.

    The gate checked these very files and derived their plan (which names the model file's
    sha256): reusing it spares a TensorFlow start for the registry's own check.
    """
    gate_plan = pending / "bundle" / PLAN_FILE
    return Registry(settings.registry_dir,
                    checker=lambda staged: shutil.copyfile(gate_plan, staged / PLAN_FILE))


def _metrics_line(registry: Registry, info, previous: str | None) -> str:
    """New and old held-out metrics side by side."""
    new = info.manifest["metrics"]
    text = f"; accuracy {new['accuracy']:.4f}, ROC AUC {new['roc_auc']:.4f}"
    if previous:
        old = registry.get(previous).manifest["metrics"]
        text += f" (was {old['accuracy']:.4f}, {old['roc_auc']:.4f})"
    return text


def wait_until_served(config: DeliveryConfig, manifest: dict, timeout: float) -> bool:
    """Ask the serving stack until an answer comes from this version (True) or time runs out."""
    body = json.dumps({"rows": example_rows(manifest)[:1].tolist()}).encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _answered_by(config.web_url, body) == manifest["version"]:
            return True
        time.sleep(0.1)
    return False


def _answered_by(web_url: str, body: bytes) -> str | None:
    """The version that answered one prediction, or None if the stack did not answer."""
    request = urllib.request.Request(f"{web_url}/api/v1/predict", data=body,  # noqa: S310
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310 (our URL)
            return json.load(response).get("model_version")
    except (OSError, ValueError, urllib.error.HTTPError):
        return None

