"""What the web app needs from the rest of the system: each model's contract and predictions."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from modelserve.config import Settings
from modelserve.errors import UserError
from modelserve.model.spec import ModelSpec
from modelserve.predlog import ids
from modelserve.predlog.records import Answered, Role
from modelserve.predlog.store import PredictionLog
from modelserve.predlog.writer import LogWriter
from modelserve.registry import Registry
from modelserve.registry.catalog import Catalog
from modelserve.rollout import control, routing
from modelserve.rollout.control import RolloutStatus
from modelserve.rollout.policy import Decision
from modelserve.rollout.state import Mode, Rollout, RolloutError, RolloutStore
from modelserve.web import metrics
from modelserve.web.evaluation import AccuracyBook
from modelserve.web.predictors import (
    DeadlineExceeded,
    InlinePredictor,
    Prediction,
    QueuePredictor,
    Unavailable,
)

Predictor = InlinePredictor | QueuePredictor
# How long a process keeps its answer to "which model is the default": finding it reads every
# model's link, on every /api/v1/predict otherwise. An activation still shows well within 2 s.
DEFAULT_NAME_SECONDS = 0.25
# How long a process keeps a model's rollout record: a rollout begun or ended shows within it.
ROLLOUT_SECONDS = 0.25
# The judge waits at least this many times as long as its last judgement took.
JUDGE_SHARE = 20
# The header whose value keeps one client on one version during a canary.
ROUTING_HEADER = "X-Routing-Key"
logger = logging.getLogger(__name__)


class NotServed(UserError):
    """A model name that is not served here (unknown, or without an active version): 404."""


class ModelView:
    """One model as the web app sees it: its registry (read-only), spec, data and answers."""

    def __init__(self, name: str, settings: Settings, registry: Registry,
                 predictor: Callable[[], Predictor], traffic: Counter[str],
                 log: Callable[[], LogWriter | None] = lambda: None):
        self.name = name
        self.settings = settings
        self.registry = registry
        self._predictor = predictor
        self._log = log
        self._traffic = traffic
        self.data_dir = settings.model_data_dir(name)
        self.accuracy_book = AccuracyBook(settings, self.data_dir)  # per version, once
        self._spec_cache: tuple[str | None, ModelSpec | None] = (None, None)
        self.rollouts = RolloutStore(registry.root)
        self._rollout_cache: tuple[float, Rollout | None] = (float("-inf"), None)
        self._rollout_problem = ""
        self._problem_cache: tuple[object, str | None] = (None, None)

    def active_spec(self) -> ModelSpec | None:
        """The active version's spec, re-read only when the version changes."""
        version = self.registry.active_version()
        cached_version, spec = self._spec_cache
        if version != cached_version:
            spec = self._usable_spec(version) if version else None
            self._spec_cache = (version, spec)
        return spec

    def _usable_spec(self, version: str) -> ModelSpec | None:
        """The version's spec; if its manifest is damaged, that of the version workers fall
        back to (active_problem() says so on the pages and in readiness)."""
        for candidate in (version, *self.registry.fallbacks(version)):
            spec = self.registry.get(candidate).spec
            if spec is not None:
                return spec
        return None

    def features(self) -> list[str]:
        """The active model's input features, in order."""
        spec = self.active_spec()
        if spec is None:
            raise Unavailable(f"no model is active yet ({self.name!r} has no active version); "
                              "activate one with `modelserve models activate`")
        return spec.feature_names

    def rollout(self) -> Rollout | None:
        """The model's rollout under way, re-read at most every ROLLOUT_SECONDS; a damaged
        record is served as none (and said in the log, once per change)."""
        checked, rollout = self._rollout_cache
        if time.monotonic() - checked < ROLLOUT_SECONDS:
            return rollout
        try:
            rollout = self.rollouts.read()
        except RolloutError as error:
            if str(error) != self._rollout_problem:
                logger.warning("model %s: the rollout is not served: %s", self.name, error)
            self._rollout_problem, rollout = str(error), None
        self._rollout_cache = (time.monotonic(), rollout)
        return rollout

    def _plan(self, rollout: Rollout | None, routing_key: str | None) -> list[tuple[str, Role]]:
        """Who answers, in order: a canary's candidate for its share of the requests (live
        answers if it fails), else the live version ("": the active one)."""
        live = [("", Role.LIVE)]
        if rollout is None or rollout.mode is not Mode.CANARY:
            return live
        draw = random.random()  # noqa: S311 - a share of traffic, not a secret
        if not routing.chosen(rollout.percent, routing_key, draw):
            return live
        return [(rollout.candidate, Role.CANARY), *live]

    def predict(self, rows: np.ndarray, routing_key: str | None = None) -> Prediction:
        """Score rows with this model within the request deadline."""
        rollout = self.rollout()
        plan = self._plan(rollout, routing_key)
        ends = time.perf_counter() + self.settings.request_timeout  # one deadline for all tries
        for attempt, (version, role) in enumerate(plan, 1):
            at, started = time.time(), time.perf_counter()
            try:
                prediction = self._predictor().predict(rows, ends - time.perf_counter(),
                                                       self.name, version)
            except UserError as error:
                self._failed(error, attempt == len(plan), rows, at, started, version, role)
                continue
            return self._answered(prediction, rows, at, started, role, rollout)
        raise AssertionError("unreachable: the last attempt raises")  # pragma: no cover

    async def predict_async(self, rows: np.ndarray, routing_key: str | None = None
                            ) -> Prediction:
        """The same on the web process's event loop (the hot path)."""
        rollout = self.rollout()
        plan = self._plan(rollout, routing_key)
        ends = time.perf_counter() + self.settings.request_timeout  # one deadline for all tries
        for attempt, (version, role) in enumerate(plan, 1):
            at, started = time.time(), time.perf_counter()
            try:
                prediction = await self._predictor().predict_async(
                    rows, ends - time.perf_counter(), self.name, version)
            except UserError as error:
                self._failed(error, attempt == len(plan), rows, at, started, version, role)
                continue
            return self._answered(prediction, rows, at, started, role, rollout)
        raise AssertionError("unreachable: the last attempt raises")  # pragma: no cover

    def _failed(self, error: UserError, last: bool, rows: np.ndarray, at: float,
                started: float, version: str, role: Role) -> None:
        """Log a failed attempt; raise it again if it was the last one, or if the deadline
        is spent (live cannot answer in its place in time)."""
        self._log_failure(rows, at, started, error, version, role)
        if last or isinstance(error, DeadlineExceeded):
            raise error

    def _answered(self, prediction: Prediction, rows: np.ndarray, at: float, started: float,
                  role: Role, rollout: Rollout | None) -> Prediction:
        """Give a prediction its id, log it (off the request path), count its rows, and send
        a shadow its copy."""
        answered = Prediction(prediction.outputs, prediction.labels, prediction.version,
                              prediction.worker, ids.new_id(at))
        log = self._log()
        if log is not None:
            log.put(Answered(answered.id, self.name, answered.version, role, at,
                             time.perf_counter() - started, rows, answered.outputs))
            if rollout is not None and rollout.mode is Mode.SHADOW:
                self._copy_to_shadow(rollout, log, rows, answered.id, at)
        metrics.ROWS_SCORED.labels(model=self.name, version=prediction.version).inc(len(rows))
        self._traffic[self.name] += len(rows)
        return answered

    def _copy_to_shadow(self, rollout: Rollout, log: LogWriter, rows: np.ndarray,
                        prediction_id: str, at: float) -> None:
        """Send the shadow its share of copies; each answer goes to the log, never to the
        caller, under the live answer's id (so feedback and agreement pair them)."""
        draw = random.random()  # noqa: S311 - a share of traffic, not a secret
        if not routing.chosen(rollout.percent, None, draw):
            return
        candidate = rollout.candidate

        def done(outcome: Prediction | UserError, latency: float) -> None:
            failed = isinstance(outcome, UserError)
            metrics.SHADOW_COPIES.labels(model=self.name, version=candidate,
                                         outcome="failed" if failed else "answered").inc()
            log.put(Answered(prediction_id, self.name, candidate, Role.SHADOW, at, latency,
                             rows, None if isinstance(outcome, UserError) else outcome.outputs,
                             str(outcome) or type(outcome).__name__ if failed else ""))

        if not self._predictor().shadow(rows, self.settings.request_timeout, self.name,
                                        candidate, done):
            metrics.SHADOW_COPIES.labels(model=self.name, version=candidate,
                                         outcome="dropped").inc()

    def _log_failure(self, rows: np.ndarray, at: float, started: float, error: UserError,
                     version: str = "", role: Role = Role.LIVE) -> None:
        """Log a request a version did not answer (its error rate counts it)."""
        log = self._log()
        if log is not None:
            log.put(Answered(ids.new_id(at), self.name,
                             version or self.registry.active_version() or "", role, at,
                             time.perf_counter() - started, rows, None,
                             str(error) or type(error).__name__))

    def predict_many(self, rows: np.ndarray, chunk_rows: int) -> Prediction:
        """Score a large table in request-sized chunks (CSV uploads, held-out rows); one
        routing key for them all, so that a canary takes the whole table or none of it."""
        key = ids.new_id()
        parts = [self.predict(rows[i : i + chunk_rows], key)
                 for i in range(0, len(rows), chunk_rows)]
        versions = {part.version for part in parts}
        if len(versions) > 1:
            raise Unavailable("the model changed while the file was scored; submit it again")
        return Prediction(
            np.concatenate([p.outputs for p in parts]),
            np.concatenate([p.labels for p in parts]),
            parts[0].version,
            ",".join(sorted({p.worker for p in parts})),
        )

    def status(self) -> dict:
        """Broker, workers and queue depth of this model's queue, its active version, ready."""
        status = dict(self._predictor().status(self.name))
        status["active_version"] = self.registry.active_version()
        status["ready"] = bool(
            status["active_version"] and status["workers"] and status["broker"] != "unreachable"
        )
        status["problem"] = self.active_problem()
        return status

    @property
    def traffic(self) -> int:
        """Rows this web process has answered with this model."""
        return self._traffic[self.name]

    def active_problem(self) -> str | None:
        """Say when the active version's files are damaged, and what workers serve instead."""
        path = self.registry.active_dir()
        if path is None:
            return None
        # Hash the files again only when they change: readiness is polled often.
        key = (path.name, _file_stamps(path))
        if self._problem_cache[0] != key:
            self._problem_cache = (key, self._describe_damage(path.name))
        return self._problem_cache[1]

    def _describe_damage(self, version: str) -> str | None:
        """One line on a damaged version and the earlier one workers fall back to (if any)."""
        damage = self.registry.damage(version)
        if damage is None:
            return None
        instead = next((earlier for earlier in self.registry.fallbacks(version)
                        if self.registry.damage(earlier) is None), None)
        serving = (f"workers that have not loaded it serve {instead}, the most recent earlier "
                   "activation that is intact" if instead else "no earlier version is intact")
        return f"the active version {version} is damaged: {damage}; {serving}"


