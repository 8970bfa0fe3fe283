"""`modelserve model`: check a bundle, import a legacy Keras 2 model."""

from __future__ import annotations

from pathlib import Path

import click

from modelserve.commands.common import (
    bundle_destination,
    describe_metrics,
    keep_bundle,
    keep_options,
    training_data,
)
from modelserve.config import Settings
from modelserve.model.bundle import read_manifest
from modelserve.model.dataset import stored_dataset
from modelserve.sandbox.confined import check_bundle_confined, convert_legacy_confined


@click.group()
def model() -> None:
    """Work with model bundles."""


@model.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--timeout", default=120.0, show_default=True, help="Seconds the check may take.")
def check(bundle: Path, timeout: float) -> None:
    """Load BUNDLE in the sandbox and run it on its contract's example rows."""
    report = check_bundle_confined(bundle, timeout=timeout)
    click.echo(
        f"ok: {report.version} loads, fits its contract and reproduces its "
        f"{report.examples} example rows (max difference {report.max_difference:.2g}); "
        f"runtime: {report.runtime}"
    )


@model.command(name="import-legacy")
@click.argument("architecture", type=click.Path(path_type=Path))
@click.argument("weights", type=click.Path(path_type=Path))
@click.option(
    "--data",
    "data_path",
    type=click.Path(path_type=Path),
    help="CSV to evaluate on (default: the stored dataset).",
)
@keep_options("imported legacy model")
@click.pass_obj
def import_legacy_command(
    settings: Settings,
    architecture: Path,
    weights: Path,
    data_path: Path | None,
    out: Path | None,
    register: bool | None,
    activate: bool,
    reason: str,
) -> None:
    """Convert a Keras 2 model.json + model.h5 pair into a bundle (in the sandbox)."""
    training_data(settings, data_path)  # a bad dataset is refused here, with its own words
    dataset = data_path if data_path is not None else stored_dataset(settings.data_dir)
    with bundle_destination(out) as bundle:
        convert_legacy_confined(architecture, weights, dataset, bundle)
        click.echo(describe_metrics(read_manifest(bundle)))
        keep_bundle(
            settings,
            bundle,
            out,
            register,
            activate,
            source=f"import-legacy {architecture}",
            reason=reason,
        )
