"""`modelserve delivery`: set up git-push delivery, and the hooks' entry points."""

from __future__ import annotations

import os
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path

import click

from modelserve.config import Settings
from modelserve.delivery import access, remote
from modelserve.delivery.activate import post_receive
from modelserve.delivery.config import (
    OTHER_REFS,
    DeliveryConfig,
    delivery_dir,
    load_config,
    repository,
)
from modelserve.delivery.gate import pre_receive, push_options, read_updates
from modelserve.delivery.setup import init_delivery
from modelserve.errors import UserError

DEFAULTS = DeliveryConfig()


@click.group()
def delivery() -> None:
    """Deliver models by `git push` to this server."""


@delivery.command()
@click.option("--branch", default=DEFAULTS.branch, show_default=True,
              help="The branch whose pushes are deployed; others are only stored.")
@click.option("--folder", default=DEFAULTS.folder,
              help="Where the models are in the repository: the default model's files, and "
              "a folder NAME/ in it for each other model [default: the root].")
@click.option("--tolerance", type=click.FloatRange(0, 1), default=DEFAULTS.tolerance,
              show_default=True, help="Accuracy a new model may lose against the live one.")
@click.option("--max-mb", type=click.FloatRange(0.001), default=DEFAULTS.max_bytes / 2**20,
              show_default=True, help="Size limit of the pushed model files.")
@click.option("--web-url", default=DEFAULTS.web_url, show_default=True,
              help="The serving stack that must answer with a new model before a push ends.")
@click.option("--web-ca", default="", metavar="FILE",
              help="An https --web-url is verified with this certificate (e.g. the stack's "
              "own self-signed one); '': the system's CAs.")
@click.option("--other-refs", type=click.Choice(OTHER_REFS), default=DEFAULTS.other_refs,
              show_default=True, help="Other branches and tags: refused, or stored (under the "
              "same limits, never deployed).")
@click.option("--max-tree-entries", type=click.IntRange(1), default=DEFAULTS.max_tree_entries,
              show_default=True, help="Files and folders one pushed commit may hold in all.")
@click.option("--live-timeout", type=click.FloatRange(0), default=DEFAULTS.live_timeout,
              show_default=True, help="Seconds a push waits for the workers to answer with it.")
@click.pass_obj
def init(settings: Settings, branch: str, folder: str, tolerance: float, max_mb: float,
         web_url: str, web_ca: str, other_refs: str, max_tree_entries: int,
         live_timeout: float) -> None:
    """Create the repository and its hooks, or bring their settings up to date."""
    config = DeliveryConfig(branch=branch, folder=folder.strip("/"), tolerance=tolerance,
                            max_bytes=int(max_mb * 2**20), web_url=web_url.rstrip("/"),
                            web_ca=_certificate_file(web_ca),
                            other_refs=other_refs, max_tree_entries=max_tree_entries,
                            live_timeout=live_timeout)
    changes = init_delivery(settings, config)
    for change in changes:
        click.echo(change)
    click.echo(f"{'ready' if changes else 'unchanged'}: push to {repository(settings)}")


def _certificate_file(path: str) -> str:
    """The absolute path of --web-ca (the hooks run elsewhere), or '' when none was given."""
    if path and not Path(path).is_file():
        raise UserError(f"--web-ca {path}: no such file")
    return str(Path(path).resolve()) if path else ""


def _hook(settings: Settings, run) -> None:
    """Run a hook body: its words reach the pusher as `remote:` lines; a refusal exits 1."""
    try:
        run()
    except UserError as error:
        click.echo(str(error))
        if error.__cause__ is not None:  # a failure after acceptance: the operator's to fix
            _keep_traceback(settings)
        sys.exit(1)
    except Exception as error:  # never deploy after a failure we did not foresee
        click.echo(f"refused: the gate failed ({type(error).__name__}: {error}); "
                   "production is unchanged")
        _keep_traceback(settings)
        sys.exit(1)


