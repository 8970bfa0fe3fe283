"""`modelserve data`: get the training data, validated, into MODELSERVE_HOME."""

from __future__ import annotations

from pathlib import Path

import click

from modelserve.config import Settings
from modelserve.model.dataset import PIMA_URL, fetch_dataset, import_dataset


@click.group()
def data() -> None:
    """Fetch or import the Pima Indians Diabetes data."""


@data.command()
@click.option("--url", default=PIMA_URL, show_default=True, help="Where to download the CSV from.")
@click.option(
    "--timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds to wait for the server.",
)
@click.pass_obj
def fetch(settings: Settings, url: str, timeout: float) -> None:
    """Download the public dataset, validate it and store it."""
    _report(fetch_dataset(url, settings.data_dir, timeout=timeout), settings)


@data.command(name="import")
@click.argument("path", type=click.Path(path_type=Path))
@click.pass_obj
def import_(settings: Settings, path: Path) -> None:
    """Validate a local copy of the dataset and store it."""
    _report(import_dataset(path, settings.data_dir), settings)


def _report(record: dict, settings: Settings) -> None:
    """Say what was stored."""
    click.echo(
        f"stored {record['rows']} rows ({record['positives']} positive) from {record['source']}\n"
        f"  file:   {settings.data_dir / record['file']}\n"
        f"  sha256: {record['sha256']}"
    )
