"""The post-receive hook: store a push's models, activate all or none, wait for the workers."""

from __future__ import annotations

import fcntl
import json
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from modelserve.auth.local import local_auth_headers
from modelserve.config import Settings, load_settings
from modelserve.delivery.config import DeliveryConfig, delivery_dir
from modelserve.delivery.gate import (
    MODELS_DIR,
    NOTE_FILE,
    PLAN_FILE,
    ZERO,
    Say,
    Update,
    pending_dir,
)
from modelserve.delivery.known import mark_failed, remember
from modelserve.errors import UserError
from modelserve.model.metrics import format_value
from modelserve.model.spec import METRIC_LABELS, TASK_METRICS, ModelSpec
from modelserve.registry import Registry, VersionInfo
from modelserve.registry.catalog import Catalog
from modelserve.rollout import control
from modelserve.rollout.options import Planned
from modelserve.tls import client_context


class NotActivated(UserError):
    """A candidate the gate accepted did not go live; the message says what production serves."""


@contextmanager
def serialized(settings: Settings) -> Iterator[None]:
    """One activation at a time, whatever the number of pushes in flight."""
    path = delivery_dir(settings) / ".activation.lock"
    with open(path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@dataclass(frozen=True)
class Staged:
    """One model of an accepted push, stored and ready to activate: what it was, what it gets."""

    name: str
    registry: Registry
    info: VersionInfo
    previous: str | None  # the version it served before the push, if any
    reason: str
    new: bool  # the push created this model


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
            note = json.loads((pending / NOTE_FILE).read_text())
            try:
                go_live(settings, config, pending, say)
            except Exception as error:  # the push is in: say what happened, not where
                message = _not_activated(settings, note, pending, error)
                for model in note["models"]:  # so that the next push tries these files again
                    mark_failed(settings, model["name"], model["model_files"])
                shutil.rmtree(pending, ignore_errors=True)
                raise NotActivated(message) from error


def _not_activated(settings: Settings, note: dict, pending: Path, error: Exception) -> str:
    """The one line a pusher reads when an accepted commit did not go live: no server paths."""
    text = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
    home, registry = settings.home, settings.registry_dir
    places = {pending / MODELS_DIR / model["name"] / "bundle": "the pushed model"
              for model in note["models"]}
    places.update({pending: "the candidate", registry: "the registry", home: "the server"})
    # Longest first: the registry is inside the home, the candidate inside the delivery dir.
    for path, name in sorted(places.items(), key=lambda item: -len(str(item[0]))):
        for spelling in {str(path), str(path.absolute()), str(path.resolve())}:
            text = text.replace(spelling, name)
    catalog = Catalog.of(settings)
    serves = ", ".join(f"{_active_of(catalog, model['name']) or 'nothing'} ({model['name']})"
                       for model in note["models"])
    return (f"{note['commit'][:12]} accepted but not activated: {text}; production still "
            f"serves {serves}; push a new commit to try again")


def _active_of(catalog: Catalog, name: str) -> str | None:
    """A model's active version; None when it has none or does not exist."""
    return catalog.registry(name).active_version() if catalog.exists(name) else None


def branch_tip(ref: str) -> str:
    """The commit a branch of the hook's repository points at now."""
    done = subprocess.run(["git", "rev-parse", "--verify", "--quiet", ref],  # noqa: S603,S607
                          capture_output=True, text=True, check=False)
    return done.stdout.strip()


def go_live(settings: Settings, config: DeliveryConfig, pending: Path, say: Say) -> list[str]:
    """Store every model of a checked push, activate them all or none, wait for the workers.

    Storing a version changes nothing served, so every model is stored before the first
    activation: what can fail slowly fails before anything switches.
    """
    note = json.loads((pending / NOTE_FILE).read_text())
    source = f"git push {note['commit'][:12]}"
    staged = [_staged(settings, pending, note, model, source) for model in note["models"]]
    if note.get("rollout"):
        return _roll_out(settings, pending, note, staged, source, say)
    _activate_all(staged, source, note.get("pusher") or "")
    for model, done in zip(note["models"], staged, strict=True):
        if model.get("model_files"):
            remember(settings, model["name"], model["model_files"], done.info.version)
    shutil.rmtree(pending, ignore_errors=True)
    served = _wait_all(settings, config, staged)
    elapsed = time.time() - note["received_at"]
    for done in staged:
        was = "new model" if done.new else f"was {done.previous or 'none'}"
        say(f"live: {done.info.version} ({done.name}, {was})"
            + _metrics_line(done.registry, done.info, done.previous))
    unconfirmed = [done.name for done in staged if not served[done.name]]
    if staged and not unconfirmed:
        say(f"push -> live in {elapsed:.1f} s")
    elif staged:
        say(f"activated; the workers did not confirm {', '.join(unconfirmed)} within "
            f"{config.live_timeout:g} s (is `modelserve up` running at {config.web_url}?)")
    return [done.info.version for done in staged]


def _staged(settings: Settings, pending: Path, note: dict, model: dict, source: str) -> Staged:
    """Store one model's candidate (or find the earlier version a revert restores)."""
    name = model["name"]
    bundle = pending / MODELS_DIR / name / "bundle"
    registry = _registry_reusing_gate_plan(settings, name, bundle)
    previous = registry.active_version()
    reason = ("force-deploy: " if note["forced"] else "") + (note["reason"] or "git push")
    try:
        if model.get("earlier_version"):
            info = registry.get(model["earlier_version"])
            reason = f"revert to {info.version}" + (f": {note['reason']}" if note["reason"]
                                                     else "")
        else:
            info = registry.add(bundle, source=source, reason=reason)
    except UserError as error:
        raise NotActivated(f"model {name}: {error}") from error
    if info.spec is None:  # damaged since it was stored: serving it would fail every request
        raise NotActivated(f"model {name}: {info.version} is stored with a damaged manifest")
    return Staged(name, registry, info, previous, reason, bool(model.get("new")))


def _roll_out(settings: Settings, pending: Path, note: dict, staged: list[Staged],
              source: str, say: Say) -> list[str]:
    """Begin the rollout the push asked for, for every model or (one refused) none."""
    planned = Planned.from_note(note["rollout"])
    begun: list[Staged] = []
    for model in staged:
        try:
            control.begin(model.registry, model.name, model.info.version, planned.mode,
                          planned.percent, planned.policy, source)
        except UserError as error:
            for done in begun:  # all or none, as activations are
                control.end(done.registry, "abort", f"the push's rollout of {model.name} "
                            "could not begin", source)
            raise NotActivated(f"model {model.name}: {error}") from error
        begun.append(model)
    for model, done in zip(note["models"], staged, strict=True):
        if model.get("model_files"):
            remember(settings, model["name"], model["model_files"], done.info.version)
    shutil.rmtree(pending, ignore_errors=True)
    for done in staged:
        say(f"{planned.mode}: {done.info.version} ({done.name}) "
            f"{planned.mode.share(planned.percent)} beside the live {done.previous}; "
            f"`modelserve models rollout {done.name}` shows the evidence")
    return [done.info.version for done in staged]


def _activate_all(staged: list[Staged], source: str, pusher: str) -> None:
    """Activate each stored model; if one fails, put back those already activated."""
    done: list[Staged] = []
    for model in staged:
        try:
            model.registry.activate(model.info.version, source=source, reason=model.reason,
                                    pusher=pusher)
        except Exception as error:
            text = str(error) if isinstance(error, UserError) else (
                f"{type(error).__name__}: {error}")
            raise NotActivated(f"model {model.name}: {text}{_put_back(done, source, model.name)}"
                               ) from error
        done.append(model)


def _put_back(done: list[Staged], source: str, failed: str) -> str:
    """Serve again what the activated models served before the push; say what was put back."""
    reason = f"put back: the push's activation of {failed} failed"
    said = []
    for model in reversed(done):
        try:
            if model.previous:
                model.registry.activate(model.previous, source=source, reason=reason)
                said.append(f"{model.name} back to {model.previous}")
            else:  # it served nothing before: it serves nothing again
                model.registry.retire(source=source, reason=reason)
                said.append(f"{model.name} retired again")
        except UserError as error:
            said.append(f"{model.name} NOT put back ({error})")
    return f"; put back: {', '.join(said)}" if said else ""


def _wait_all(settings: Settings, config: DeliveryConfig,
              staged: list[Staged]) -> dict[str, bool]:
    """Wait (one deadline for all) until the workers answer with each model's new version."""
    deadline = time.monotonic() + config.live_timeout
    served = {}
    for model in staged:
        spec = model.info.spec
        route = None if model.name == settings.model_name else model.name
        served[model.name] = spec is not None and wait_until_served(
            config, spec, max(0.0, deadline - time.monotonic()), route)
    return served


def _registry_reusing_gate_plan(settings: Settings, name: str, bundle: Path) -> Registry:
    """A model's registry (created if new), told to take the scoring plan the gate derived.

    The gate checked these very files and derived their plan (which names the model file's
    sha256): reusing it spares a TensorFlow start for the registry's own check.
    """
    gate_plan = bundle / PLAN_FILE
    catalog = Catalog.of(settings, checker=lambda staged: _take_plan(gate_plan, staged))
    return catalog.registry_for_new(name)


def _take_plan(gate_plan: Path, staged: Path) -> None:
    """Copy the gate's plan into a staged version, if the gate could derive one.

    A model no plan expresses (a Functional one, say) has none: the gate checked it with
    Keras, and the workers serve it with Keras.
    """
    if gate_plan.is_file():
        shutil.copyfile(gate_plan, staged / PLAN_FILE)


def _metrics_line(registry: Registry, info: VersionInfo, previous: str | None) -> str:
    """New and old held-out metrics side by side: the task's first two."""
    spec = info.spec
    if spec is None:  # a damaged stored manifest: the version is live, its figures unknown
        return ""
    names = TASK_METRICS[spec.task][:2]
    text = "; " + ", ".join(f"{METRIC_LABELS[n]} {_shown(spec, n)}" for n in names)
    old = registry.get(previous).spec if previous else None
    if old is not None and old.task is spec.task:
        text += f" (was {', '.join(_shown(old, n) for n in names)})"
    return text


def _shown(spec: ModelSpec, name: str) -> str:
    """A metric as text; an undefined one (ROC AUC of one class) is a dash."""
    return format_value(spec.metrics.values.get(name), 4)


def wait_until_served(config: DeliveryConfig, spec: ModelSpec, timeout: float,
                      model: str | None = None) -> bool:
    """Ask the serving stack until an answer comes from this version (True) or time runs out.

    model: a model's name, asked by its own route; None: the default model's /api/v1/predict.
    """
    body = json.dumps({"rows": spec.example_rows()[:1].tolist()}).encode()
    context = _web_context(config)
    route = "/api/v1/predict" if model is None else f"/api/v1/models/{model}/predict"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _answered_by(config.web_url + route, body, context) == spec.version:
            return True
        time.sleep(0.1)
    return False


def _web_context(config: DeliveryConfig) -> ssl.SSLContext | None:
    """How an https web_url is verified: its certificate named by `delivery init --web-ca`."""
    if not config.web_url.startswith("https://"):
        return None
    return client_context(Path(config.web_ca)) if config.web_ca else ssl.create_default_context()


def _answered_by(url: str, body: bytes, context: ssl.SSLContext | None = None) -> str | None:
    """The version that answered one prediction, or None if the stack did not answer."""
    # An exposed stack needs a credential: the serving account's local token (auth/local-token).
    headers = {"Content-Type": "application/json", **local_auth_headers(load_settings().home)}
    request = urllib.request.Request(url, data=body,  # noqa: S310
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=2,  # noqa: S310 (our URL)
                                    context=context) as response:
            return json.load(response).get("model_version")
    except (OSError, ValueError, urllib.error.HTTPError):
        return None

