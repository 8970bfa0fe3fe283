"""`modelserve up` and `modelserve worker`: run the serving stack or one worker."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import click

from modelserve.auth.policy import AuthMode, parse_mode, resolve_mode
from modelserve.config import Settings
from modelserve.errors import UserError
from modelserve.provision.ready import served_models
from modelserve.registry.catalog import check_name
from modelserve.stack.up import (
    Stack,
    StackOptions,
    gunicorn_argv,
    interrupts_stop_the_stack,
    redact,
    registry_hint,
    restore_default_signals,
)
from modelserve.tls import ServerTLS, check_server_files

DEFAULTS = StackOptions()


def tls_options(command: Callable) -> Callable:
    """Add --tls-cert and --tls-key: gunicorn then serves HTTPS itself."""
    path = click.Path(dir_okay=False, path_type=Path)
    command = click.option("--tls-key", type=path, metavar="FILE",
                           help="Its private key (PEM, not readable by other accounts).")(command)
    return click.option("--tls-cert", type=path, metavar="FILE",
                        help="Serve HTTPS with this certificate (PEM; `modelserve tls "
                        "self-signed` makes one).")(command)


def _resolved_auth(settings: Settings, host: str) -> str:
    """MODELSERVE_AUTH for the web app: `auto` becomes `required` off loopback; say which."""
    mode = resolve_mode(parse_mode(settings.auth), host)
    if mode is AuthMode.REQUIRED:
        click.echo("auth: required (API: `Authorization: Bearer TOKEN`; pages: /login); "
                   "make a token with `modelserve tokens create --name NAME`")
    else:
        click.echo(f"auth: off (listening on {host}; MODELSERVE_AUTH=required turns it on)")
    return mode.value


def _server_tls(options: dict) -> ServerTLS | None:
    """Take the TLS options out of the command's options and check the files they name."""
    return check_server_files(options.pop("tls_cert"), options.pop("tls_key"))


@click.command()
@click.option("--host", default=DEFAULTS.host, show_default=True,
              help="Address the web app listens on (0.0.0.0 exposes it to the network).")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULTS.port, show_default=True)
@click.option("--workers", type=click.IntRange(1, 256), default=DEFAULTS.workers,
              show_default="one per core", help="Celery worker processes.")
@click.option("--web-processes", type=click.IntRange(1, 64), default=DEFAULTS.web_processes,
              show_default=True)
@click.option("--web-threads", type=click.IntRange(1, 1024), default=DEFAULTS.web_threads,
              show_default=True,
              help="Threads per web process for the pages (predictions run on its event loop).")
@click.option("--broker-port", type=click.IntRange(1024, 45535), default=DEFAULTS.broker_port,
              show_default=True,
              help="Port of the private RabbitMQ node (its Erlang ports: +19000, +20000).")
@click.option("--inline", is_flag=True,
              help="No broker and no workers: score in the web process (a baseline).")
@tls_options
@click.pass_obj
def up(settings: Settings, **options) -> None:
    """Start a broker, workers and the web app, and keep them running until Ctrl-C."""
    tls = _server_tls(options)
    settings = replace(settings, auth=_resolved_auth(settings, options["host"]))
    stack = Stack(settings, StackOptions(**options, tls=tls), click.echo)
    try:
        with interrupts_stop_the_stack():
            stack.start()
            _announce(stack, settings)
            stack.supervise()
        click.echo("\nstopping…")
    finally:
        stack.stop()
        restore_default_signals()
    click.echo("stopped; nothing is left running")


