"""`modelserve train`: train the reference MLP and write (and optionally register) a bundle."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from modelserve.commands.common import (
    bundle_destination,
    describe_metrics,
    keep_bundle,
    keep_options,
    training_table,
)
from modelserve.config import Settings
from modelserve.model.dataset import Dataset
from modelserve.model.spec import Task
from modelserve.model.training import (
    HIDDEN_ACTIVATIONS,
    TrainingConfig,
    train_bundle,
    train_table_bundle,
)

DEFAULTS = TrainingConfig()


def _parse_layers(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    """Parse '12,8' into (12, 8), refusing empty or non-positive sizes."""
    try:
        sizes = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter("give comma-separated layer sizes, like 12,8") from None
    if not sizes or min(sizes) < 1 or max(sizes) > 4096:
        raise click.BadParameter("layer sizes must be between 1 and 4096")
    return sizes


@click.command()
@click.option("--data", "data_path", type=click.Path(path_type=Path), help="CSV to train on.")
@click.option(
    "--layers",
    default="12,8",
    show_default=True,
    callback=_parse_layers,
    help="Hidden layer sizes.",
)
@click.option(
    "--activation",
    type=click.Choice(HIDDEN_ACTIVATIONS),
    default=DEFAULTS.activation,
    show_default=True,
)
@click.option(
    "--epochs", type=click.IntRange(1, 100_000), default=DEFAULTS.epochs, show_default=True
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 1_000_000),
    default=DEFAULTS.batch_size,
    show_default=True,
)
@click.option(
    "--learning-rate",
    type=click.FloatRange(0, 10, min_open=True),
    default=DEFAULTS.learning_rate,
    show_default=True,
)
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=DEFAULTS.seed, show_default=True)
@click.option(
    "--test-fraction",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=DEFAULTS.test_fraction,
    show_default=True,
    help="Share of rows held out.",
)
@click.option("--label", help="With --data: the label column of a CSV with a header row.")
@click.option("--task", type=click.Choice([task.value for task in Task]),
              help="With --label: what the label is (default: inferred from its values).")
@keep_options("trained")
@click.pass_obj
def train(
    settings: Settings,
    data_path: Path | None,
    layers: tuple[int, ...],
    out: Path | None,
    register: bool | None,
    activate: bool,
    reason: str,
    label: str | None,
    task: str | None,
    name: str | None,
    **options,
) -> None:
    """Train an MLP for the data's task on a seeded split and report held-out metrics.

    The stored data (or --data) decides the task: the Pima file trains the reference binary
    MLP; a CSV with a header (`data import FILE --label COLUMN`) trains a binary, multiclass
    or regression model with the task's head and loss.
    """
    data = training_table(settings, data_path, label, Task(task) if task else None, name)
    config = TrainingConfig(hidden_layers=layers, **options)
    with (
        bundle_destination(out) as bundle,
        click.progressbar(
            length=config.epochs,
            label="training",
            show_pos=True,
            file=sys.stderr,  # click.get_text_stream is deprecated (gone in Click 9)
        ) as bar,
    ):
        progress = lambda _epoch, _logs: bar.update(1)  # noqa: E731
        if isinstance(data, Dataset):  # the Pima file: the reference model, format 1
            manifest = train_bundle(data, config, bundle, on_epoch=progress)
        else:
            manifest = train_table_bundle(data, config, bundle, on_epoch=progress)
        click.echo(describe_metrics(manifest))
        keep_bundle(settings, bundle, out, register, activate, source="train", reason=reason,
                    name=name)
