"""`modelserve data`: get the training data, validated, into MODELSERVE_HOME."""

from __future__ import annotations

from pathlib import Path

import click

from modelserve.commands.common import model_name, name_option
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
@name_option
@click.pass_obj
def fetch(settings: Settings, url: str, timeout: float, name: str | None) -> None:
    """Download the public dataset, validate it and store it."""
    data_dir = settings.model_data_dir(model_name(settings, name))
    _report(fetch_dataset(url, data_dir, timeout=timeout), data_dir)


@data.command()
@click.option(
    "--if-missing",
    is_flag=True,
    help="Keep a dataset already stored; store the example only when there is none.",
)
@name_option
@click.pass_obj
def example(settings: Settings, if_missing: bool, name: str | None) -> None:
    """Store the built-in copy of the Pima data; no network needed.

    The copy ships inside the package and is checked like a download (its sha256, then the
    same validation as `data fetch`).
    """
    data_dir = settings.model_data_dir(model_name(settings, name))
    if if_missing:
        stored = [data_dir / file for file in (DATA_FILE, TABLE_FILE)
                  if (data_dir / file).is_file()]
        if stored:
            click.echo(f"a dataset is already stored; keeping it: {stored[0]}")
            return
    _report(store_example(data_dir), data_dir)


@data.command(name="import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--label", help="The label column of a CSV with a header row (any position). "
              "Without it, PATH is the headerless Pima file.")
@click.option("--task", type=click.Choice([task.value for task in Task]),
              help="What the label is (default: inferred from its values, and said).")
@name_option
@click.pass_obj
def import_(settings: Settings, path: Path, label: str | None, task: str | None,
            name: str | None) -> None:
    """Validate a CSV and store it as the data to train on.

    With --label, the first row names the columns: they become the model's feature names,
    every other column must be numeric, and the label may be any column.
    """
    data_dir = settings.model_data_dir(model_name(settings, name))
    if label is None:
        if task is not None:
            raise click.UsageError("--task needs --label (the column it describes)")
        _report(import_dataset(path, data_dir), data_dir)
        return
    table = import_table(path, data_dir, label, Task(task) if task else None)
    _report_table(table, data_dir)


def _report_table(table: Table, data_dir: Path) -> None:
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
        f"  file:   {data_dir / TABLE_FILE}\n"
        f"  sha256: {table.sha256}"
    )


def _report(record: dict, data_dir: Path) -> None:
    """Say what was stored."""
    click.echo(
        f"stored {record['rows']} rows ({record['positives']} positive) from {record['source']}\n"
        f"  file:   {data_dir / record['file']}\n"
        f"  sha256: {record['sha256']}"
    )
