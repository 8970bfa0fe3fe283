"""The pages: the models, and per model its predict form, held-out predictions, metric over
time and versions. The plain paths (/, /predictions, /accuracy, /models) show the default model;
/models/<name>/... show the named one."""

from __future__ import annotations

import math
import secrets
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from flask import Blueprint, abort, g, render_template, request, send_file, session, url_for

from modelserve.config import Settings
from modelserve.errors import UserError
from modelserve.model import answers, metrics
from modelserve.model.csvfile import output_columns, read_header, score_csv
from modelserve.model.dataset import FLOAT32_MAX
from modelserve.model.runtime import InputError, Scores
from modelserve.model.spec import HEADLINE, METRIC_LABELS, TASK_METRICS, ModelSpec, Task
from modelserve.predlog.feedback import read_csv, truth_key
from modelserve.registry import VersionInfo
from modelserve.rollout.policy import progress
from modelserve.web import charts, error_response, evidence, service
from modelserve.web.app_service import ModelView
from modelserve.web.evaluation import Measured, held_rows, rows_to_judge
from modelserve.web.parsing import BadRequest
from modelserve.web.predictors import Prediction, Unavailable
from modelserve.web.uploads import QuotaExceeded, ResultStore, count_rows

blueprint = Blueprint("ui", __name__)
CHANGES_OF_LIVE_VERSION = ("activate", "rollback", "recover")


@dataclass(frozen=True)
class ModelRow:
    """One model of the list on /: its live version, task, headline metric and traffic."""

    name: str
    version: str | None
    task: str
    measured: Measured | None  # None: no live version to measure
    traffic: int  # rows this web process answered with it


@blueprint.app_context_processor
def _page_model() -> dict:
    """The model a page is about (None: the default model's plain paths), for its links."""
    return {"model_name": g.get("model_name")}


def _view(name: str | None) -> ModelView:
    """The named model (an unknown name is a 404 naming the models), else the default one."""
    g.model_name = name
    app_service = service()
    return app_service.default() if name is None else app_service.model(name)


def _model_rows() -> list[ModelRow]:
    """Every model of the registry, for the list on /."""
    rows = []
    for view in service().views():
        spec, version = view.active_spec(), view.registry.active_version()
        measured = None
        if version is not None:
            measured = view.accuracy_book.headline(view.registry.get(version))
        rows.append(ModelRow(view.name, version, spec.task.value if spec else "-", measured,
                             view.traffic))
    return rows


@blueprint.route("/", methods=["GET", "POST"])
@blueprint.route("/models/<name>", methods=["GET", "POST"])
def index(name: str | None = None):
    """The models (on /), a model's metrics and workers, and a form that scores one row."""
    view = _view(name)
    spec = view.active_spec()
    values, answer, problem, status_code = {}, None, None, 200
    bad_field = None
    if request.method == "POST" and spec is not None:
        values = {feature: request.form.get(feature, "") for feature in spec.feature_names}
        try:
            row = _form_row(values, spec.feature_names)
            answer = _of_this_model(spec, view.predict(row))
        except BadRequest as error:
            problem, status_code = str(error), error.status
            bad_field = getattr(error, "field", None)
    return render_template("index.html", spec=spec, status=view.status(), model=view.name,
                           models=_model_rows() if name is None else None,
                           values=values, answer=answer, problem=problem, bad_field=bad_field,
                           shown=_shown(spec, answer), labels=METRIC_LABELS), status_code


def _of_this_model(spec: ModelSpec, answer: Prediction) -> Prediction:
    """The answer, if it has the live model's outputs (not those of a version swapped out)."""
    if answer.outputs.ndim != 2 or answer.outputs.shape[1] != spec.output.width:
        raise Unavailable(f"the model changed while answering (now {answer.version}); "
                          "load the page again")
    return answer


def _shown(spec: ModelSpec | None, answer: Prediction | None) -> str:
    """The form's answer in words ("" before one is asked for)."""
    if spec is None or answer is None or len(answer.outputs) == 0:
        return ""
    return answers.shown_answer(spec.output, answer.outputs, answer.labels)


