"""`modelserve data`: get the training data, validated, into MODELSERVE_HOME."""

from __future__ import annotations

from pathlib import Path

import click

from modelserve.config import Settings
from modelserve.model.dataset import (
    DATA_FILE,
    PIMA_URL,
    TABLE_FILE,
    fetch_dataset,
    import_dataset,
    import_table,
    store_example,
)
from modelserve.model.spec import Task
from modelserve.model.table import Table


@click.group()
def data() -> None:
    """Store the built-in Pima Indians Diabetes data, fetch it, or import your own CSV."""


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
        stored = [settings.data_dir / name for name in (DATA_FILE, TABLE_FILE)
                  if (settings.data_dir / name).is_file()]
        if stored:
            click.echo(f"a dataset is already stored; keeping it: {stored[0]}")
            return
    _report(store_example(settings.data_dir), settings)


@data.command(name="import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--label", help="The label column of a CSV with a header row (any position). "
              "Without it, PATH is the headerless Pima file.")
@click.option("--task", type=click.Choice([task.value for task in Task]),
              help="What the label is (default: inferred from its values, and said).")
@click.pass_obj
def import_(settings: Settings, path: Path, label: str | None, task: str | None) -> None:
    """Validate a CSV and store it as the data to train on.

    With --label, the first row names the columns: they become the model's feature names,
    every other column must be numeric, and the label may be any column.
    """
    if label is None:
        if task is not None:
            raise click.UsageError("--task needs --label (the column it describes)")
        _report(import_dataset(path, settings.data_dir), settings)
        return
    table = import_table(path, settings.data_dir, label, Task(task) if task else None)
    _report_table(table, settings)


def _report_table(table: Table, settings: Settings) -> None:
    """Say what was stored, and how the task was chosen."""
    if table.inferred:
        click.echo(f"task: {table.task.value} ({table.inferred})")
    for original, plain in table.renamed:
        click.echo(f"column {original!r} is named {plain}")
    classes = f", classes: {', '.join(table.classes)}" if table.classes else ""
    click.echo(
        f"stored {table.rows} rows from {table.source}: {len(table.feature_names)} features "
        f"({', '.join(table.feature_names)}), label {table.label}, task {table.task.value}"
        f"{classes}\n"
        f"  file:   {settings.data_dir / TABLE_FILE}\n"
        f"  sha256: {table.sha256}"
    )


def _report(record: dict, settings: Settings) -> None:
    """Say what was stored."""
    click.echo(
        f"stored {record['rows']} rows ({record['positives']} positive) from {record['source']}\n"
        f"  file:   {settings.data_dir / record['file']}\n"
        f"  sha256: {record['sha256']}"
    )