class Service:
    """Every model's view and one predictor, shared by every request of a process."""

    def __init__(self, settings: Settings, inline: bool = False):
        self.settings = settings
        self.catalog = Catalog.of(settings)
        self._inline = inline
        self._predictor: Predictor | None = None
        self._log: LogWriter | None = None
        self._lock = threading.Lock()
        self._views: dict[str, ModelView] = {}
        self._traffic: Counter[str] = Counter()
        self._default_name: tuple[float, str | None] = (float("-inf"), None)  # (until, name)
        self._stopping = threading.Event()
        self._judge: threading.Thread | None = None
        self._judge_problems: dict[str, str] = {}

    @property
    def predictor(self) -> Predictor:
        """Create the predictor on first use, i.e. in the serving process, after any fork
        (with a loop thread of its own, unless start() gave it the server's loop first)."""
        return self.start(None)

    def start(self, loop: asyncio.AbstractEventLoop | None) -> Predictor:
        """The predictor, made on the server's event loop if there is one (ASGI start-up)."""
        if self._predictor is None:
            with self._lock:  # concurrent first requests must share one predictor
                if self._predictor is None:
                    kind = InlinePredictor if self._inline else QueuePredictor
                    self._predictor = kind(self.settings, loop)
                    self._start_judge()
        return self._predictor

    def _start_judge(self) -> None:
        """Judge the rollouts under way in a thread of its own, in one web process of the
        home: the one that holds the judge's lock (another takes it over if that one ends)."""
        if self.settings.prediction_log_file is None or self.settings.rollout_judge_seconds <= 0:
            return  # no evidence, nothing to judge by

        def judging() -> None:
            wait, lock, said = self.settings.rollout_judge_seconds, None, ""
            while not self._stopping.wait(wait):
                started = time.perf_counter()
                try:
                    lock = lock if lock is not None else control.judge_lock(self.catalog.root)
                    if lock is None:
                        continue  # another process judges
                    self.judge_rollouts()
                except Exception as error:  # the judge outlives any one bad moment of the disk
                    if str(error) != said:  # once per cause, not every round
                        logger.warning("judging the rollouts failed (%s: %s); trying again",
                                       type(error).__name__, error)
                    said = str(error)
                # Reading the evidence grows with the rollout: keep it to 1/JUDGE_SHARE of
                # one core, however long the log.
                wait = max(self.settings.rollout_judge_seconds,
                           JUDGE_SHARE * (time.perf_counter() - started))
            if lock is not None:
                os.close(lock)

        self._judge = threading.Thread(target=judging, name="rollout-judge", daemon=True)
        self._judge.start()

    def judge_rollouts(self) -> list[RolloutStatus]:
        """Judge every model's rollout once: promote or abort those whose evidence is in."""
        store, writer = self.prediction_log, self.log_writer()
        if store is None or writer is None:
            return []
        judged = []
        for name in self.catalog.names():
            view = self.model(name)
            if not view.rollouts.path.exists():
                continue
            writer.flush()  # this process's own answers of the last moment count too
            try:
                found = control.decide(view.registry, store)
            except (UserError, sqlite3.Error, OSError) as error:
                if self._judge_problems.get(name) != str(error):
                    logger.warning("model %s: the rollout cannot be judged now: %s", name, error)
                self._judge_problems[name] = str(error)
                continue
            self._judge_problems.pop(name, None)
            if found is not None:
                judged.append(found)
                if found.verdict.decision is not Decision.WAIT:
                    logger.info("model %s: rollout of %s: %s (%s: %s)", name,
                                found.rollout.candidate, found.verdict.decision,
                                found.verdict.rule, found.verdict.reason)
        return judged

    @property
    def prediction_log(self) -> PredictionLog | None:
        """The prediction log's file (None when it is off), to read feedback and evidence."""
        writer = self.log_writer()
        return None if writer is None else writer.store

    def log_writer(self) -> LogWriter | None:
        """This process's writer of the prediction log, made on first use (after any fork)."""
        if self._log is None and (path := self.settings.prediction_log_file) is not None:
            with self._lock:
                if self._log is None:
                    self._log = LogWriter(
                        PredictionLog(path),
                        self.settings.prediction_log_retention_hours * 3600,
                        self.settings.prediction_log_buffer_bytes,
                        on_dropped=lambda count, _why: metrics.LOG_DROPPED.inc(count))
        return self._log

    def model(self, name: str) -> ModelView:
        """The view of a model that has a registry here (UnknownModel, a 404, if none)."""
        with self._lock:
            view = self._views.get(name)
        if view is not None and self.catalog.exists(name):
            return view
        registry = self.catalog.registry(name)  # refuses an unknown name, naming the others
        return self._keep(name, registry)

    def served_model(self, name: str) -> ModelView:
        """The view of a model with an active version; any other name is a 404."""
        view = self.model(name)
        if view.registry.active_version() is None:
            raise NotServed(f"model {name!r} has no active version (retired or never "
                            f"activated); the models served: {self._served_list()}")
        return view

    def default_name(self) -> str | None:
        """The model /api/v1/predict and the plain pages serve (Catalog.resolve_default),
        looked up again at most every DEFAULT_NAME_SECONDS."""
        until, name = self._default_name
        if time.monotonic() >= until:
            name = self.catalog.resolve_default()
            self._default_name = (time.monotonic() + DEFAULT_NAME_SECONDS, name)
        return name

    def default(self) -> ModelView:
        """The default model's view; while none is served, that of the configured name (whose
        features() then says no model is active: a 503, as before any model existed)."""
        name = self.default_name() or self.settings.model_name
        with self._lock:
            view = self._views.get(name)
        if view is not None:
            return view
        return self._keep(name, Registry(self.catalog.path_of(name), checker=None))

    def served(self) -> dict[str, str]:
        """Every served model's active version, by name."""
        return self.catalog.served()

    def views(self) -> list[ModelView]:
        """The view of every model with a registry here, sorted by name."""
        return [self.model(name) for name in self.catalog.names()]

    def status(self) -> dict:
        """The server's readiness: ready when at least one served model is; each model's."""
        models = {view.name: view.status() for view in self.views()}
        shared = dict(self.predictor.status(None))
        default = self.default()
        problem = models[default.name]["problem"] if default.name in models else None
        shared.update(active_version=default.registry.active_version(), problem=problem,
                      models={name: status["ready"] for name, status in models.items()
                              if status["active_version"]})
        shared["ready"] = any(shared["models"].values())
        return shared

    def _keep(self, name: str, registry: Registry) -> ModelView:
        """Make and cache a model's view, keeping the first one made if two requests raced."""
        view = ModelView(name, self.settings, registry, lambda: self.predictor, self._traffic,
                         self.log_writer)
        with self._lock:
            return self._views.setdefault(name, view)

    def _served_list(self) -> str:
        """The served models' names, for a refusal."""
        return ", ".join(sorted(self.served())) or "none yet"

    def close(self) -> None:
        """Stop the judge and the predictor (from a thread other than its loop's), then
        write the log."""
        self._stop_judge()
        if self._predictor is not None:
            self._predictor.close()
        if self._log is not None:
            self._log.close()

    async def aclose(self) -> None:
        """Stop the predictor, on the server's event loop (ASGI shutdown), then write the
        log (in a thread: its last batch may take the disk a moment)."""
        await asyncio.to_thread(self._stop_judge)
        if self._predictor is not None:
            await self._predictor.aclose()
        if self._log is not None:
            await asyncio.to_thread(self._log.close)

    def _stop_judge(self) -> None:
        """End the judge's thread (a judgement under way finishes first)."""
        self._stopping.set()
        if self._judge is not None:
            self._judge.join(timeout=10)


def _file_stamps(directory: Path) -> tuple:
    """Name, size and modification time of each file of a directory (what a rewrite changes)."""
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        return tuple((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries)
    except OSError:  # switched away and gone meanwhile: check again next time
        return (time.monotonic(),)


def elapsed_since(started: float) -> float:
    """Seconds since a perf_counter() reading."""
    return time.perf_counter() - started
