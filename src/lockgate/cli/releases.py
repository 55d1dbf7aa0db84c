"""``lockgate releases``, ``promote``, ``rollback``, ``pointers``: the release lifecycle."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import click

from lockgate.cli.client import Client, ClientError
from lockgate.cli.files import read_yaml
from lockgate.cli.options import connected, emit_json, json_option, tenant_option, tenant_path, when

ENVIRONMENTS = ("dev", "stage", "prod")


def _git_commit() -> str | None:
    try:
        command = ["git", "rev-parse", "HEAD"]  # git from PATH, as the user runs it
        out = subprocess.run(command, capture_output=True, text=True, timeout=5, check=True)  # noqa: S603
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@click.group()
def releases() -> None:
    """Create, inspect, point and approve releases."""


@releases.command("create")
@click.argument("file", required=False, type=click.Path(dir_okay=False, exists=True))
@click.option("--route", default=None, help="Route name (product feature), e.g. support-answer.")
@click.option("--prompt", default=None, help="name@version of the prompt.")
@click.option("--model", default=None, help="Registry reference; default: the prompt's settings.model.")
@click.option("--fallback", "fallbacks", multiple=True, help="A gateway model to fall back to (repeatable).")
@click.option("--git-commit", default=None, help="Default: the current checkout's HEAD.")
@tenant_option
@connected
def create(
    file: str | None,
    route: str | None,
    prompt: str | None,
    model: str | None,
    fallbacks: tuple[str, ...],
    git_commit: str | None,
    tenant: str,
    client: Client,
) -> None:
    """Create a release from FILE (YAML) or from --route/--prompt/--model; prints its id."""
    spec: dict[str, Any] = read_yaml(Path(file), "a release file is a mapping of fields") if file else {}
    for key, value in (("route", route), ("prompt", prompt), ("model", model), ("git_commit", git_commit)):
        if value is not None:
            spec[key] = value
    if fallbacks:
        spec["fallbacks"] = list(fallbacks)
    spec.setdefault("git_commit", _git_commit())
    release = client.post(tenant_path(tenant, "releases"), spec)
    click.echo(release["id"])


@releases.command("show")
@click.argument("release_id")
@tenant_option
@connected
def show(release_id: str, tenant: str, client: Client) -> None:
    """Print a release's full content as JSON."""
    emit_json(client.get(tenant_path(tenant, "releases", release_id)))


@releases.command("list")
@click.option("--route", default=None)
@click.option("--git-commit", default=None, help="Only releases built from this commit.")
@click.option("--ids", "ids_only", is_flag=True, help="Print only the ids, oldest first.")
@tenant_option
@json_option
@connected
def list_releases(
    route: str | None, git_commit: str | None, ids_only: bool, tenant: str, as_json: bool, client: Client
) -> None:
    """List releases and where each environment points."""
    found = client.get(tenant_path(tenant, "releases"), route=route)
    if git_commit is not None:
        found = [r for r in found if r["git_commit"] == git_commit]
    if as_json:
        emit_json(found)
        return
    if ids_only:
        for r in found:
            click.echo(r["id"])
        return
    where: dict[str, list[str]] = {}
    for p in client.get(tenant_path(tenant, "routes"), route=route):
        where.setdefault(p["release_id"], []).append(p["environment"])
    click.echo(f"{'RELEASE':<38} {'ROUTE':<20} {'PROMPT':<26} {'MODEL':<26} {'BY':<10} ENVIRONMENTS")
    for r in found:
        envs = ",".join(where.get(r["id"], [])) or "-"
        click.echo(
            f"{r['id']:<38} {r['route']:<20} {r['prompt']:<26} {r['model']:<26} {r['created_by']:<10} {envs}"
        )


@releases.command("point")
@click.argument("route")
@click.argument("release_id")
@click.option("--env", "environment", default="dev", show_default=True, type=click.Choice(ENVIRONMENTS))
@tenant_option
@connected
def point(route: str, release_id: str, environment: str, tenant: str, client: Client) -> None:
    """Point ROUTE's dev environment at RELEASE_ID (stage and prod move by promote and rollback)."""
    moved = client.put(
        tenant_path(tenant, "routes", route, "environments", environment), {"release_id": release_id}
    )
    click.echo(f"{route} {environment} -> {moved['release_id']} (was {moved['previous_release_id'] or '-'})")


