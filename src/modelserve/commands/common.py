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
    ]

    def decorate(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def open_registry(settings: Settings) -> Registry:
    """Open the registry under MODELSERVE_HOME."""
    return Registry(settings.registry_dir)


def training_data(settings: Settings, path: Path | None) -> Dataset:
    """Load the given dataset file, or the stored one."""
    return load_dataset(path if path is not None else stored_dataset(settings.data_dir))


def training_table(settings: Settings, path: Path | None, label: str | None,
                   task: Task | None) -> Dataset | Table:
    """What to train on: the Pima file (given or stored) as a Dataset, or a header CSV (given
    with --label, or stored by `data import --label`) as a Table."""
    if label is not None:
        if path is None:
            raise click.UsageError("--label needs --data (a stored table knows its label)")
        return parse_table_file(path, label, task)
    if task is not None:
        raise click.UsageError("--task needs --label")
    if path is not None:
        return load_dataset(path)
    if stores_table(settings.data_dir):
        return load_table(settings.data_dir)
    return load_dataset(stored_dataset(settings.data_dir))  # parsed once, as the Pima file


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
) -> None:
    """Say where a new bundle went; register it unless it was only written to --out."""
    if out is not None:
        click.echo(f"bundle written to {out}")
    if register or activate or out is None:
        _register(settings, bundle, activate, source, reason)


def _register(settings: Settings, bundle: Path, activate: bool, source: str, reason: str) -> None:
    """Add a bundle to the registry and optionally activate it, saying what happened."""
    registry = open_registry(settings)
    click.echo("checking the model in the sandbox and adding it to the registry ...")
    info = registry.add(bundle, source=source, reason=reason)
    say_recoveries(registry)
    click.echo(f"registered {info.version}")
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
