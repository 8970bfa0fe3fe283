"""The post-receive hook: register, activate atomically, wait until the workers answer with it."""

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
from pathlib import Path

from modelserve.auth.local import local_auth_headers
from modelserve.config import Settings, load_settings
from modelserve.delivery.config import DeliveryConfig, delivery_dir
from modelserve.delivery.gate import NOTE_FILE, PLAN_FILE, ZERO, Say, Update, pending_dir
from modelserve.delivery.known import remember
from modelserve.errors import UserError
from modelserve.model.metrics import format_value
from modelserve.model.spec import METRIC_LABELS, TASK_METRICS, ModelSpec
from modelserve.registry import Registry, VersionInfo
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
            try:
                go_live(settings, config, pending, say)
            except Exception as error:  # the push is in: say what happened, not where
                shutil.rmtree(pending, ignore_errors=True)
                raise NotActivated(_not_activated(settings, update.new, pending, error)) from error


def _not_activated(settings: Settings, commit: str, pending: Path, error: Exception) -> str:
    """The one line a pusher reads when an accepted commit did not go live: no server paths."""
    text = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
    home, registry = settings.home, settings.registry_dir
    places = {pending / "bundle": "the pushed model", pending: "the candidate",
              registry: "the registry", home: "the server"}
    # Longest first: the registry is inside the home, the candidate inside the delivery dir.
    for path, name in sorted(places.items(), key=lambda item: -len(str(item[0]))):
        for spelling in {str(path), str(path.absolute()), str(path.resolve())}:
            text = text.replace(spelling, name)
    live = Registry(registry).active_version()
    return (f"{commit[:12]} accepted but not activated: {text}; production still serves "
            f"{live or 'nothing'}; push a new commit to try again")


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
    spec = info.spec
    if spec is None:  # damaged since it was stored: serving it would fail every request
        raise NotActivated(f"{info.version} is stored with a damaged manifest")
    registry.activate(info.version, source=source, reason=reason,
                      pusher=note.get("pusher") or "")
    if note.get("model_files"):
        remember(settings, note["model_files"], info.version)
    shutil.rmtree(pending, ignore_errors=True)
    served = wait_until_served(config, spec, config.live_timeout)
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
    return Registry(settings.registry_dir, checker=lambda staged: _take_plan(gate_plan, staged))


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


def wait_until_served(config: DeliveryConfig, spec: ModelSpec, timeout: float) -> bool:
    """Ask the serving stack until an answer comes from this version (True) or time runs out."""
    body = json.dumps({"rows": spec.example_rows()[:1].tolist()}).encode()
    context = _web_context(config)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _answered_by(config.web_url, body, context) == spec.version:
            return True
        time.sleep(0.1)
    return False


def _web_context(config: DeliveryConfig) -> ssl.SSLContext | None:
    """How an https web_url is verified: its certificate named by `delivery init --web-ca`."""
    if not config.web_url.startswith("https://"):
        return None
    return client_context(Path(config.web_ca)) if config.web_ca else ssl.create_default_context()


def _answered_by(web_url: str, body: bytes, context: ssl.SSLContext | None = None) -> str | None:
    """The version that answered one prediction, or None if the stack did not answer."""
    # An exposed stack needs a credential: the serving account's local token (auth/local-token).
    headers = {"Content-Type": "application/json", **local_auth_headers(load_settings().home)}
    request = urllib.request.Request(f"{web_url}/api/v1/predict", data=body,  # noqa: S310
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=2,  # noqa: S310 (our URL)
                                    context=context) as response:
            return json.load(response).get("model_version")
    except (OSError, ValueError, urllib.error.HTTPError):
        return None

