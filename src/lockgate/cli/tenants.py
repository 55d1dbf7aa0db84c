"""``lockgate tenants``: create and list tenants."""

from __future__ import annotations

import dataclasses

import click

from lockgate.cli.common import data_dir_option, emit_json, when
from lockgate.cli.identity import actor_for, control_errors, token_option
from lockgate.instance import open_instance
from lockgate.security.tenants import TenantExists


@click.group()
def tenants() -> None:
    """Manage tenants."""


@tenants.command("create")
@click.argument("name")
@click.option("--model", "models", multiple=True, help="Allow only this model (repeatable). Default: all.")
@data_dir_option
@token_option
@control_errors
def create(name: str, models: tuple[str, ...], data_dir: str | None, token: str | None) -> None:
    """Create a tenant (needs the admin role in the default tenant)."""
    instance = open_instance(data_dir)
    try:
        tenant = instance.tenants.create(name, list(models) or None, actor=actor_for(instance, token))
    except (TenantExists, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created tenant {tenant.name} ({tenant.id})")


@tenants.command("list")
@click.option("--json", "as_json", is_flag=True)
@data_dir_option
def list_tenants(as_json: bool, data_dir: str | None) -> None:
    """List tenants."""
    found = open_instance(data_dir).tenants.list()
    if as_json:
        emit_json([dataclasses.asdict(t) for t in found])
        return
    click.echo(f"{'NAME':<20} {'ID':<29} {'CREATED':<21} MODELS")
    for t in found:
        models = ",".join(t.allowed_models) if t.allowed_models is not None else "*"
        click.echo(f"{t.name:<20} {t.id:<29} {when(t.created_at):<21} {models}")
