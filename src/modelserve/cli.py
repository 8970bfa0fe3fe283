"""The `modelserve` command line: one click group, a module per command under commands/."""

from __future__ import annotations

import importlib

import click

from modelserve import __version__
from modelserve.config import load_settings
from modelserve.errors import UserError

# Each command's module, imported only when that command runs: importing them all (Celery,
# gunicorn's stack, the cloud client) doubled the start of every `modelserve models list`.
COMMANDS = {
    "data": "data", "train": "train", "model": "model", "models": "models",
    "predict": "predict", "up": "up", "web": "up", "worker": "up", "delivery": "delivery",
    "cloud": "cloud", "tls": "tls", "tokens": "tokens", "sandbox": "sandbox",
}


class _Group(click.Group):
    """A group of lazily imported commands that turns UserError into one line and exit 1."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name, without importing any (for --help)."""
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command of that name, its module imported now."""
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module = importlib.import_module(f"modelserve.commands.{COMMANDS[cmd_name]}")
            self.add_command(getattr(module, cmd_name), cmd_name)
        return self.commands.get(cmd_name)

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

