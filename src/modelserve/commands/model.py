"""`modelserve model`: check a bundle, import a Keras 3 file or a legacy Keras 2 model."""

from __future__ import annotations

from pathlib import Path

import click

from modelserve.commands.common import (
    bundle_destination,
    describe_metrics,
    keep_bundle,
    keep_options,
    model_name,
    training_data,
)
from modelserve.config import Settings
from modelserve.model.bundle import read_manifest
from modelserve.model.dataset import load_table, parse_table_file, stored_dataset
from modelserve.model.importing import (
    DEFAULT_SEED,
    DEFAULT_TEST_FRACTION,
    refuse_non_archive,
    table_for_features,
)
from modelserve.model.spec import Task
from modelserve.model.table import Table
from modelserve.sandbox.confined import (
    check_bundle_confined,
    convert_legacy_confined,
    import_keras_confined,
)

RUNTIME_WORDS = {"plan": "its layers compile to the numpy plan",
                 "keras": "layers outside the numpy plan: workers run it as one traced "
                          "TensorFlow function"}


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
    name: str | None,
) -> None:
    """Convert a Keras 2 model.json + model.h5 pair into a bundle (in the sandbox)."""
    training_data(settings, data_path, name)  # a bad dataset is refused here, in its words
    data_dir = settings.model_data_dir(model_name(settings, name))
    dataset = data_path if data_path is not None else stored_dataset(data_dir)
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
            name=name,
        )


def _names(text: str | None) -> tuple[str, ...] | None:
    """A comma-separated option as names (None when not given)."""
    return None if text is None else tuple(part.strip() for part in text.split(","))


def _evaluation_table(data_dir: Path, data_path: Path | None, label: str | None,
                      task: Task | None, features: str | None, classes: str | None) -> Table:
    """The rows a model is evaluated on: the given CSV (by its header), or the stored dataset."""
    if label is not None and data_path is not None:
        table = parse_table_file(data_path, label, task)
    else:  # the stored dataset, or a headerless Pima file given with --data
        table = load_table(data_dir, data_path)
    names = _names(features) or table.feature_names
    if features is None and classes is None and (task is None or label is not None):
        return table
    return table_for_features(table, names, task if label is None else None, _names(classes))


@model.command(name="import")
@click.argument("keras_file", type=click.Path(path_type=Path))
@click.option("--data", "data_path", type=click.Path(path_type=Path),
              help="CSV to evaluate on: with --label, a header CSV whose columns are the model's "
                   "inputs (default: the stored dataset).")
@click.option("--label", help="With --data: the label column of the CSV.")
@click.option("--task", type=click.Choice([task.value for task in Task]),
              callback=lambda _ctx, _param, value: Task(value) if value else None,
              help="The model's task (default: inferred from the label, or the stored one's).")
@click.option("--features", help="The model's input names in order, comma-separated (default: "
                                 "the data's header); the data's width must match.")
@click.option("--classes", help="The class names in the model's output order, comma-separated.")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=DEFAULT_SEED,
              show_default=True, help="Seed of the held-out split.")
@click.option("--test-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=DEFAULT_TEST_FRACTION, show_default=True, help="Share of rows held out.")
@keep_options("imported Keras model")
@click.pass_obj
def import_command(
    settings: Settings,
    keras_file: Path,
    data_path: Path | None,
    label: str | None,
    task: Task | None,
    features: str | None,
    classes: str | None,
    seed: int,
    test_fraction: float,
    out: Path | None,
    register: bool | None,
    activate: bool,
    reason: str,
    name: str | None,
) -> None:
    """Turn a Keras 3 KERAS_FILE made elsewhere into a bundle (loaded in the sandbox only)."""
    if label is not None and data_path is None:
        raise click.UsageError("--label needs --data (the stored dataset knows its label)")
    refuse_non_archive(keras_file)
    data_dir = settings.model_data_dir(model_name(settings, name))
    table = _evaluation_table(data_dir, data_path, label, task, features, classes)
    shown = str(data_path) if data_path is not None else "the stored dataset"
    with bundle_destination(out) as bundle:
        result = import_keras_confined(keras_file, table, bundle, data_shown=shown, seed=seed,
                                       test_fraction=test_fraction)
        click.echo(f"imported {keras_file}: {len(table.feature_names)} inputs, runtime "
                   f"{result.runtime} ({RUNTIME_WORDS.get(result.runtime, '?')})")
        click.echo(describe_metrics(read_manifest(bundle)))
        keep_bundle(settings, bundle, out, register, activate, source=f"import {keras_file}",
                    reason=reason, name=name)
