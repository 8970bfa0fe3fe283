"""Helpers shared by the commands: the registry, bundle destinations, metric summaries."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from modelserve.config import Settings
from modelserve.model.dataset import Dataset, load_dataset, stored_dataset
from modelserve.model.metrics import format_value
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


def format_metric(manifest: dict[str, Any], key: str, digits: int = 3) -> str:
    """Format a held-out metric from the manifest, or '-' when it is not a number."""
    metrics = manifest.get("metrics")
    return format_value(metrics.get(key) if isinstance(metrics, dict) else None, digits)


def describe_metrics(manifest: dict) -> str:
    """Format a manifest's held-out metrics for a terminal."""
    m = manifest["metrics"]
    (tn, fp), (fn, tp) = m["confusion_matrix"]
    return (
        f"model {manifest['version']}  (held-out rows: {m['rows']})\n"
        f"  accuracy  {format_metric(manifest, 'accuracy', 4)}\n"
        f"  ROC AUC   {format_metric(manifest, 'roc_auc', 4)}\n"
        f"  log loss  {format_metric(manifest, 'log_loss', 4)}\n"
        f"  confusion matrix   predicted 0  predicted 1\n"
        f"    actual 0         {tn:>11}  {fp:>11}\n"
        f"    actual 1         {fn:>11}  {tp:>11}"
    )
