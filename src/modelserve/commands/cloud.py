"""`modelserve cloud`: render cloud-init user-data; start and delete servers on OpenStack."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from modelserve.provision.userdata import DEFAULT_PACKAGE, ROLES, WEB_PORT, UserData, render


@click.group()
def cloud() -> None:
    """Servers for production and development: cloud-init user-data, OpenStack."""


def _read_key(path: Path | None) -> str:
    """The text of a public key file, or '' when none was given."""
    return path.read_text() if path is not None else ""


def userdata_options(command: Callable) -> Callable:
    """Add the options that shape the user-data (shared by `user-data` and `up`)."""
    key_file = click.Path(exists=True, dir_okay=False, path_type=Path)
    options = [
        click.option("--role", type=click.Choice(ROLES), required=True,
                     help="prod: the serving stack and the push target; dev: training."),
        click.option("--containers", is_flag=True,
                     help="prod only: the Compose stack under Docker instead of systemd."),
        click.option("--ssh-key", "ssh_key_file", type=key_file, required=True,
                     help="The operator's public key (account ops, with sudo)."),
        click.option("--production-host", default="", metavar="ADDR",
                     help="dev: the production server the `production` remote pushes to."),
        click.option("--deploy-key", "deploy_key_file", type=key_file,
                     help="prod: a development server's deploy key allowed to push models."),
        click.option("--package", default=DEFAULT_PACKAGE, show_default=True, metavar="SPEC",
                     help="What pip installs: a requirement, a wheel URL or git+https://..."),
        click.option("--dataset-url", default="", metavar="URL",
                     help="Where the server downloads the dataset (default: the public one)."),
        click.option("--compose-file", default="", metavar="PATH|URL",
                     help="--containers: the compose.yaml (embedded if a path, fetched if a URL)."),
        click.option("--web-port", type=click.IntRange(1, 65535), default=WEB_PORT,
                     show_default=True, help="Port of the web app and API."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def user_data_from(options: dict) -> UserData:
    """Build the rendering's input from the command's options."""
    return UserData(
        role=options["role"], containers=options["containers"],
        ssh_key=_read_key(options["ssh_key_file"]),
        deploy_key=_read_key(options["deploy_key_file"]),
        production_host=options["production_host"], package=options["package"],
        dataset_url=options["dataset_url"], compose_file=options["compose_file"],
        web_port=options["web_port"],
    )


@cloud.command("user-data")
@userdata_options
def user_data(**options) -> None:
    """Print the #cloud-config that contextualizes a server of a role."""
    click.echo(render(user_data_from(options)), nl=False)

