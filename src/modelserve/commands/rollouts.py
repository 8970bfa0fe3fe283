"""`modelserve models shadow|canary|rollout|promote|abort`: a candidate on live traffic."""

from __future__ import annotations

from collections.abc import Callable

import click

from modelserve.commands.common import model_name, open_registry
from modelserve.commands.models import models
from modelserve.config import Settings
from modelserve.predlog.store import PredictionLog
from modelserve.rollout import control
from modelserve.rollout.state import Mode, Policy, RolloutError, RolloutStore

POLICY_HELP = ("A policy setting NAME=VALUE, repeatable: min_requests, min_labelled, "
               "max_error_rate_increase, max_latency_ratio, max_metric_regression, max_hours.")


def _policy(settings: tuple[str, ...]) -> Policy:
    """The policy of --policy NAME=VALUE options, over the defaults."""
    options = {}
    for setting in settings:
        name, equals, value = setting.partition("=")
        if not equals:
            raise RolloutError(f"--policy {setting!r}: write NAME=VALUE")
        options[name.strip()] = value.strip()
    return Policy.from_options(options)


def _begin(settings: Settings, name: str, version: str, mode: Mode, percent: float,
           policy: tuple[str, ...]) -> None:
    """Start a rollout and say what now happens."""
    if settings.prediction_log_file is None:
        raise RolloutError("a rollout is judged on the prediction log, and "
                           "MODELSERVE_PREDICTION_LOG is off here")
    registry = open_registry(settings, name)
    rollout = control.begin(registry, model_name(settings, name), version, mode, percent,
                            _policy(policy), "cli")
    click.echo(f"{rollout.model}: {rollout.candidate} {mode.share(percent)} "
               f"beside the live {rollout.live}; it is promoted or aborted by its policy "
               f"(`modelserve models rollout {rollout.model}` shows the evidence)")


def _rollout_command(mode: Mode, default_percent: float, share: str) -> Callable:
    """The `shadow` and `canary` commands: NAME VERSION, the share, the policy."""
    def decorate(function: Callable) -> Callable:
        for option in (
            click.pass_obj,
            click.option("--policy", "policy", multiple=True, metavar="NAME=VALUE",
                         help=POLICY_HELP),
            click.option("--percent", type=click.FloatRange(0, 100, min_open=True),
                         default=default_percent, show_default=True, help=share),
            click.argument("version"),
            click.argument("name"),
        ):
            function = option(function)
        return models.command(mode.value)(function)
    return decorate


@_rollout_command(Mode.SHADOW, 100.0, "Share of live requests copied to the candidate.")
def shadow_command(settings: Settings, name: str, version: str, percent: float,
                   policy: tuple[str, ...]) -> None:
    """Send model NAME's VERSION a copy of live requests; its answers go to nobody."""
    _begin(settings, name, version, Mode.SHADOW, percent, policy)


@_rollout_command(Mode.CANARY, 10.0, "Share of requests the candidate answers.")
def canary_command(settings: Settings, name: str, version: str, percent: float,
                   policy: tuple[str, ...]) -> None:
    """Let model NAME's VERSION answer a share of the requests (an X-Routing-Key header keeps
    a client on one version)."""
    _begin(settings, name, version, Mode.CANARY, percent, policy)


@models.command("rollout")
@click.argument("name")
@click.pass_obj
def rollout_command(settings: Settings, name: str) -> None:
    """Show model NAME's rollout: the evidence so far and what the policy says of it."""
    registry = open_registry(settings, name)
    rollout = RolloutStore(registry.root).read()
    if rollout is None:
        click.echo(f"{name}: no rollout under way")
        return
    path = settings.prediction_log_file
    if path is None:
        raise RolloutError("MODELSERVE_PREDICTION_LOG is off here: there is no evidence")
    found = control.status(rollout, PredictionLog(path), registry)
    click.echo(f"{name}: {rollout.mode} of {rollout.candidate} ({rollout.percent:g}% of "
               f"requests) against the live {rollout.live}, begun by {rollout.source or '?'}")
    for label, item in (("live", found.live), ("candidate", found.candidate)):
        if item is None:
            click.echo(f"  {label}: no answers yet")
            continue
        p99 = "-" if item.latency_p99 is None else f"{item.latency_p99 * 1000:.1f} ms"
        value = "-" if item.value is None else f"{item.value:.4f}"
        click.echo(f"  {label}: {item.requests} requests, errors {item.error_rate:.1%}, "
                   f"p99 {p99}, {item.metric} {value} on {item.labelled} labelled rows")
    agreement = found.agreement
    if agreement.rows:
        labels = "" if agreement.labels is None else f"labels {agreement.labels:.1%}, "
        click.echo(f"  agreement on {agreement.rows} rows: {labels}mean absolute difference "
                   f"{agreement.mean_abs_diff:.4f}")
    click.echo(f"  verdict: {found.verdict.decision} ({found.verdict.rule}: "
               f"{found.verdict.reason})")


@models.command("promote")
@click.argument("name")
@click.option("--reason", default="", help="Why, for the history.")
@click.pass_obj
def promote_command(settings: Settings, name: str, reason: str) -> None:
    """Make model NAME's candidate live now, whatever the evidence says."""
    rollout = control.end(open_registry(settings, name), "promote", reason, "cli")
    click.echo(f"{name}: {rollout.candidate} is live (was {rollout.live}); the rollout ended")


@models.command("abort")
@click.argument("name")
@click.option("--reason", default="", help="Why, for the history.")
@click.pass_obj
def abort_command(settings: Settings, name: str, reason: str) -> None:
    """End model NAME's rollout; the live version stays."""
    rollout = control.end(open_registry(settings, name), "abort", reason, "cli")
    click.echo(f"{name}: the {rollout.mode} of {rollout.candidate} is aborted; "
               f"{rollout.live} stays live")
