"""``lockgate rollout``: how a route's stage or prod environment takes new releases, and the rollouts.

An admin sets a strategy from a file kept in git (``rollout set FILE``); from then on promoting into that
environment starts a rollout (canary, shadow, A/B or bandit) that the server's controller judges on live
traffic and promotes or rolls back. Deployers follow it (``rollout status --watch``) and steer it
(``pause``, ``resume``, ``abort``, ``promote``). See docs/rollouts.md.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from lockgate.cli.client import Client, ClientError
from lockgate.cli.files import read_policy_files, read_yaml
from lockgate.cli.options import (
    connected,
    emit_json,
    fail,
    json_option,
    seconds,
    tenant_option,
    tenant_path,
    when,
)

ENVIRONMENTS = ("stage", "prod")
LIVE = ("running", "paused")
SUCCEEDED = ("promoted", "completed")
STOPPED_WATCHING = 130
Marks = tuple[str, int, float, str | None]  # status, stage, share, time of the latest analysis
# (name the analysis policy fails, label, the arm's measurement, how to print it)
METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("error_rate", "error rate", "error_rate", "{:.4f}"),
    ("p95_latency", "p95 latency", "p95_latency_ms", "{:.1f} ms"),
    ("cost_per_request", "cost per request", "cost_per_request", "${:.6f}"),
    ("contract_violations", "contract violations", "contract_violation_rate", "{:.4f}"),
    ("quality", "quality", "quality", "{:.3f}"),
)


def env_option(func: Any) -> Any:
    return click.option(
        "--env",
        "environment",
        default="prod",
        show_default=True,
        type=click.Choice(ENVIRONMENTS),
        help="The environment the rollout runs in.",
    )(func)


def rollout_path(tenant: str, route: str, environment: str, *more: str) -> str:
    return tenant_path(tenant, "routes", route, "environments", environment, "rollout", *more)


def strategy_path(tenant: str, route: str, environment: str) -> str:
    return tenant_path(tenant, "routes", route, "environments", environment, "strategy")


@click.group()
def rollout() -> None:
    """Rollout strategies (canary, shadow, A/B, bandit) and the rollouts they run."""


# --- the strategy ------------------------------------------------------------------------------------


@rollout.command("set")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@tenant_option
@json_option
@connected
def set_strategy(file: str, tenant: str, as_json: bool, client: Client) -> None:
    """Set how a route's environment takes new releases, from FILE (route, environment, strategy,
    its settings, analysis, optional Rego policies); admins only."""
    raw = read_yaml(Path(file), "a strategy file is a mapping with route and strategy")
    route = raw.pop("route", None)
    if not isinstance(route, str) or not route:
        fail(f"{file}: route: name the route this strategy applies to")
    environment = raw.pop("environment", "prod")
    if environment not in ENVIRONMENTS:
        fail(f"{file}: environment: stage or prod, not {environment!r}")
    policies = raw.pop("policies", None)
    if policies is not None:
        raw["policies"] = read_policy_files(Path(file).parent, policies, file)
    try:
        stored = client.put(strategy_path(tenant, route, environment), raw)
    except ClientError as exc:
        # The server names the strategy document; the author reads it as this file.
        if exc.message.startswith("strategy: "):
            fail(f"{file}: {exc.message.removeprefix('strategy: ')}")
        if exc.status == 422:
            fail(f"{file}: {exc.message}")
        raise
    if as_json:
        emit_json(stored)
        return
    click.echo(
        f"rollout strategy of {stored['route']} in {stored['environment']} set: {_plan(stored)}; "
        f"analysis every {stored['analysis']['interval']:g} s; policy {_policy_names(stored)}"
    )


@rollout.command("show")
@click.argument("route")
@env_option
@tenant_option
@json_option
@click.option("--policy", "show_policy", is_flag=True, help="Print the Rego sources of extra policies too.")
@connected
def show(route: str, environment: str, tenant: str, as_json: bool, show_policy: bool, client: Client) -> None:
    """The strategy ROUTE's environment takes new releases with."""
    stored = client.get(strategy_path(tenant, route, environment))
    if as_json:
        emit_json(stored)
        return
    click.echo(f"route {stored['route']} in {stored['environment']}: {stored['strategy']}")
    click.echo(f"  {_plan(stored)}")
    analysis = stored["analysis"]
    click.echo(
        f"  analysis every {analysis['interval']:g} s, once each arm has {analysis['min_requests']} "
        f"requests; failed analyses tolerated per metric: {analysis['failure_limit']}"
    )
    for key, value in analysis["thresholds"].items():
        click.echo(f"    {key}: {value:g}")
    click.echo(f"  policy: {_policy_names(stored)}")
    click.echo(f"  set by {stored['updated_by']} at {when(stored['updated_at'])}")
    if show_policy:
        for name, source in sorted(stored["policies"].items()):
            click.echo(f"--- {name}\n{source}")


