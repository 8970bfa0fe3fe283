"""Beginning, judging and ending a model's rollout: the registry, its rollout file, the log.

Every change is made under the model's rollout lock and re-reads the record inside it, so
that two web processes judging at once, or a command beside them, act once: the first
promotes or aborts, the others find the rollout gone. A promotion is the registry's own
atomic activation; every start and end is an event in the model's history with the rule
and figures that decided it.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from modelserve.predlog import live as live_figures
from modelserve.predlog.live import Agreement, VersionLive
from modelserve.predlog.records import Role
from modelserve.predlog.store import PredictionLog
from modelserve.registry import Registry
from modelserve.rollout.policy import Decision, Verdict, judge
from modelserve.rollout.state import Mode, Policy, Rollout, RolloutError, RolloutStore

LOCK_FILE = "rollout.lock"
JUDGE_LOCK_FILE = "judge.lock"
SOURCE = "rollout"


@dataclass(frozen=True)
class RolloutStatus:
    """A rollout with its evidence so far and what the judge says of it."""

    rollout: Rollout
    live: VersionLive | None
    candidate: VersionLive | None
    agreement: Agreement
    verdict: Verdict


def begin(registry: Registry, model: str, candidate: str, mode: Mode, percent: float,
          policy: Policy, source: str, now: float | None = None) -> Rollout:
    """Start a rollout of a stored version against the live one; one at a time per model."""
    store = RolloutStore(registry.root)
    with _locked(registry):
        under_way = store.read()
        if under_way is not None:
            raise RolloutError(f"model {model} already has a {under_way.mode} rollout of "
                               f"{under_way.candidate}; promote or abort it first")
        live = registry.active_version()
        if live is None:
            raise RolloutError(f"model {model} has no live version to roll out against; "
                               "activate one first")
        version = registry.resolve(candidate)
        if version == live:
            raise RolloutError(f"{version} is already the live version of {model}")
        _check_compatible(registry, live, version)
        rollout = Rollout(model, version, live, mode, percent,
                          time.time() if now is None else now, source, policy)
        store.write(rollout)
        registry.record(mode.value, version, source=source,
                        reason=f"{percent:g}% of requests; policy {_policy_line(policy)}")
    return rollout


def _check_compatible(registry: Registry, live: str, candidate: str) -> None:
    """A candidate must take the live version's inputs and answer its task, or its answers
    cannot go to the same callers, nor be compared with live's."""
    theirs, ours = registry.get(candidate).spec, registry.get(live).spec
    if theirs is None or ours is None:
        raise RolloutError(f"the manifest of {candidate if theirs is None else live} cannot be "
                           "read")
    if theirs.feature_names != ours.feature_names:
        raise RolloutError(f"{candidate} takes other features than the live {live}: a "
                           "rollout compares two versions on the same requests")
    if (theirs.output.task, theirs.output.classes) != (ours.output.task, ours.output.classes):
        raise RolloutError(f"{candidate} answers another task or other classes than the live "
                           f"{live}; activate it instead of rolling it out")


def status(rollout: Rollout, log: PredictionLog, registry: Registry,
           now: float | None = None, agreement: bool = True) -> RolloutStatus:
    """A rollout's evidence since it began, and the verdict on it now (with agreement=False,
    without the agreement with live, which no rule reads: the judge's way)."""
    now = time.time() if now is None else now
    spec = registry.get(rollout.live).spec
    if spec is None:
        raise RolloutError(f"the manifest of the live version {rollout.live} cannot be read")
    since = rollout.started_at
    found = live_figures.summarize(spec.output, log.traffic(rollout.model, since),
                                   log.labelled(rollout.model, since))
    live = next((item for item in found if item.version == rollout.live
                 and item.role is Role.LIVE), None)
    candidate_role = Role.SHADOW if rollout.mode is Mode.SHADOW else Role.CANARY
    candidate = next((item for item in found if item.version == rollout.candidate
                      and item.role is candidate_role), None)
    agreed = Agreement(0, None, None)
    if agreement:
        paired = log.paired(rollout.model, rollout.candidate, since)
        agreed = live_figures.agreement(spec.output, paired.live, paired.candidate)
    return RolloutStatus(rollout, live, candidate, agreed, judge(rollout, live, candidate, now))


def decide(registry: Registry, log: PredictionLog, now: float | None = None
           ) -> RolloutStatus | None:
    """Judge a model's rollout, and promote or abort it when the evidence is in. Another
    process deciding at the same moment is not waited for (None: nothing judged)."""
    store = RolloutStore(registry.root)
    with _locked(registry, wait=False) as held:
        rollout = store.read() if held else None
        if rollout is None:
            return None
        if registry.active_version() != rollout.live:
            _end(registry, store, rollout, "abort", "the live version changed to "
                 f"{registry.active_version()} during the rollout")
            return None
        found = status(rollout, log, registry, now, agreement=False)
        if found.verdict.decision is Decision.PROMOTE:
            _end(registry, store, rollout, "promote", _verdict_line(found.verdict))
        elif found.verdict.decision is Decision.ABORT:
            _end(registry, store, rollout, "abort", _verdict_line(found.verdict))
        return found


def end(registry: Registry, action: str, reason: str, source: str) -> Rollout:
    """Promote or abort the rollout under way by hand (the CLI)."""
    store = RolloutStore(registry.root)
    with _locked(registry):
        rollout = store.read()
        if rollout is None:
            raise RolloutError("no rollout is under way for this model")
        _end(registry, store, rollout, action, reason or f"by hand ({source})", source)
    return rollout


def _end(registry: Registry, store: RolloutStore, rollout: Rollout, action: str,
         reason: str, source: str = SOURCE) -> None:
    """Promote (activate the candidate) or abort (live stays); the record goes after the
    history has the event, so a crash between them leaves the rollout to end again."""
    if action == "promote":
        registry.activate(rollout.candidate, source=source,
                          reason=f"promoted from {rollout.mode}: {reason}")
    else:
        registry.record("abort", rollout.candidate, source=source,
                        reason=f"{rollout.mode} aborted: {reason}")
    store.clear()


def _verdict_line(verdict: Verdict) -> str:
    """A verdict as the history keeps it: the rule, then the figures."""
    return f"{verdict.rule}: {verdict.reason}"


def _policy_line(policy: Policy) -> str:
    """A policy in one line, as the history keeps it."""
    return ", ".join(f"{name}={value:g}" for name, value in vars(policy).items())


def judge_lock(registry_root: Path) -> int | None:
    """Take the home's judge lock without waiting: its descriptor (held until closed, or
    until the process ends), or None when another process holds it."""
    registry_root.mkdir(parents=True, exist_ok=True)
    fd = os.open(registry_root / JUDGE_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextmanager
def _locked(registry: Registry, wait: bool = True) -> Iterator[bool]:
    """Hold the model's rollout lock (or, with wait=False, try to: yields whether held)."""
    registry.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(registry.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)