def _announce(stack: Stack, settings: Settings) -> None:
    """Print the URLs and whether the stack is ready."""
    base = stack.base_url()
    click.echo(f"web: {base}/  (API: {base}/api/v1/predict, {base}/v2, docs {base}/openapi.json)")
    if stack.options.tls:
        click.echo(f"https: certificate {stack.options.tls.cert}; a client that does not trust "
                   f"its issuer verifies with it (curl --cacert {stack.options.tls.cert})")
    hint = registry_hint(settings.registry_dir)
    if hint:
        click.echo(hint)
        return
    status = stack.wait_until_ready()
    if status.get("ready"):
        click.echo(f"ready: models {served_models(status)}; {status['workers']} worker(s) on the "
                   "shared queue; Ctrl-C stops everything")
    else:
        click.echo(f"not ready yet: {status}")


def own_queue_models(settings: Settings, model_list: str) -> tuple[str, ...]:
    """The models of `worker --models`, each checked to have its own queue."""
    models = tuple(check_name(name.strip()) for name in model_list.split(",") if name.strip())
    shared = [name for name in models if name not in settings.own_queue_models]
    if shared:
        raise UserError(f"{', '.join(shared)}: not in MODELSERVE_OWN_QUEUES, so the web sends "
                        "their requests to the shared queue; add them there (on the web too)")
    return models


@click.command()
@click.option("--name", default="w1", help="Worker name, unique on this host.")
@click.option("--models", "model_list", default="", metavar="A,B",
              help="Serve only these models, from their own queues (each must be named in "
                   "MODELSERVE_OWN_QUEUES, where the web routes them); default: every model.")
@click.option("--loglevel", default="WARNING", show_default=True)
@click.pass_obj
def worker(settings: Settings, name: str, model_list: str, loglevel: str) -> None:
    """Run one Celery worker for the prediction queue (MODELSERVE_BROKER_URL names the broker)."""
    if not settings.broker_url:
        raise UserError("set MODELSERVE_BROKER_URL to the broker's amqp:// URL")
    from modelserve.worker.app import make_celery, worker_queues

    models = own_queue_models(settings, model_list)
    app = make_celery(settings, models)
    # One task at a time per process; scaling is by processes, which `up` supervises. The
    # threads pool, not solo: with solo and late acks, Celery 5.7 stalls on an unacked message.
    queues = ",".join(worker_queues(settings, models))
    app.worker_main([
        "--quiet", "worker", "--pool=threads", "--concurrency=1", "--without-gossip",
        "--without-mingle", "--without-heartbeat", f"--queues={queues}",
        f"--loglevel={loglevel}", f"--hostname=modelserve-{name}-{os.getpid()}@%h",
    ])


@click.command()
@click.option("--host", default=DEFAULTS.host, show_default=True,
              help="Address to listen on (0.0.0.0 in a container, to be reachable at all).")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULTS.port, show_default=True)
@click.option("--web-processes", type=click.IntRange(1, 64), default=DEFAULTS.web_processes,
              show_default=True)
@click.option("--web-threads", type=click.IntRange(1, 1024), default=DEFAULTS.web_threads,
              show_default=True,
              help="Threads per web process for the pages (predictions run on its event loop).")
@tls_options
@click.pass_obj
def web(settings: Settings, host: str, port: int, web_processes: int, web_threads: int,
        **options) -> None:
    """Serve the web app under gunicorn for MODELSERVE_BROKER_URL (the workers run elsewhere)."""
    if not settings.broker_url:
        raise UserError("set MODELSERVE_BROKER_URL to the broker's amqp:// URL")
    tls = _server_tls(options)
    scheme = "https" if tls else "http"
    click.echo(f"web: {scheme}://{host}:{port}/ with broker {redact(settings.broker_url)}")
    os.environ["MODELSERVE_AUTH"] = _resolved_auth(settings, host)  # gunicorn inherits it
    argv = gunicorn_argv(host, port, web_processes, web_threads, tls=tls)
    # Become gunicorn rather than supervise it: in a container it is then PID 1's child or
    # PID 1 itself and gets SIGTERM straight from `docker stop`, with nothing in between.
    sys.stdout.flush()
    os.execv(argv[0], argv)  # noqa: S606 (our own interpreter, argument list)
