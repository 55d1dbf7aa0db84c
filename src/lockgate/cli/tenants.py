"""``lockgate tenants``: create and list tenants."""

from __future__ import annotations

import click

from lockgate.cli.client import Client
from lockgate.cli.options import connected, emit_json, json_option, when


@click.group()
def tenants() -> None:
    """Manage tenants."""


@tenants.command("create")
@click.argument("name")
@click.option("--model", "models", multiple=True, help="Allow only this model (repeatable). Default: all.")
@connected
def create(name: str, models: tuple[str, ...], client: Client) -> None:
    """Create a tenant (a platform admin's operation)."""
    tenant = client.post("/tenants", {"name": name, "allowed_models": list(models) or None})
    click.echo(f"created tenant {tenant['name']} ({tenant['id']})")


@tenants.command("list")
@json_option
@connected
def list_tenants(as_json: bool, client: Client) -> None:
    """The tenants you hold a role in (all of them for a platform admin)."""
    found = client.get("/tenants")
    if as_json:
        emit_json(found)
        return
    click.echo(f"{'NAME':<20} {'ID':<29} {'CREATED':<21} MODELS")
    for t in found:
        models = ",".join(t["allowed_models"]) if t["allowed_models"] is not None else "*"
        click.echo(f"{t['name']:<20} {t['id']:<29} {when(t['created_at']):<21} {models}")