def _plan(stored: dict[str, Any]) -> str:
    """The strategy's settings in one line."""
    strategy = stored["strategy"]
    if strategy == "canary":
        steps = []
        for stage in stored["canary"]["stages"]:
            if stage["weight"] >= 100:
                steps.append("100%")
            else:
                steps.append(
                    f"{stage['weight']:g}% (>= {stage['min_duration']:g} s, "
                    f">= {stage['min_requests']} requests per arm)"
                )
        return "canary " + " -> ".join(steps)
    if strategy == "shadow":
        s = stored["shadow"]
        return (
            f"shadow: {s['share']:g}% of calls mirrored to the candidate for >= {s['min_duration']:g} s "
            f"and >= {s['min_requests']} mirrored calls; never promotes"
        )
    if strategy == "ab":
        ab = stored["ab"]
        return (
            f"A/B: {ab['share']:g}% on the candidate for >= {ab['min_duration']:g} s and >= "
            f"{ab['min_requests']} requests per arm, then decided on {ab['metric']} at alpha {ab['alpha']:g}"
        )
    b = stored["bandit"]
    return (
        f"bandit on {b['reward']}: even split for {b['burn_in']} requests per arm, then Thompson sampling "
        f"(each arm >= {b['min_share'] * 100:g}%); decides after {b['horizon']:g} s at "
        f"P(better) >= {b['decide_at']:g}"
    )


def _policy_names(stored: dict[str, Any]) -> str:
    extra = sorted(stored["policies"])
    if stored["replace_default_policy"]:
        return f"{', '.join(extra)} (replacing the default)"
    return "default" + "".join(f" + {name}" for name in extra)


# --- rollouts ------------------------------------------------------------------------------------------


@rollout.command("start")
@click.argument("route")
@env_option
@tenant_option
@json_option
@connected
def start(route: str, environment: str, tenant: str, as_json: bool, client: Client) -> None:
    """Promote ROUTE into ENV through its gate (and, for prod, an approval): the candidate starts on its
    first share, and the server's controller takes it from there. Deployers only."""
    view = client.post(rollout_path(tenant, route, environment))
    if as_json:
        emit_json(view)
        return
    if view["status"] in LIVE:
        click.echo(
            f"{view['strategy']} rollout {view['id']} of {route} in {environment} started: candidate "
            f"{view['candidate_release_id']} on {_percent(view['candidate_share'])}, baseline "
            f"{view['baseline_release_id']}"
        )
        click.echo(f"follow it with `lockgate rollout status {route} --env {environment} --watch`")
    else:
        _print_status(view)


@rollout.command("status")
@click.argument("route")
@env_option
@click.option("--watch", is_flag=True, help="Follow the rollout until it ends; exit 0 if it promoted.")
@click.option(
    "--every", default=2.0, show_default=True, type=click.FloatRange(0.05, 60), help="Seconds between polls."
)
@click.option("--timeout", default=None, help="With --watch: give up after this long (90s, 15m, 2h).")
@tenant_option
@json_option
@connected
def status(
    route: str,
    environment: str,
    watch: bool,
    every: float,
    timeout: str | None,
    tenant: str,
    as_json: bool,
    client: Client,
) -> None:
    """The latest rollout of ROUTE in ENV: arms, traffic, stage, the latest analysis per metric, and
    when the next decision is due.

    With --watch it polls until the rollout ends and exits 0 if the candidate was promoted (or a shadow
    run completed), 1 if it was rolled back, aborted or inconclusive (or --timeout passed). Ctrl-C stops
    watching only: the rollout goes on on the server.
    """
    path = rollout_path(tenant, route, environment)
    view = client.get(path)
    if not watch:
        if as_json:
            emit_json(view)
        else:
            _print_status(view)
        return
    limit = seconds(timeout) if timeout else None
    view = _watch(client, path, view, every, limit, quiet=as_json)
    if as_json:
        emit_json(view)
    if view["status"] in LIVE:
        fail(f"rollout {view['id']} is still {view['status']} after {timeout}; it goes on on the server")
    sys.exit(0 if view["status"] in SUCCEEDED else 1)


