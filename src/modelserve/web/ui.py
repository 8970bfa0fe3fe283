"""The pages: predict one patient, the held-out predictions, accuracy over time, the models."""

from __future__ import annotations

import math
import secrets
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np
from flask import Blueprint, abort, render_template, request, send_file, session, url_for

from modelserve.config import Settings
from modelserve.errors import UserError
from modelserve.model import metrics
from modelserve.model.csvfile import read_header, score_csv
from modelserve.model.dataset import FLOAT32_MAX
from modelserve.model.holdout import held_out
from modelserve.model.runtime import InputError, Scores
from modelserve.web import charts, error_response, service
from modelserve.web.app_service import Service
from modelserve.web.parsing import BadRequest
from modelserve.web.uploads import QuotaExceeded, ResultStore, count_rows

blueprint = Blueprint("ui", __name__)
CHANGES_OF_LIVE_VERSION = ("activate", "rollback", "recover")


@blueprint.route("/", methods=["GET", "POST"])
def index():
    """The live model, its metrics and workers, and a form that scores one patient."""
    app_service = service()
    manifest = app_service.active_manifest()
    values, answer, problem, status_code = {}, None, None, 200
    bad_field = None
    if request.method == "POST" and manifest is not None:
        values = {name: request.form.get(name, "") for name in app_service.features()}
        try:
            row = _form_row(values, app_service.features())
            answer = app_service.predict(row)
        except BadRequest as error:
            problem, status_code = str(error), error.status
            bad_field = getattr(error, "field", None)
    return render_template("index.html", manifest=manifest, status=app_service.status(),
                           values=values, answer=answer, problem=problem,
                           bad_field=bad_field), status_code


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
def predictions():
    """The live model's predictions on its held-out rows, beside the truth."""
    app_service = service()
    manifest = app_service.active_manifest()
    if manifest is None:
        return render_template("predictions.html", manifest=None), 200
    try:
        rows = held_out(app_service.settings.data_dir, manifest)
    except UserError as error:  # no dataset stored here: still offer the CSV upload
        return render_template("predictions.html", manifest=manifest, held=None,
                               problem=str(error)), 200
    answer = app_service.predict_many(rows.features, app_service.settings.max_request_rows)
    return render_template(
        "predictions.html",
        manifest=manifest,
        held=rows,
        answer=answer,
        features=app_service.features(),
        evaluation=metrics.evaluate(rows.labels, answer.probabilities),
        roc=charts.roc_polyline(rows.labels, answer.probabilities),
        bars=charts.probability_bars(rows.labels, answer.probabilities),
        chart=charts,
    )


@blueprint.post("/predictions/upload")
def upload():
    """Score an uploaded CSV through the workers and offer the result to this session only."""
    app_service = service()
    upload_file = request.files.get("file")
    if upload_file is None or not upload_file.filename:
        raise BadRequest("choose a CSV file to upload")
    store = _result_store(app_service.settings)
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
                count = _score_upload(app_service, in_path, out_path, upload_file.filename)
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


def _score_upload(app_service: Service, in_path: Path, out_path: Path, name: str) -> int:
    """Score a saved upload into out_path, refusing too many rows before scoring any."""
    limit = app_service.settings.max_upload_rows
    try:
        header = read_header(in_path, app_service.features())
        rows = count_rows(in_path, header is not None)
        if rows > limit:
            raise BadRequest(f"{name}: {rows} rows; an upload may have at most {limit} rows "
                             "(MODELSERVE_MAX_UPLOAD_ROWS): split the file", 413)
        return score_csv(_Scorer(app_service), in_path, out_path)
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

    def __init__(self, app_service: Service):
        self._service = app_service
        self.features = app_service.features()

    def score(self, rows: np.ndarray) -> Scores:
        """Score one block of the file in request-sized chunks."""
        answer = self._service.predict_many(rows, self._service.settings.max_request_rows)
        return Scores(answer.probabilities, answer.labels, answer.version)


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
def accuracy():
    """Every version's accuracy, and the live model's accuracy over time."""
    app_service = service()
    book = app_service.accuracy_book
    versions = app_service.registry.list_versions()
    measured = {info.version: book.accuracy(info) for info in versions}
    activations = [e for e in app_service.registry.history()
                   if e.get("action") in CHANGES_OF_LIVE_VERSION and e.get("version") in measured]
    return render_template("accuracy.html", versions=versions, measured=measured,
                           activations=activations,
                           line=_timeline(activations, measured), chart=charts)


def _timeline(activations: list[dict], measured: dict[str, float | None]) -> str:
    """The live model's accuracy as a step line over the activation times."""
    points = [(datetime.fromisoformat(e["at"]).timestamp(), value)
              for e in activations if (value := measured.get(e["version"])) is not None]
    if not points:
        return ""
    start, end = points[0][0], max(points[-1][0], points[0][0] + 1)
    scaled = [((t - start) / (end - start), value) for t, value in points]
    return charts.timeline_polyline([*scaled, (1.0, scaled[-1][1])])


@blueprint.get("/models")
def models():
    """Every version, which one is live, and when and why it changed."""
    app_service = service()
    history = list(reversed(app_service.registry.history()))
    return render_template("models.html", versions=app_service.registry.list_versions(),
                           history=history, active=app_service.registry.active_version())
