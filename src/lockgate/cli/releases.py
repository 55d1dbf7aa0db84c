"""``lockgate releases``, ``promote`` and ``rollback``: the release lifecycle from the command line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import click
import yaml

from lockgate.cli.common import data_dir_option, emit_json, when
from lockgate.cli.identity import actor_for, control_errors, token_option
from lockgate.control.releases import ReleaseRequest
from lockgate.instance import open_instance

tenant_option = click.option("--tenant", default="default", show_default=True)


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
@click.option("--git-commit", default=None, help="Default: the current checkout's HEAD.")
@tenant_option
@data_dir_option
@token_option
@control_errors
def create(
    file: str | None,
    route: str | None,
    prompt: str | None,
    model: str | None,
    git_commit: str | None,
    tenant: str,
    data_dir: str | None,
    token: str | None,
) -> None:
    """Create a release from FILE (YAML) or from --route/--prompt/--model; prints its id."""
    spec: dict[str, object] = yaml.safe_load(Path(file).read_text()) if file else {}
    for key, value in (("route", route), ("prompt", prompt), ("model", model), ("git_commit", git_commit)):
        if value is not None:
            spec[key] = value
    spec.setdefault("git_commit", _git_commit())
    try:
        request = ReleaseRequest.model_validate(spec)
    except ValueError as exc:
        raise click.ClickException(f"invalid release: {exc}") from None
    instance = open_instance(data_dir)
    release = instance.control().releases.create(actor_for(instance, token), tenant, request)
    click.echo(release.id)


@releases.command("show")
@click.argument("release_id")
@tenant_option
@data_dir_option
@control_errors
def show(release_id: str, tenant: str, data_dir: str | None) -> None:
    """Print a release's full content as JSON."""
    release = open_instance(data_dir).control().releases.get(tenant, release_id)
    emit_json(
        {**release.summary(), "created_by": release.created_by, "content": release.content.model_dump()}
    )


@releases.command("list")
@click.option("--route", default=None)
@tenant_option
@data_dir_option
@control_errors
def list_releases(route: str | None, tenant: str, data_dir: str | None) -> None:
    """List releases and where each environment points."""
    control = open_instance(data_dir).control()
    pointers = control.environments.pointers(tenant, route)
    where: dict[str, list[str]] = {}
    for p in pointers:
        where.setdefault(p.release_id, []).append(p.environment)
    click.echo(f"{'RELEASE':<38} {'ROUTE':<20} {'PROMPT':<26} {'MODEL':<26} {'BY':<10} ENVIRONMENTS")
    for r in control.releases.list(tenant, route):
        s = r.summary()
        envs = ",".join(where.get(r.id, [])) or "-"
        click.echo(
            f"{r.id:<38} {s['route']:<20} {s['prompt']:<26} {s['model']:<26} {r.created_by:<10} {envs}"
        )


@releases.command("point")
@click.argument("route")
@click.argument("release_id")
@click.option(
    "--env", "environment", default="dev", show_default=True, type=click.Choice(["dev", "stage", "prod"])
)
@tenant_option
@data_dir_option
@token_option
@control_errors
def point(
    route: str, release_id: str, environment: str, tenant: str, data_dir: str | None, token: str | None
) -> None:
    """Point ROUTE in an environment (usually dev) at RELEASE_ID."""
    instance = open_instance(data_dir)
    moved = instance.control().environments.point(
        actor_for(instance, token), tenant, route, environment, release_id
    )
    click.echo(f"{route} {environment} -> {moved.release_id} (was {moved.previous_release_id or '-'})")


@releases.command("approve")
@click.argument("release_id")
@click.option(
    "--env", "environment", default="prod", show_default=True, type=click.Choice(["dev", "stage", "prod"])
)
@tenant_option
@data_dir_option
@token_option
@control_errors
def approve(release_id: str, environment: str, tenant: str, data_dir: str | None, token: str | None) -> None:
    """Approve RELEASE_ID for an environment (not your own release)."""
    instance = open_instance(data_dir)
    control = instance.control()
    control.environments.approve(actor_for(instance, token), tenant, release_id, environment)
    approvers = ", ".join(control.environments.approvers(release_id, environment))
    click.echo(f"approved {release_id} for {environment} by {approvers}")


@click.command()
@click.argument("route")
@click.option("--to", "to", required=True, type=click.Choice(["stage", "prod"]))
@tenant_option
@data_dir_option
@token_option
@control_errors
def promote(route: str, to: str, tenant: str, data_dir: str | None, token: str | None) -> None:
    """Promote ROUTE's release one step: dev -> stage, or stage -> prod (prod needs an approval)."""
    instance = open_instance(data_dir)
    moved = instance.control().environments.promote(actor_for(instance, token), tenant, route, to)
    click.echo(f"{route} {to} -> {moved.release_id} (was {moved.previous_release_id or '-'})")


@click.command()
@click.argument("route")
@click.option("--env", "environment", required=True, type=click.Choice(["dev", "stage", "prod"]))
@tenant_option
@data_dir_option
@token_option
@control_errors
def rollback(route: str, environment: str, tenant: str, data_dir: str | None, token: str | None) -> None:
    """Point ROUTE in an environment back at the release it served before."""
    instance = open_instance(data_dir)
    moved = instance.control().environments.rollback(actor_for(instance, token), tenant, route, environment)
    click.echo(f"{route} {environment} -> {moved.release_id} (rolled back from {moved.previous_release_id})")


@click.command("pointers")
@click.option("--route", default=None)
@tenant_option
@data_dir_option
@control_errors
def pointers(route: str | None, tenant: str, data_dir: str | None) -> None:
    """Show which release each route serves in each environment."""
    for p in open_instance(data_dir).control().environments.pointers(tenant, route):
        click.echo(
            f"{p.route:<20} {p.environment:<6} {p.release_id}  (previous {p.previous_release_id or '-'}, "
            f"by {p.updated_by} at {when(p.updated_at)})"
        )
