"""`modelserve models`: list, add, activate and roll back model versions; show the history."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from modelserve.commands.common import MODEL_HELP, model_name, open_registry, say_recoveries
from modelserve.config import Settings
from modelserve.model.bundle import read_manifest
from modelserve.model.metrics import format_value
from modelserve.model.spec import METRIC_LABELS, TASK_METRICS, ModelSpec
from modelserve.registry import Registry, RegistryError, VersionInfo
from modelserve.registry.catalog import Catalog, check_name

EMPTY_HINT = (
    "no models registered yet; train one with `modelserve train --activate` "
    "or import the seed model with `modelserve model import-legacy ...`"
)
SOURCE_WIDTH = 40


@click.group()
def models() -> None:
    """List, add, activate and roll back model versions."""


@models.command("list")
@click.option("--name", "name", metavar="NAME", default=None,
              help="Only this model (default: every model).")
@click.pass_obj
def list_command(settings: Settings, name: str | None) -> None:
    """Show every model's versions, oldest first; * marks the one each model serves.

    FILES says whether each version's files still match their sha256 (each file is read).
    """
    catalog = Catalog.of(settings)
    chosen = [(name, catalog.registry(check_name(name)))] if name else list(catalog.registries())
    listed = [(model, registry, registry.list_versions()) for model, registry in chosen]
    if not any(infos for _, _, infos in listed):
        click.echo(EMPTY_HINT)
        return
    header = ["MODEL", "VERSION", "CREATED (UTC)", "TASK", "METRIC", "SOURCE", "RUNTIME",
              "ACTIVE", "FILES"]
    rows, problems = [], []
    for model, registry, infos in listed:
        for info in infos:
            damage = registry.damage(info.version)
            rows.append([model, *_version_row(info), "CORRUPT" if damage else "ok"])
            if damage:
                problems.append(f"{model} {info.version} is corrupt: {damage}")
                if info.active:
                    problems.append(f"the active version of {model} is corrupt: a worker that "
                                    "must load it serves the most recent earlier activation "
                                    "that loads; activate an intact version")
        if infos and registry.active_version() is None:
            problems.append(f"{model} is retired: no version is served (`modelserve models "
                            f"activate {model} VERSION` serves one again)")
    click.echo(_table(header, rows))
    for line in problems:
        click.echo(line)


@models.command("add")
# Not exists=True: click would refuse a missing path as a usage error (exit 2, three lines);
# read_manifest says in one line what is wrong with any path that is not a bundle.
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--name", "name", metavar="NAME", default=None,
              help=f"{MODEL_HELP} A name not registered yet makes a new model.")
@click.option("--activate", "activate_now", is_flag=True, help="Serve it right away.")
@click.option("--reason", default="", help="Why, for the history.")
@click.pass_obj
def add_command(settings: Settings, bundle: Path, name: str | None, activate_now: bool,
                reason: str) -> None:
    """Check the model bundle BUNDLE and store it as a new version of a model."""
    model = model_name(settings, name)
    catalog = Catalog.of(settings)
    new = not catalog.exists(model)
    registry = catalog.registry_for_new(model)
    known = _is_registered(registry, read_manifest(bundle).get("version"))
    info = registry.add(bundle, source=str(bundle.resolve()), reason=reason)
    say_recoveries(registry)
    if known:
        click.echo(f"{info.version} is already registered as {model}; nothing added")
    else:
        summary = _metrics_summary(info.spec) if info.spec else "its manifest is unreadable"
        click.echo(f"added {info.version} to {'the new model ' if new else ''}{model} "
                   f"({info.spec.task.value + ': ' if info.spec else ''}{summary})")
    if activate_now:
        _activate(registry, info.version, reason)


@models.command("activate")
@click.argument("name_or_version", metavar="[NAME] VERSION")
@click.argument("version", required=False)
@click.option("--reason", default="", help="Why, for the history.")
@click.pass_obj
def activate_command(settings: Settings, name_or_version: str, version: str | None,
                     reason: str) -> None:
    """Serve VERSION (or a unique prefix of it, at least 4 characters) of model NAME from now
    on (of the default model when NAME is left out)."""
    name, version = (name_or_version, version) if version else (None, name_or_version)
    _activate(open_registry(settings, name), version, reason)


@models.command("rollback")
@click.argument("name", required=False)
@click.option("--reason", default="", help="Why, for the history.")
@click.pass_obj
def rollback_command(settings: Settings, name: str | None, reason: str) -> None:
    """Serve again the version of model NAME (default: the default model) that was active
    before the current one."""
    registry = open_registry(settings, name)
    previous = registry.active_version()
    info = registry.rollback(source="cli", reason=reason)
    say_recoveries(registry)
    click.echo(f"rolled back {model_name(settings, name)}: {info.version} is active "
               f"(was {previous or 'nothing'})")


@models.command("retire")
@click.argument("name")
@click.option("--remove", is_flag=True, help="Also delete its versions (not the default model).")
@click.option("--reason", default="", help="Why, for the history.")
@click.pass_obj
def retire_command(settings: Settings, name: str, remove: bool, reason: str) -> None:
    """Stop serving model NAME; its versions stay (activating one serves it again)."""
    catalog = Catalog.of(settings)
    registry = catalog.registry(check_name(name))
    if registry.active_version() is not None:
        was = registry.retire(source="cli", reason=reason)
        say_recoveries(registry)
        click.echo(f"retired {name}: it is no longer served (was {was})")
    elif not remove:
        raise RegistryError(f"{name} is already retired; --remove deletes its versions")
    if remove:
        catalog.remove(name)
        click.echo(f"removed {name} and its versions")


@models.command("history")
@click.argument("name", required=False)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Show the N most recent changes (0 for all).",
)
@click.pass_obj
def history_command(settings: Settings, name: str | None, limit: int) -> None:
    """Show who changed what, when, from which source and why, oldest first: of model NAME,
    or of every model."""
    catalog = Catalog.of(settings)
    chosen = [(name, catalog.registry(check_name(name)))] if name else catalog.registries()
    events = sorted(((str(event.get("at", "")), model, event) for model, registry in chosen
                     for event in registry.history()), key=lambda item: item[0])
    if limit:
        events = events[-limit:]
    if not events:
        click.echo("no changes recorded yet")
        return
    header = ["WHEN (UTC)", "MODEL", "ACTION", "VERSION", "PREVIOUS", "SOURCE", "REASON", "USER"]
    click.echo(_table(header, [_event_row(model, event) for _, model, event in events]))


def _activate(registry: Registry, version: str, reason: str) -> None:
    """Activate a version and say what changed."""
    previous = registry.active_version()
    info = registry.activate(version, source="cli", reason=reason)
    say_recoveries(registry)
    if info.version == previous:
        click.echo(f"{info.version} is already active")
    else:
        click.echo(f"active: {info.version} (was {previous or 'nothing'})")


def _is_registered(registry: Registry, version: Any) -> bool:
    """Tell whether a bundle's version is already in the store (only to word the message)."""
    try:
        return isinstance(version, str) and registry.resolve(version) == version
    except RegistryError:
        return False