def _metric_names(spec: ModelSpec | None) -> list[str]:
    """The task's metrics, the headline one first."""
    if spec is None:
        return []
    headline, _higher_is_better = HEADLINE[spec.task]
    return [headline, *(name for name in TASK_METRICS[spec.task] if name != headline)]


class _FieldError(BadRequest):
    """A form field that is not a usable number; `field` names it for the page."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _form_row(values: dict[str, str], features: list[str]) -> np.ndarray:
    """Read the form's fields as one row of finite numbers."""
    row = []
    for name in features:
        text = values[name].strip()
        try:
            number = float(text)
        except ValueError:
            raise _FieldError(name, f"{name}: {text[:40]!r} is not a number") from None
        # float32 is what the model computes in: 1e39 would become infinity there.
        if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
            raise _FieldError(
                name, f"{name}: {text[:40]!r} is not a finite number within float32 range")
        row.append(number)
    return np.asarray([row], dtype=np.float32)


@blueprint.get("/predictions")
@blueprint.get("/models/<name>/predictions")
def predictions(name: str | None = None):
    """The live model's predictions on its held-out rows, beside the truth."""
    view = _view(name)
    spec = view.active_spec()
    if spec is None:
        return render_template("predictions.html", spec=None, model=view.name), 200
    try:
        rows = rows_to_judge(view.data_dir, spec)
    except UserError as error:  # no data stored here, or data of other columns or task
        return render_template("predictions.html", spec=spec, held=None, model=view.name,
                               problem=str(error), csv_columns=output_columns(spec.output)), 200
    answer = _of_this_model(
        spec, view.predict_many(rows.features, view.settings.max_request_rows))
    evaluation = metrics.evaluate_task(spec.task, rows.labels, answer.outputs, spec.threshold)
    return render_template(
        "predictions.html",
        spec=spec,
        model=view.name,
        held=rows,
        answer=answer,
        table=held_rows(spec, rows, answer.outputs, answer.labels),
        features=spec.feature_names,
        evaluation=evaluation,
        metric_names=_metric_names(spec),
        labels=METRIC_LABELS,
        csv_columns=output_columns(spec.output),
        chart=charts,
        **_charts(spec.task, rows.labels, answer.outputs, evaluation),
    )


def _charts(task: Task, truth: np.ndarray, outputs: np.ndarray, evaluation: dict) -> dict:
    """The charts that fit the task, by the names the template draws them under."""
    if task is Task.BINARY:
        return {"roc": charts.roc_polyline(truth, outputs[:, 0]),
                "bars": charts.probability_bars(truth, outputs[:, 0])}
    if task is Task.MULTICLASS:
        return {"cells": charts.confusion_cells(evaluation["confusion_matrix"])}
    return {"scatter": charts.scatter(truth, outputs[:, 0]),
            "residuals": charts.residual_bars(truth, outputs[:, 0])}


