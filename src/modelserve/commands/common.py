"""Helpers shared by the commands: the registry, bundle destinations, metric summaries."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from modelserve.config import Settings
from modelserve.model.bundle import validate_manifest
from modelserve.model.dataset import (
    Dataset,
    load_dataset,
    load_table,
    parse_table_file,
    stored_dataset,
    stores_table,
)
from modelserve.model.metrics import format_value
from modelserve.model.spec import METRIC_LABELS, TASK_METRICS, Task
from modelserve.model.table import Table
from modelserve.registry import Registry
from modelserve.registry.catalog import Catalog, check_name

MODEL_HELP = "The model (default: MODELSERVE_MODEL_NAME, which is diabetes unless set)."


def name_option(command: Callable) -> Callable:
    """Add --name NAME (the model a command works on; the default model when not given)."""
    return click.option("--name", "name", metavar="NAME", default=None, help=MODEL_HELP)(command)


def model_name(settings: Settings, name: str | None) -> str:
    """The model a command works on: --name, else the home's default model."""
    return check_name(name if name is not None else settings.model_name)


def keep_options(default_reason: str) -> Callable:
    """Add --out, --register/--no-register, --activate and --reason to a bundle-making command."""
    options = [
        click.option(
            "--out",
            type=click.Path(path_type=Path, file_okay=False),
            help="Write the bundle here (else it is only registered).",
        ),
        click.option(
            "--register/--no-register",
            default=None,
            help="Add the bundle to the registry (the default when no --out is given).",
        ),
        click.option("--activate", is_flag=True, help="Register the bundle and serve it."),
        click.option(
            "--reason",
            default=default_reason,
            show_default=True,
            help="Recorded in the registry's history.",
        ),
        click.option("--name", "name", metavar="NAME", default=None,
                     help=f"{MODEL_HELP} Registering creates a model that is new."),
    ]

    def decorate(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def open_registry(settings: Settings, name: str | None = None) -> Registry:
    """Open an existing model's registry (the default model's when no name is given)."""
    return Catalog.of(settings).registry(model_name(settings, name))


def training_data(settings: Settings, path: Path | None, name: str | None = None) -> Dataset:
    """Load the given dataset file, or the model's stored one."""
    data_dir = settings.model_data_dir(model_name(settings, name))
    return load_dataset(path if path is not None else stored_dataset(data_dir))


def training_table(settings: Settings, path: Path | None, label: str | None,
                   task: Task | None, name: str | None = None) -> Dataset | Table:
    """What to train on: the Pima file (given or stored) as a Dataset, or a header CSV (given
    with --label, or stored by `data import --label`) as a Table."""
    if label is not None:
        if path is None:
            raise click.UsageError("--label needs --data (a stored table knows its label)")
        return parse_table_file(path, label, task)
    if task is not None:
        raise click.UsageError("--task needs --label")
    data_dir = settings.model_data_dir(model_name(settings, name))
    if path is not None:
        return load_dataset(path)
    if stores_table(data_dir):
        return load_table(data_dir)
    return load_dataset(stored_dataset(data_dir))  # parsed once, as the Pima file


@contextmanager
def bundle_destination(out: Path | None) -> Iterator[Path]:
    """Yield out, or a temporary directory removed afterwards when no --out was given."""
    if out is not None:
        yield out
        return
    with tempfile.TemporaryDirectory(prefix="modelserve-bundle-") as tmp:
        yield Path(tmp) / "bundle"


def keep_bundle(
    settings: Settings,
    bundle: Path,
    out: Path | None,
    register: bool | None,
    activate: bool,
    *,
    source: str,
    reason: str,
    name: str | None = None,
) -> None:
    """Say where a new bundle went; register it unless it was only written to --out."""
    if out is not None:
        click.echo(f"bundle written to {out}")
    if register or activate or out is None:
        register_bundle(settings, bundle, activate, source, reason, name)


def register_bundle(settings: Settings, bundle: Path, activate: bool, source: str, reason: str,
                    name: str | None) -> None:
    """Add a bundle to a model's registry (a new model is created) and optionally activate
    it, saying what happened."""
    model = model_name(settings, name)
    catalog = Catalog.of(settings)
    new = not catalog.exists(model)
    registry = catalog.registry_for_new(model)
    click.echo("checking the model in the sandbox and adding it to the registry ...")
    info = registry.add(bundle, source=source, reason=reason)
    say_recoveries(registry)
    click.echo(f"registered {info.version} as model {model}{' (a new model)' if new else ''}")
    if activate:
        registry.activate(info.version, source=source, reason=reason)
        say_recoveries(registry)
        click.echo(f"activated {info.version}")


def say_recoveries(registry: Registry) -> None:
    """Print what the registry repaired after an earlier crash (also in its history)."""
    for recovery in registry.recoveries:
        click.echo(recovery)
    registry.recoveries.clear()


def describe_metrics(manifest: Mapping[str, Any]) -> str:
    """Format a manifest's held-out metrics for a terminal, as its task has them."""
    spec = validate_manifest(dict(manifest))
    lines = [f"model {spec.version}  ({spec.task.value}, held-out rows: {spec.metrics.rows})"]
    for name in TASK_METRICS[spec.task]:
        lines.append(f"  {METRIC_LABELS[name]:<9} {format_value(spec.metrics.values[name], 4)}")
    if spec.metrics.confusion:
        lines.extend(confusion_lines(spec.output.classes, spec.metrics.confusion))
    return "\n".join(lines)


def confusion_lines(classes: tuple[str, ...], matrix: tuple[tuple[int, ...], ...]) -> list[str]:
    """A k x k confusion matrix as aligned terminal lines (truth by row)."""
    width = max(11, *(len(name) + 2 for name in classes))
    head = "".join(f"{name:>{width}}" for name in classes)
    lines = ["  confusion matrix (rows: actual; columns: predicted)", f"    {'':<{width}}{head}"]
    for name, row in zip(classes, matrix, strict=True):
        lines.append(f"    {name:<{width}}" + "".join(f"{n:>{width}}" for n in row))
    return lines