def _version_row(info: VersionInfo) -> list[str]:
    """Format one version for `models list`."""
    source = info.manifest.get("source")
    kind = source.get("kind") if isinstance(source, dict) else None
    return [
        info.version,
        _when(info.manifest.get("created_at"), "%Y-%m-%d %H:%M"),
        info.spec.task.value if info.spec else "-",
        _headline(info.spec),
        str(kind or "-"),
        info.runtime,
        "*" if info.active else "",
    ]


def _event_row(model: str, event: dict[str, Any]) -> list[str]:
    """Format one history event for `models history`."""
    return [
        _when(event.get("at"), "%Y-%m-%d %H:%M:%S"),
        model,
        str(event.get("action") or "-"),
        str(event.get("version") or "-"),
        str(event.get("previous") or "-"),
        _shorten(str(event.get("source") or "-"), SOURCE_WIDTH),
        str(event.get("reason") or ""),
        str(event.get("user") or "-"),
    ]


def _headline(spec: ModelSpec | None) -> str:
    """The task's headline metric on the held-out rows, e.g. `accuracy 0.740` or `RMSE 56.9`."""
    if spec is None:
        return "-"
    name, value = spec.metrics.headline
    return f"{METRIC_LABELS[name]} {format_value(value, 3)}"


def _metrics_summary(spec: ModelSpec) -> str:
    """Summarize the task's held-out metrics in one phrase."""
    return ", ".join(f"{METRIC_LABELS[name]} {format_value(spec.metrics.values[name], 3)}"
                     for name in TASK_METRICS[spec.task])


def _when(text: Any, fmt: str) -> str:
    """Show an ISO-8601 time in UTC (a time without zone is taken as UTC)."""
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return str(text or "-")
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime(fmt)


def _shorten(text: str, width: int) -> str:
    """Keep the end of a long text (a path's end says the most); the history file has it all."""
    return text if len(text) <= width else "..." + text[-(width - 3) :]


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Lay rows out in left-aligned columns under a header."""
    # Reasons are free text; keep every row on one line whatever the user typed.
    rows = [[" ".join(cell.split()) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


@models.command("follow")
@click.argument("source")
@click.option("--every", type=click.FloatRange(0.5), default=2.0, show_default=True,
              help="Seconds between two looks at production.")
@click.option("--key", "ssh_key", type=click.Path(dir_okay=False, path_type=Path),
              help="SSH key for an rsync-over-SSH source.")
@click.option("--once", is_flag=True, help="Look once and exit.")
@click.pass_obj
def follow_command(settings: Settings, source: str, every: float, ssh_key: Path | None,
                   once: bool) -> None:
    """Serve here every model production serves, as it serves it (SOURCE: its registry root,
    as rsync names it); a model production retired is retired here.

    For example `deploy@prod:` when production's key entry confines rsync to its registry, or
    `deploy@prod:.local/share/modelserve/registry/`, or a local folder ending in /.
    """
    from modelserve.errors import UserError
    from modelserve.registry.follow import follow, follow_once

    catalog = Catalog.of(settings)
    mirror = settings.home / "mirror"
    if once:
        done = follow_once(source, mirror, catalog, click.echo, ssh_key)
        for name, version in done.serving.items():
            click.echo(f"{name}: serving {version}")
        if not done.serving and not done.failed:
            click.echo(f"{source} serves no model yet")
        for name, why in done.failed.items():
            click.echo(f"{name}: {why}", err=True)
        if done.failed:
            # Each model's refusal is said above; exit non-zero so a caller sees the round failed.
            raise UserError(f"could not follow {', '.join(done.failed)} (said above); every "
                            "other model serves what production serves")
        return
    click.echo(f"following {source} every {every:g} s")
    follow(source, mirror, catalog, click.echo, every, ssh_key)


# The rollout commands live in a module of their own and join this group when it loads.
from modelserve.commands import rollouts  # noqa: E402, F401
