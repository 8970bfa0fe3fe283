"""`modelserve predict`: score a CSV file with a registered model or a bundle."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import click

from modelserve.commands.common import name_option, open_registry
from modelserve.config import Settings
from modelserve.errors import UserError
from modelserve.model.csvfile import output_columns, score_csv
from modelserve.model.runtime import ModelRuntime
from modelserve.registry.catalog import UnknownModel

SAMPLE_BYTES = 1 << 16


def resolve_model(settings: Settings, model: str | None, name: str | None = None) -> Path:
    """Find the bundle to use: a directory path, a registered version, or the active one."""
    if model is not None and Path(model).is_dir():
        return Path(model)
    try:
        registry = open_registry(settings, name)
    except UnknownModel as error:
        raise UserError(f"no active model: {error}") from None
    if model is not None:
        return registry.get(registry.resolve(model)).path
    active = registry.active_dir()
    if active is None:
        raise UserError("no active model: give --model, or activate one (`modelserve models list`)")
    return active


def estimate_rows(path: Path) -> int:
    """Estimate a CSV's row count from its size and its first lines (for the progress bar)."""
    size = path.stat().st_size
    with open(path, "rb") as stream:
        sample = stream.read(SAMPLE_BYTES)
    lines = max(sample.count(b"\n"), 1)
    return max(1, int(size * lines / max(len(sample), 1)))


def shown_columns(columns: tuple[str, ...], most: int = 6) -> str:
    """The written columns for the closing line (a model of many classes: the first and last)."""
    if len(columns) <= most:
        return ",".join(columns)
    return ",".join((*columns[:2], "...", *columns[-2:]))


@click.command()
@click.argument(
    "in_path", metavar="IN.csv", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "-o",
    "--output",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the answers: probability,label (binary), p_<class>...,label "
    "(multiclass) or value (regression), then model_version.",
)
@click.option("--model", help="Version (or unique prefix) or bundle directory; default: active.")
@name_option
@click.pass_obj
def predict(settings: Settings, in_path: Path, out_path: Path, model: str | None,
            name: str | None) -> None:
    """Score every row of IN.csv (the model's feature columns, header optional) into OUTPUT."""
    started = time.perf_counter()
    bundle = resolve_model(settings, model, name)
    # A bundle directory someone handed over may carry any plan.npz: only a registry
    # version's plan, derived by the registry from the checked model, is used as it is.
    from_registry = model is None or not Path(model).is_dir()
    runtime = ModelRuntime.load(bundle, trust_cached_plan=from_registry)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with click.progressbar(
            length=estimate_rows(in_path), label="scoring", file=sys.stderr
        ) as bar:
            rows = score_csv(runtime, in_path, Path(tmp), progress=bar.update)
        os.replace(tmp, out_path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    elapsed = time.perf_counter() - started
    columns = shown_columns(output_columns(runtime.spec.output))
    click.echo(
        f"scored {rows} rows with model {runtime.version} ({runtime.spec.task.value}: "
        f"{columns}) in {elapsed:.2f} s "
        f"({rows / elapsed:,.0f} rows/s) -> {out_path}",
        err=True,
    )
