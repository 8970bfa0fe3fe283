"""`modelserve cloud`: render cloud-init user-data; start and delete servers on OpenStack."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import click

from modelserve.config import Settings
from modelserve.errors import UserError
from modelserve.provision.openstack import (
    Provisioner,
    ServerSpec,
    Timing,
    allowed_sources,
    connect,
    merge,
    translated_errors,
)
from modelserve.provision.ready import (
    console_reader,
    deploy_key_in,
    served_models,
    wait_for_certificate,
    wait_for_console,
    wait_for_marker,
    wait_for_stack,
)
from modelserve.provision.state import Deployment, StateDir, check_name
from modelserve.provision.userdata import (
    ADMIN_USER,
    DEFAULT_PACKAGE,
    PROD_ACCOUNT,
    ROLES,
    TLS_MARKER,
    VENV,
    WEB_PORT,
    UserData,
    public_key,
    render,
)
from modelserve.tls import client_context


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
        click.option("--find-links", default="", metavar="URL|DIR",
                     help="pip also looks here for wheels (a wheel mirror, for air-gapped "
                     "clouds)."),
        click.option("--no-index", is_flag=True,
                     help="pip takes packages from --find-links only, never from PyPI."),
        click.option("--dataset-url", default="", metavar="URL",
                     help="Where the server downloads the dataset (default: none, it stores "
                     "the copy shipped in the package)."),
        click.option("--compose-file", default="", metavar="PATH|URL",
                     help="--containers: the compose.yaml (embedded if a path, fetched if a URL)."),
        click.option("--web-port", type=click.IntRange(1, 65535), default=WEB_PORT,
                     show_default=True, help="Port of the web app and API."),
        click.option("--tls/--no-tls", default=True, show_default=True,
                     help="prod: HTTPS (and HSTS) with a certificate the server makes at boot."),
        click.option("--tls-name", "tls_names", multiple=True, metavar="HOST",
                     help="prod: a name the certificate also holds (a DNS name of the server)."),
        click.option("--setting", "stack_settings", multiple=True, metavar="MODELSERVE_NAME=VALUE",
                     help="prod: a setting of the stack, e.g. MODELSERVE_OWN_QUEUES=iris or "
                     "MODELSERVE_MAX_LOADED_MODELS=4 (repeat for more)."),
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
        find_links=options["find_links"], no_index=options["no_index"],
        dataset_url=options["dataset_url"], compose_file=options["compose_file"],
        web_port=options["web_port"], tls=options["tls"], tls_names=options["tls_names"],
        settings=options["stack_settings"],
    )


@cloud.command("user-data")
@userdata_options
def user_data(**options) -> None:
    """Print the #cloud-config that contextualizes a server of a role."""
    click.echo(render(user_data_from(options)), nl=False)



def _states(settings: Settings, inventory: Path | None) -> StateDir:
    """Deployment records and the inventory under MODELSERVE_HOME/cloud."""
    return StateDir(settings.home / "cloud", inventory)


def _production_address(states: StateDir) -> str:
    """The address of the one recorded production deployment, or ''."""
    addresses = [d.address for d in states.all() if d.role == "prod" and d.address]
    return addresses[0] if len(addresses) == 1 else ""


@cloud.command()
@userdata_options
@click.option("--cloud", "cloud_name", default="", metavar="NAME",
              help="An entry of clouds.yaml (default: OS_CLOUD, else the OS_* variables).")
@click.option("--image", required=True,
              help="Image name or id (with Python 3.11+: Debian 12, Ubuntu 24.04).")
@click.option("--flavor", required=True, help="Flavor name or id (prod: 2 GB RAM or more).")
@click.option("--network", default="", help="Network of the server (default: the only one).")
@click.option("--floating-network", default="",
              help="External network of the floating IP (default: the only one).")
@click.option("--key-name", default="", help="Keypair to reuse or create "
              "(default: the deployment's name, created and later deleted).")
@click.option("--name", default="", help="Deployment name (default: modelserve-ROLE).")
@click.option("--allow-from", multiple=True, metavar="CIDR",
              help="Addresses allowed to reach SSH and the web port (required; repeatable; "
              "0.0.0.0/0 is everyone).")
@click.option("--active-timeout", type=click.FloatRange(1), default=600, show_default=True,
              help="Seconds to wait for the server to become ACTIVE.")
@click.option("--ready-timeout", type=click.FloatRange(0), default=900, show_default=True,
              help="Seconds to wait for contextualization to finish (0: do not wait).")