@releases.command("approve")
@click.argument("release_id")
@click.option("--env", "environment", default="prod", show_default=True, type=click.Choice(ENVIRONMENTS))
@tenant_option
@connected
def approve(release_id: str, environment: str, tenant: str, client: Client) -> None:
    """Approve RELEASE_ID for an environment (not one you created, or whose prompt or model you added)."""
    answer = client.post(
        tenant_path(tenant, "releases", release_id, "approvals"), {"environment": environment}
    )
    click.echo(f"approved {release_id} for {environment} by {', '.join(answer['approvers'])}")


@releases.command("history")
@click.argument("route")
@tenant_option
@json_option
@connected
def history(route: str, tenant: str, as_json: bool, client: Client) -> None:
    """Every pointer move of ROUTE, oldest first."""
    moves = client.get(tenant_path(tenant, "routes", route, "history"))
    if as_json:
        emit_json(moves)
        return
    for m in moves:
        click.echo(
            f"{when(m['at'])}  {m['environment']:<6} {m['action']:<9} {m['release_id']}  "
            f"(from {m['previous_release_id'] or '-'}, by {m['actor']})"
        )


@click.command()
@click.argument("route")
@click.option("--to", "to", required=True, type=click.Choice(["stage", "prod"]))
@tenant_option
@connected
def promote(route: str, to: str, tenant: str, client: Client) -> None:
    """Promote ROUTE one step through its gate: dev -> stage, or stage -> prod (prod needs an approval)."""
    moved = client.post(tenant_path(tenant, "routes", route, "promote"), {"to": to})
    rollout = _rollout_started(client, tenant, route, to, moved["release_id"])
    if rollout is not None:
        # The environment has a rollout strategy: the pointer moves when the rollout ends.
        click.echo(
            f"{route} {to}: {rollout['strategy']} rollout of {rollout['candidate_release_id']} started on "
            f"{rollout['candidate_share'] * 100:.4g}%; {to} serves {moved['release_id']} until it ends"
        )
        click.echo(f"follow it with `lockgate rollout status {route} --env {to} --watch`")
        return
    click.echo(f"{route} {to} -> {moved['release_id']} (was {moved['previous_release_id'] or '-'})")


def _rollout_started(
    client: Client, tenant: str, route: str, environment: str, serving: str
) -> dict[str, Any] | None:
    """The rollout a promotion started instead of moving the pointer, if it did."""
    try:
        view = client.get(tenant_path(tenant, "routes", route, "environments", environment, "rollout"))
    except ClientError as exc:
        if exc.status == 404:
            return None
        raise
    live = view["status"] in ("running", "paused") and view["candidate_release_id"] != serving
    return dict(view) if live else None


@click.command()
@click.argument("route")
@click.option("--env", "environment", required=True, type=click.Choice(ENVIRONMENTS))
@click.option("--to", "target", default=None, help="The release to return to (default: the previous one).")
@tenant_option
@connected
def rollback(route: str, environment: str, target: str | None, tenant: str, client: Client) -> None:
    """Return ROUTE in an environment to a release it served before; repeating it changes nothing."""
    current = _pointer(client, tenant, route, environment)
    if current is None:
        raise click.ClickException(f"route {route!r} has no release in {environment}")
    target = target or current["previous_release_id"]
    if target is None:
        raise click.ClickException(
            f"route {route!r} in {environment} has no previous release to roll back to"
        )
    path = tenant_path(tenant, "routes", route, "environments", environment, "rollback")
    moved = client.post(path, {"to": target, "expected": current["release_id"]})
    click.echo(f"{route} {environment} -> {moved['release_id']} (rolled back from {current['release_id']})")


def _pointer(client: Client, tenant: str, route: str, environment: str) -> dict[str, Any] | None:
    for p in client.get(tenant_path(tenant, "routes"), route=route):
        if p["route"] == route and p["environment"] == environment:
            return dict(p)
    return None


@click.command("pointers")
@click.option("--route", default=None)
@tenant_option
@json_option
@connected
def pointers(route: str | None, tenant: str, as_json: bool, client: Client) -> None:
    """Show which release each route serves in each environment."""
    found = client.get(tenant_path(tenant, "routes"), route=route)
    if as_json:
        emit_json(found)
        return
    for p in found:
        click.echo(
            f"{p['route']:<20} {p['environment']:<6} {p['release_id']}  "
            f"(previous {p['previous_release_id'] or '-'}, "
            f"by {p['updated_by']} at {when(p['updated_at'])})"
        )