def _watch(
    client: Client, path: str, view: dict[str, Any], every: float, limit: float | None, *, quiet: bool
) -> dict[str, Any]:
    """Poll until the rollout ends (or ``limit`` seconds pass); prints each new analysis and change."""
    started = time.monotonic()
    was_live = view["status"] in LIVE
    try:
        if not quiet:
            _print_status(view)
        seen = _marks(view)
        while view["status"] in LIVE and (limit is None or time.monotonic() - started < limit):
            time.sleep(every)
            view = client.get(path)
            marks = _marks(view)
            if not quiet:
                for line in _changes(view, seen, marks):
                    click.echo(line)
            seen = marks
    except KeyboardInterrupt:
        click.echo(
            f"\nstopped watching: rollout {view['id']} goes on on the server "
            f"({view['status']}); steer it with `lockgate rollout pause|resume|abort|promote`",
            err=True,
        )
        sys.exit(STOPPED_WATCHING)
    if not quiet and was_live and view["status"] not in LIVE:
        click.echo("")
        _print_status(view)
    return view


def _marks(view: dict[str, Any]) -> Marks:
    latest = view["analyses"][0]["at"] if view["analyses"] else None
    return view["status"], view["stage"], view["candidate_share"], latest


def _changes(
    view: dict[str, Any],
    before: tuple[str, int, float, str | None],
    after: tuple[str, int, float, str | None],
) -> list[str]:
    lines = []
    if after[3] != before[3] and view["analyses"]:
        latest = view["analyses"][0]
        reasons = "; ".join(r for r in latest["reasons"] if r != latest["verdict"])
        arms = (latest.get("metrics") or {}).get("arms") or {}
        if not reasons and "candidate" in arms and "baseline" in arms:
            reasons = (
                f"{arms['candidate']['requests']} candidate and {arms['baseline']['requests']} baseline calls"
            )
        lines.append(
            f"{_clock(latest['at'])}  {_where(view, latest['stage'])}  {latest['verdict']}"
            + (f": {reasons}" if reasons else "")
        )
    if after[:3] != before[:3]:
        detail = f": {view['reason']}" if view["reason"] and view["status"] != "running" else ""
        lines.append(f"{_clock(view['now'])}  {_where(view, view['stage'])}  -> {view['status']}{detail}")
    return lines


@rollout.command("list")
@click.option("--route", default=None, help="Only this route's rollouts.")
@tenant_option
@json_option
@connected
def list_rollouts(route: str | None, tenant: str, as_json: bool, client: Client) -> None:
    """Rollouts, newest first."""
    found = client.get(tenant_path(tenant, "rollouts"), route=route)
    if as_json:
        emit_json(found)
        return
    if not found:
        click.echo("no rollouts")
        return
    click.echo(
        f"{'ROLLOUT':<28} {'ROUTE':<20} {'ENV':<6} {'STRATEGY':<8} {'STATUS':<12} {'STAGE':<6} "
        f"{'SHARE':>6}  {'CANDIDATE':<38} STARTED"
    )
    for r in found:
        stage = f"{r['stage'] + 1}/{r['stages']}" if r["stages"] else "-"
        click.echo(
            f"{r['id']:<28} {r['route']:<20} {r['environment']:<6} {r['strategy']:<8} {r['status']:<12} "
            f"{stage:<6} {_percent(r['candidate_share']):>6}  {r['candidate_release_id']:<38} "
            f"{when(r['created_at'])}"
        )


def _steering(event: str, summary: str) -> None:
    @rollout.command(event, help=f"{summary} Deployers only.")
    @click.argument("route")
    @env_option
    @tenant_option
    @json_option
    @connected
    def steer(route: str, environment: str, tenant: str, as_json: bool, client: Client) -> None:
        view = client.post(rollout_path(tenant, route, environment, event))
        if as_json:
            emit_json(view)
            return
        _print_status(view)


_steering("pause", "Hold the rollout at its stage and share: no analysis moves it until it is resumed.")
_steering("resume", "Let a paused rollout go on: analyses start again from the stage it is at.")
_steering("abort", "Send every call back to the current release at once; the candidate is not promoted.")
_steering("promote", "Make the candidate the environment's release now, without waiting for the stages.")