@click.option("--poll-seconds", type=click.FloatRange(0.01), default=5, hidden=True)
@click.option("--inventory", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the Ansible inventory (default: MODELSERVE_HOME/cloud).")
@click.pass_obj
def up(settings: Settings, cloud_name: str, image: str, flavor: str, network: str,
       floating_network: str, key_name: str, name: str, allow_from: tuple[str, ...],
       active_timeout: float,
       ready_timeout: float, poll_seconds: float, inventory: Path | None, **options) -> None:
    """Start a server of a role on OpenStack, contextualized by cloud-init, and wait for it."""
    sources = allowed_sources(allow_from)
    states = _states(settings, inventory)
    deployment = Deployment(name=check_name(name or f"modelserve-{options['role']}"),
                            role=options["role"], containers=options["containers"],
                            cloud=cloud_name, admin_user=ADMIN_USER)
    if options["role"] == "dev" and not options["production_host"]:
        options["production_host"] = _production_address(states)
    data = user_data_from(options)
    spec = ServerSpec(image=image, flavor=flavor, network=network,
                      floating_network=floating_network, key_name=key_name,
                      public_key=public_key(data.ssh_key, "--ssh-key"), user_data=render(data),
                      web_port=data.web_port, allow_from=sources)
    timing = Timing(active_seconds=active_timeout, poll_seconds=poll_seconds)
    connection = connect(cloud_name)
    Provisioner(connection, states, click.echo, timing).up(deployment, spec)
    click.echo(f"inventory: {states.write_inventory()}")
    if ready_timeout > 0:
        _wait_until_ready(connection, states, deployment, data, ready_timeout, poll_seconds)
    click.echo(f"ssh {ADMIN_USER}@{deployment.address}")


def _wait_until_ready(connection, states: StateDir, deployment: Deployment, data: UserData,
                      seconds: float, poll: float) -> None:
    """prod: the stack answers on the web port; dev: cloud-init's final message on the console."""
    down = f"`modelserve cloud down --name {deployment.name}` deletes it"
    if deployment.role == "prod":
        _wait_for_the_stack(connection, states, deployment, data, seconds, poll, down)
        return
    output = wait_for_console(console_reader(connection, deployment.server), seconds, poll,
                              click.echo)
    if output is None:
        raise UserError(f"cloud-init did not finish within {seconds:.0f} s; the server stays "
                        f"({down})")
    click.echo("cloud-init finished")
    key = deploy_key_in(output)
    if key:
        click.echo(f"deploy key: {key}\nlet it push, on production: echo '{key}' | ssh "
                   f"{ADMIN_USER}@{data.production_host or 'PRODUCTION'} sudo -u {PROD_ACCOUNT} -H "
                   f"{VENV}/bin/modelserve delivery authorize /dev/stdin")


def _wait_for_the_stack(connection, states: StateDir, deployment: Deployment, data: UserData,
                        seconds: float, poll: float, down: str) -> None:
    """Wait until the stack answers; over TLS only with the certificate the server vouched for."""
    deadline = time.monotonic() + seconds
    tls = data.tls and not data.containers
    base = f"{'https' if tls else 'http'}://{deployment.address}:{data.web_port}"
    context = None
    if tls:
        pinned = _pin_certificate(connection, states, deployment, data, seconds, poll, down)
        # The exact certificate is trusted, whatever address the floating IP gave us.
        context = client_context(pinned, check_hostname=False)
    url = f"{base}/v2/health/ready"
    status = wait_for_stack(url, max(deadline - time.monotonic(), 0), poll, click.echo, context)
    if status is None:
        raise UserError(f"the stack did not answer at {url} within {seconds:.0f} s; the "
                        f"server stays ({down}); its console log tells why")
    click.echo(f"stack answers: {base}/  ready: {status['ready']}, models: "
               f"{served_models(status)}")
    if tls:
        cert = states.certificate(deployment.name)
        click.echo(f"https: verify it with {cert}, e.g. curl --cacert {cert} --resolve "
                   f"{deployment.name}:{data.web_port}:{deployment.address} "
                   f"https://{deployment.name}:{data.web_port}/v2/health/ready")


def _pin_certificate(connection, states: StateDir, deployment: Deployment, data: UserData,
                     seconds: float, poll: float, down: str) -> Path:
    """Read the certificate's fingerprint on the console (the compute API vouches for it),
    then take the certificate from the server only if it matches; keep it."""
    deadline = time.monotonic() + seconds
    read = console_reader(connection, deployment.server)
    expected = wait_for_marker(read, TLS_MARKER, seconds, poll, click.echo)
    if expected is None:
        raise UserError(f"the server printed no certificate fingerprint within {seconds:.0f} s;"
                        f" it stays ({down}); its console log tells why")
    pem = wait_for_certificate(deployment.address, data.web_port, expected,
                               max(deadline - time.monotonic(), 0), poll, click.echo)
    if pem is None:
        raise UserError(f"nothing answered with TLS at {deployment.address}:{data.web_port} "
                        f"within {seconds:.0f} s; the server stays ({down})")
    path = states.pin_certificate(deployment.name, pem)
    click.echo(f"certificate: sha256 {expected}, as the console says; kept in {path}")
    return path


@cloud.command()
@click.option("--name", default="", help="Deployment name (default: the only one recorded).")
@click.option("--cloud", "cloud_name", default=None, metavar="NAME",
              help="clouds.yaml entry (default: the one `up` used).")
@click.option("--timeout", type=click.FloatRange(1), default=300, show_default=True,
              help="Seconds to wait for the server to be deleted.")
@click.option("--poll-seconds", type=click.FloatRange(0.01), default=2, hidden=True)
@click.option("--inventory", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def down(settings: Settings, name: str, cloud_name: str | None, timeout: float,
         poll_seconds: float, inventory: Path | None) -> None:
    """Delete what `cloud up` created for a deployment (again: nothing more to do)."""
    states = _states(settings, inventory)
    name = check_name(name or _only_deployment(states))
    recorded = states.load(name)
    connection = connect(cloud_name if cloud_name is not None else
                         (recorded.cloud if recorded else ""))
    provisioner = Provisioner(connection, states, click.echo,
                              Timing(active_seconds=timeout, poll_seconds=poll_seconds))
    with translated_errors():
        target = merge(recorded, provisioner.tagged(name))
    gone = provisioner.delete(target) if target.created() else []
    states.remove(name)
    for item in gone:
        click.echo(f"deleted {item}")
    click.echo(f"{name}: {'deleted' if gone else 'nothing to delete'}; "
               f"inventory: {states.write_inventory()}")


def _only_deployment(states: StateDir) -> str:
    """The name of the one recorded deployment, or refuse when it is not clear."""
    names = [d.name for d in states.all()]
    if len(names) != 1:
        raise UserError(f"give --name (recorded: {', '.join(names) or 'none'})")
    return names[0]