@blueprint.post("/predictions/upload")
@blueprint.post("/models/<name>/predictions/upload")
def upload(name: str | None = None):
    """Score an uploaded CSV through the workers and offer the result to this session only."""
    view = _view(name)
    upload_file = request.files.get("file")
    if upload_file is None or not upload_file.filename:
        raise BadRequest("choose a CSV file to upload")
    store = _result_store(view.settings)
    store.root.mkdir(parents=True, exist_ok=True)
    store.remove_expired()
    owner = session.setdefault("owner", secrets.token_hex(16))
    try:
        store.check_room()
        with tempfile.TemporaryDirectory(dir=store.root, prefix=".upload-") as scratch:
            in_path = Path(scratch) / "upload.csv"
            upload_file.save(in_path)
            result_id, out_path = store.new_path(owner)
            try:
                count = _score_upload(view, in_path, out_path, upload_file.filename)
            except BaseException:
                out_path.unlink(missing_ok=True)  # a part-written result is no result
                raise
        _keep_within_quota(store, out_path)
    except QuotaExceeded as error:
        return error_response(507, str(error))
    return render_template("uploaded.html", count=count, name=upload_file.filename,
                           minutes=max(1, store.lifetime_seconds // 60),
                           link=url_for("ui.download", result_id=result_id)), 201


def _result_store(settings: Settings) -> ResultStore:
    """The results folder with its quota and lifetime."""
    return ResultStore(settings.results_dir, settings.results_quota_bytes,
                       settings.result_lifetime_seconds)


def _score_upload(view: ModelView, in_path: Path, out_path: Path, name: str) -> int:
    """Score a saved upload into out_path, refusing too many rows before scoring any."""
    limit = view.settings.max_upload_rows
    try:
        header = read_header(in_path, view.features())
        rows = count_rows(in_path, header is not None)
        if rows > limit:
            raise BadRequest(f"{name}: {rows} rows; an upload may have at most {limit} rows "
                             "(MODELSERVE_MAX_UPLOAD_ROWS): split the file", 413)
        return score_csv(_Scorer(view), in_path, out_path)
    except InputError as error:
        # Name the file as the user knows it, not by our scratch path.
        raise BadRequest(str(error).replace(str(in_path), name)) from None
    except UnicodeDecodeError:  # reading the header row decodes the file as UTF-8
        raise BadRequest(f"{name}: not UTF-8 text; save it as a UTF-8 CSV file") from None


def _keep_within_quota(store: ResultStore, out_path: Path) -> None:
    """Drop a new result that took the results folder past its quota, and say so."""
    try:
        store.check_room()
    except QuotaExceeded:
        out_path.unlink(missing_ok=True)
        raise


class _Scorer:
    """score_csv's runtime interface, computed by the workers instead of in-process."""

    def __init__(self, view: ModelView):
        self._view = view
        self.features = view.features()  # refuses (503) when no model is active
        spec = view.active_spec()
        if spec is None:  # deactivated in between
            raise Unavailable("no model is active yet")
        self.spec = spec  # its output says which columns a scored row gets

    def score(self, rows: np.ndarray) -> Scores:
        """Score one block of the file in request-sized chunks."""
        answer = self._view.predict_many(rows, self._view.settings.max_request_rows)
        return Scores(answer.outputs, answer.labels, answer.version)


@blueprint.get("/predictions/results/<result_id>.csv")
def download(result_id: str):
    """Download a scored file: only the session that uploaded it, within its lifetime."""
    store = _result_store(service().settings)
    path = store.find(session.get("owner"), result_id)
    if path is None:
        abort(404, "no such result (a result is kept for the browser session that uploaded "
                   f"it, for {max(1, store.lifetime_seconds // 60)} minutes)")
    return send_file(path, mimetype="text/csv", as_attachment=True,
                     download_name=f"predictions-{result_id[:8]}.csv")


@blueprint.get("/accuracy")
@blueprint.get("/models/<name>/accuracy")
def accuracy(name: str | None = None):
    """Every version's headline metric, and the live model's over time."""
    return _accuracy_page(_view(name))


@blueprint.post("/feedback/upload")
@blueprint.post("/models/<name>/feedback/upload")
def feedback_upload(name: str | None = None):
    """Record the truth of answered rows from a CSV (prediction_id, row, label or value)."""
    view = _view(name)
    upload_file = request.files.get("file")
    if upload_file is None or not upload_file.filename:
        raise BadRequest("choose a CSV file of feedback to upload")
    try:
        text = upload_file.read().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest(f"{upload_file.filename}: not UTF-8 text; save it as a UTF-8 CSV "
                         "file") from None
    with evidence.refusals():
        truths = read_csv(text, evidence.output_of(view), view.settings.max_upload_rows)
    evidence.record(service(), view, truths)
    return _accuracy_page(view, f"{len(truths)} rows of feedback recorded from "
                                f"{upload_file.filename}"), 201


def _accuracy_page(view: ModelView, notice: str = ""):
    """The metric page of a model: held-out figures, live figures, the timeline."""
    book = view.accuracy_book
    versions = view.registry.list_versions()
    measured = {info.version: book.headline(info) for info in versions}
    metric = _page_metric(versions)
    activations = [e for e in view.registry.history()
                   if e.get("action") in CHANGES_OF_LIVE_VERSION and e.get("version") in measured]
    line, scale = _timeline(activations, measured, metric)
    label = METRIC_LABELS.get(metric, metric)
    on_live, rollout = None, None
    if service().prediction_log is not None and view.active_spec() is not None:
        try:
            on_live = evidence.evidence(service(), view)
            rollout = evidence.rollout_status(service(), view, agreement=False)  # a notice
        except Unavailable:  # the log unreadable now: the rest of the page still shows
            on_live = None
    return render_template("accuracy.html", versions=versions, measured=measured, model=view.name,
                           activations=activations, metric=metric, labels=METRIC_LABELS,
                           title=label[:1].upper() + label[1:], line=line, scale=scale,
                           chart=charts, on_live=on_live, rollout=rollout, notice=notice,
                           truth_key=_truth_key(view))


ROLLOUT_EVENTS = ("shadow", "canary", "abort")


@blueprint.get("/rollout")
@blueprint.get("/models/<name>/rollout")
def rollout(name: str | None = None):
    """A model's rollout: live and candidate side by side, the policy, how far it is."""
    view = _view(name)
    found, problem = None, ""
    if service().prediction_log is None:
        problem = evidence.LOG_OFF
    else:
        try:
            found = evidence.rollout_status(service(), view)
        except Unavailable as error:  # the log unreadable now: say so, show the history
            problem = str(error)
    requirements = [] if found is None else progress(found.rollout, found.live, found.candidate,
                                                     time.time())
    events = [event for event in view.registry.history()
              if event.get("action") in ROLLOUT_EVENTS or event.get("source") == "rollout"]
    return render_template("rollout.html", model=view.name, found=found, problem=problem,
                           requirements=requirements, events=events[-10:],
                           labels=METRIC_LABELS, when=_utc)


def _utc(seconds: float) -> str:
    """A time as the pages show it (UTC, to the second)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _truth_key(view: ModelView) -> str:
    """The feedback CSV's truth column for this model ("label" until one is active)."""
    spec = view.active_spec()
    return "label" if spec is None else truth_key(spec.output)


def _page_metric(versions: list[VersionInfo]) -> str:
    """The metric the page is about: the live version's headline (else the first listed's)."""
    ordered = sorted(versions, key=lambda info: not info.active)
    for info in ordered:
        if info.spec is not None:
            return HEADLINE[info.spec.task][0]
    return "accuracy"


def _timeline(activations: list[dict], measured: dict[str, Measured],
              metric: str) -> tuple[str, charts.Scale]:
    """The live model's metric as a step line over the activation times, and its scale."""
    points = [(datetime.fromisoformat(e["at"]).timestamp(), m.value)
              for e in activations
              if (m := measured[e["version"]]).metric == metric and m.value is not None]
    if not points:
        return "", charts.ACCURACY_SCALE
    scale = charts.metric_scale(metric, [value for _, value in points])
    start, end = points[0][0], max(points[-1][0], points[0][0] + 1)
    scaled = [((t - start) / (end - start), value) for t, value in points]
    return charts.timeline_polyline([*scaled, (1.0, scaled[-1][1])], scale), scale


@blueprint.get("/models")
@blueprint.get("/models/<name>/versions")
def models(name: str | None = None):
    """Every version of a model, which one is live, and when and why it changed."""
    view = _view(name)
    history = list(reversed(view.registry.history()))
    return render_template("models.html", versions=view.registry.list_versions(),
                           history=history, active=view.registry.active_version(),
                           model=view.name, labels=METRIC_LABELS)
