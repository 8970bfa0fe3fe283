"""Feedback in, live evidence out: the web side of the prediction log (API and pages)."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from modelserve.errors import UserError
from modelserve.model.spec import Output
from modelserve.predlog import feedback, ids, live
from modelserve.predlog.records import FeedbackRefused, Truth
from modelserve.predlog.store import PredictionLog
from modelserve.predlog.writer import SETTLE_SECONDS
from modelserve.rollout import control
from modelserve.rollout.control import RolloutStatus
from modelserve.web.app_service import ModelView, Service
from modelserve.web.evaluation import Measured
from modelserve.web.parsing import BadRequest
from modelserve.web.predictors import Unavailable

log = logging.getLogger(__name__)

LOG_OFF = ("this server keeps no prediction log (MODELSERVE_PREDICTION_LOG=off): there are no "
           "answers to give feedback on")
DEFAULT_WINDOW_HOURS = 24.0
MAX_WINDOW_HOURS = 24 * 365.0


@dataclass(frozen=True)
class VersionEvidence:
    """One version's live figures beside its held-out metric."""

    live: live.VersionLive
    held_out: Measured | None  # None: the version is no longer stored


@contextmanager
def refusals() -> Iterator[None]:
    """Answer a FeedbackRefused as the BadRequest (status and line) the views answer with,
    and a log the disk will not give (full, damaged) as a 503."""
    try:
        yield
    except FeedbackRefused as refused:
        raise BadRequest(str(refused), refused.status) from None
    except (sqlite3.Error, OSError) as error:
        log.warning("the prediction log cannot be used: %s", error)
        raise Unavailable(f"the prediction log cannot be used now ({error}); try again "
                          "later") from None


def output_of(view: ModelView) -> Output:
    """The output of the model's live version, which feedback is read against."""
    spec = view.active_spec()
    if spec is None:
        raise BadRequest(f"model {view.name!r} has no active version to read feedback for", 404)
    return spec.output


def the_log(service: Service) -> PredictionLog:
    """The prediction log, or a 404 saying that this server keeps none."""
    log = service.prediction_log
    if log is None:
        raise BadRequest(LOG_OFF, 404)
    return log


def record(service: Service, view: ModelView, truths: list[Truth]) -> None:
    """Check feedback against the log and store it, all or nothing."""
    store = the_log(service)
    writer = service.log_writer()
    if writer is not None:
        writer.flush()  # this process's own answers of the last moment first
    with refusals():
        known = _rows_of(store, view.name, [truth.prediction_id for truth in truths])
        feedback.check_known(truths, known, view.name)
        store.add_feedback(view.name, truths, time.time())


def _rows_of(store: PredictionLog, model: str, wanted: list[str]) -> dict[str, int]:
    """The rows of each id the log has; ids younger than the log's settling time that are not
    there yet (another process's writer has them) are waited for, that long at most."""
    known = store.rows_of(model, wanted)
    now = time.time()
    waits = {pid: ids.wait_for(pid, now, SETTLE_SECONDS) for pid in wanted if pid not in known}
    young = [pid for pid, wait in waits.items() if wait > 0]
    if young:
        time.sleep(min(max(waits.values()), SETTLE_SECONDS))
        known.update(store.rows_of(model, young))
    return known


def read_hours(given: list[str]) -> float:
    """The window of ?hours= (once at most): a number of hours above 0, up to a year."""
    if not given:
        return DEFAULT_WINDOW_HOURS
    refusal = BadRequest(f"hours must be given once, as a number of hours above 0 and up to "
                         f"{MAX_WINDOW_HOURS:.0f}")
    if len(given) > 1:
        raise refusal
    try:
        hours = float(given[0])
    except ValueError:
        raise refusal from None
    if not 0 < hours <= MAX_WINDOW_HOURS:  # also refuses nan
        raise refusal
    return hours


def evidence(service: Service, view: ModelView, hours: float = DEFAULT_WINDOW_HOURS
             ) -> list[VersionEvidence]:
    """Every version's live figures over the last hours, with its held-out metric."""
    store = the_log(service)
    output = output_of(view)
    since = time.time() - hours * 3600
    with refusals():
        found = live.summarize(output, store.traffic(view.name, since),
                               store.labelled(view.name, since))
    stored = {info.version: info for info in view.registry.list_versions()}
    return [VersionEvidence(item, view.accuracy_book.headline(stored[item.version])
                            if item.version in stored else None) for item in found]


def rollout_status(service: Service, view: ModelView, agreement: bool = True
                   ) -> RolloutStatus | None:
    """The model's rollout under way with its evidence and verdict (None: no rollout, or
    none that can be judged here); with agreement=False, without reading the pairs of
    answers that agreement takes."""
    rollout, store = view.rollout(), service.prediction_log
    if rollout is None or store is None:
        return None
    with refusals():
        try:
            return control.status(rollout, store, view.registry, agreement=agreement)
        except UserError as error:  # e.g. the live version's manifest unreadable
            log.warning("model %s: the rollout's evidence cannot be read: %s", view.name, error)
            return None


def rollout_json(found: RolloutStatus | None) -> dict | None:
    """A rollout as the API answers it (None: no rollout)."""
    if found is None:
        return None
    rollout, agreement = found.rollout, found.agreement
    return {
        "candidate": rollout.candidate, "live": rollout.live, "mode": rollout.mode.value,
        "percent": rollout.percent, "started_at": rollout.started_at, "source": rollout.source,
        "policy": asdict(rollout.policy),
        "agreement": {"rows": agreement.rows, "labels": agreement.labels,
                      "mean_abs_diff": agreement.mean_abs_diff},
        "verdict": {"decision": found.verdict.decision.value, "rule": found.verdict.rule,
                    "reason": found.verdict.reason},
    }


def as_json(item: VersionEvidence) -> dict:
    """One version's evidence as the API answers it (latencies in milliseconds)."""
    figures = item.live
    return {
        "version": figures.version, "role": figures.role.value, "requests": figures.requests,
        "rows": figures.rows, "errors": figures.errors, "error_rate": figures.error_rate,
        "latency_p50_ms": _ms(figures.latency_p50), "latency_p99_ms": _ms(figures.latency_p99),
        "metric": figures.metric, "labelled": figures.labelled, "value": figures.value,
        "held_out": None if item.held_out is None else item.held_out.value,
        "over_time": [{"start": point.start, "labelled": point.labelled, "value": point.value}
                      for point in figures.over_time],
    }


def _ms(seconds: float | None) -> float | None:
    """Seconds as milliseconds (None stays None)."""
    return None if seconds is None else seconds * 1000