def _keep_traceback(settings: Settings) -> None:
    """Write the traceback to the server's delivery log, not to the pusher's terminal."""
    with open(delivery_dir(settings) / "gate-errors.log", "a") as log_file:
        log_file.write(f"--- {datetime.now(UTC).isoformat()}\n{traceback.format_exc()}\n")


@delivery.command("pre-receive", hidden=True)
@click.pass_obj
def pre_receive_hook(settings: Settings) -> None:
    """Entry point of the pre-receive hook (git passes the updates on stdin)."""
    updates = read_updates(sys.stdin.read())
    _hook(settings, lambda: pre_receive(settings, load_config(settings), updates,
                              push_options(os.environ), click.echo))


@delivery.command("post-receive", hidden=True)
@click.pass_obj
def post_receive_hook(settings: Settings) -> None:
    """Entry point of the post-receive hook."""
    updates = read_updates(sys.stdin.read())
    _hook(settings, lambda: post_receive(settings, load_config(settings), updates, click.echo))


@delivery.command()
@click.argument("public_key_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--ssh-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path.home() / ".ssh", show_default="~/.ssh",
              help="Where the deploy account's authorized_keys is (run as root for another "
              "account's: the file becomes root's, out of that account's reach).")
@click.option("--name", default=None,
              help="The key's name in the history [default: from the key's comment].")
@click.pass_obj
def authorize(settings: Settings, public_key_file: Path, ssh_dir: Path, name: str | None) -> None:
    """Let a development server's key push models here (and do nothing else)."""
    if not (repository(settings) / "HEAD").is_file():
        # As root, MODELSERVE_HOME must name the account's home: the key's command uses it.
        raise UserError(f"no delivery repository at {repository(settings)}: run `modelserve "
                        "delivery init` first (as root for an account: set MODELSERVE_HOME to "
                        "its home)")
    done = access.authorize(public_key_file.read_text().strip(), settings.home, ssh_dir, name)
    click.echo(f"{'authorized' if done.changed else 'already authorized'}: "
               f"{public_key_file.name} as {done.name!r} may push to {repository(settings)}")
    if done.warning:
        click.echo(done.warning, err=True)


@delivery.command("serve-git", hidden=True)
@click.option("--key", "key_name", default="", help="The name of the key that logged in.")
@click.pass_obj
def serve_git(settings: Settings, key_name: str) -> None:
    """The deploy key's forced command: run git-receive-pack/upload-pack on our repository."""
    argv = access.git_command_for(os.environ.get("SSH_ORIGINAL_COMMAND"), repository(settings))
    # The hooks record who pushed: the key's name, never a value the client could send.
    os.environ[access.PUSHER_ENV] = key_name
    os.execvp(argv[0], argv)  # noqa: S606 (fixed program names, checked path)


@delivery.command()
@click.option("--path", "key_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path.home() / ".ssh" / "modelserve_deploy", show_default="~/.ssh/...")
def key(key_path: Path) -> None:
    """Create this development server's deploy key (once) and show what to do with it."""
    public, created = remote.ensure_key(key_path)
    click.echo(f"{'created' if created else 'existing'} key: {public}")
    click.echo(public.read_text().strip())
    click.echo(f"on the production server: modelserve delivery authorize {public.name}")


@delivery.group("remote")
def remote_group() -> None:
    """Git remotes that deliver to a production server."""


@remote_group.command("add")
@click.argument("name")
@click.argument("destination", metavar="USER@HOST")
@click.option("--repo", default=remote.DEFAULT_REMOTE_REPO, show_default=True,
              help="The repository's path on the production server.")
@click.option("--key", "key_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path.home() / ".ssh" / "modelserve_deploy", show_default="~/.ssh/...")
@click.option("--checkout", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default="the current directory")
def remote_add(name: str, destination: str, repo: str, key_path: Path, checkout: Path) -> None:
    """Add (or update) remote NAME of a checkout, pushing with the deploy key."""
    remote.ensure_key(key_path)
    click.echo(remote.add_remote(checkout, name, destination, repo, key_path))