# --- printing a rollout ------------------------------------------------------------------------------


def _print_status(view: dict[str, Any]) -> None:
    click.echo(
        f"rollout {view['id']} of {view['route']} in {view['environment']}: {view['strategy']}, "
        f"{view['status']}"
    )
    click.echo(f"  {_where(view, view['stage'])}: the candidate {_share_phrase(view)}")
    traffic = view["traffic"]
    candidate_arm = "shadow" if view["strategy"] == "shadow" else "candidate"
    click.echo(
        f"  candidate  {view['candidate_release_id']}  {traffic.get(candidate_arm, 0)} calls this stage"
        + (" (mirrored)" if candidate_arm == "shadow" else "")
    )
    click.echo(f"  baseline   {view['baseline_release_id']}  {traffic.get('baseline', 0)} calls this stage")
    if view["analyses"]:
        _print_analysis(view, view["analyses"][0])
    else:
        click.echo("  no analysis yet")
    if view["status"] == "running" and view["next_decision_at"]:
        click.echo(f"  next decision {_until(view['next_decision_at'], view['now'])}")
    elif view["status"] == "paused":
        click.echo(
            f"  paused{': ' + view['reason'] if view['reason'] else ''}\n"
            f"  resume with `lockgate rollout resume {view['route']} --env {view['environment']}`"
        )
    else:
        click.echo(f"  ended {when(view['finished_at'])}: {view['reason'] or view['status']}")


def _print_analysis(view: dict[str, Any], latest: dict[str, Any]) -> None:
    click.echo(
        f"  latest analysis ({_where(view, latest['stage'])}, {when(latest['at'])}): {latest['verdict']}"
    )
    arms = (latest.get("metrics") or {}).get("arms") or {}
    failing = set((latest.get("metrics") or {}).get("failing") or [])
    baseline, candidate = arms.get("baseline"), arms.get("candidate")
    if baseline is not None and candidate is not None:
        click.echo(f"    {'METRIC':<20} {'CANDIDATE':>14} {'BASELINE':>14}  VERDICT")
        click.echo(f"    {'requests':<20} {candidate['requests']:>14} {baseline['requests']:>14}")
        for name, label, key, shape in METRICS:
            c, b = candidate.get(key), baseline.get(key)
            if name in failing:
                verdict = "FAIL"
            elif name == "quality" and (c is None or b is None):
                verdict = "no scores"
            elif failing or latest["verdict"] == "pass":
                verdict = "ok"
            else:
                verdict = latest["verdict"]
            shown = (shape.format(c) if c is not None else "-", shape.format(b) if b is not None else "-")
            click.echo(f"    {label:<20} {shown[0]:>14} {shown[1]:>14}  {verdict}")
    for reason in latest["reasons"]:
        if reason != latest["verdict"]:
            click.echo(f"    - {reason}")


def _where(view: dict[str, Any], stage: int) -> str:
    if view["stages"]:
        return f"stage {stage + 1} of {view['stages']}"
    return {"shadow": "shadow run", "ab": "A/B test", "bandit": "bandit"}.get(view["strategy"], "rollout")


def _share_phrase(view: dict[str, Any]) -> str:
    share = _percent(view["candidate_share"])
    if view["status"] == "promoted":
        return f"is the release of {view['environment']} now"
    if view["status"] == "completed":
        return "got its copies until the shadow run completed; it never answered a caller"
    if view["status"] not in LIVE:
        return "serves nothing: every call is back on the baseline"
    if view["strategy"] == "shadow":
        return f"gets a copy of {share} of the calls (the answers of the current release are served)"
    return f"serves {share} of users (each user or session stays on its side)"


def _percent(share: float) -> str:
    return f"{share * 100:.4g}%"


def _clock(stamp: str) -> str:
    try:
        return datetime.fromisoformat(stamp).strftime("%H:%M:%SZ")
    except ValueError:
        return stamp


def _until(stamp: str, now: str) -> str:
    """How long until ``stamp``, by the server's clock (``now``), so a skewed client clock does not lie."""
    try:
        left = (datetime.fromisoformat(stamp) - datetime.fromisoformat(now)).total_seconds()
    except ValueError:
        return f"at {when(stamp)}"
    return "due now" if left <= 0 else f"in {left:.1f} s"
