"""The `modelserve` command line: one click group, a module per command under commands/."""

from __future__ import annotations

import click

from modelserve import __version__
from modelserve.commands import (
    cloud,
    data,
    delivery,
    model,
    models,
    predict,
    sandbox,
    tls,
    tokens,
    train,
    up,
)
from modelserve.config import load_settings
from modelserve.errors import UserError


class _Group(click.Group):
    """A group that turns UserError into a one-line message and exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as error:
            raise click.ClickException(str(error)) from None


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="modelserve")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Train, register and serve Keras models."""
    ctx.obj = load_settings()


for _command in (data.data, train.train, model.model, models.models, predict.predict, up.up,
                 up.web, up.worker, delivery.delivery, cloud.cloud, tls.tls, tokens.tokens,
                 sandbox.sandbox):
    main.add_command(_command)
