"""`modelserve data`: get the training data, validated, into MODELSERVE_HOME."""

from __future__ import annotations

from pathlib import Path

import click

from modelserve.config import Settings
from modelserve.model.dataset import (
    PIMA_URL,
    DatasetError,
    fetch_dataset,
    import_dataset,
    store_example,
    stored_dataset,
)


@click.group()
def data() -> None:
    """Store the built-in Pima Indians Diabetes data, fetch it, or import a CSV."""


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


@data.command()
@click.option(
    "--if-missing",
    is_flag=True,
    help="Keep a dataset already stored; store the example only when there is none.",
)
@click.pass_obj
def example(settings: Settings, if_missing: bool) -> None:
    """Store the built-in copy of the Pima data; no network needed.

    The copy ships inside the package and is checked like a download (its sha256, then the
    same validation as `data fetch`).
    """
    if if_missing:
        try:
            path = stored_dataset(settings.data_dir)
        except DatasetError:
            pass  # nothing stored yet: store the example below
        else:
            click.echo(f"a dataset is already stored; keeping it: {path}")
            return
    _report(store_example(settings.data_dir), settings)


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
