"""``lockgate keys``: create, list and revoke API keys."""

from __future__ import annotations

import dataclasses

import click

from lockgate.cli.common import data_dir_option, emit_json, expiry, when
from lockgate.cli.identity import actor_for, control_errors, token_option
from lockgate.instance import open_instance
from lockgate.security.apikeys import ROLES, UnknownKey
from lockgate.security.tenants import UnknownTenant


@click.group()
def keys() -> None:
    """Manage API keys (shown once at creation, stored only as a hash)."""


@keys.command("create")
@click.option("--tenant", default="default", show_default=True)
@click.option("--name", default="", help="A label to recognise the key by.")
@click.option("--model", "models", multiple=True, help="Allow only this model or route:NAME (repeatable).")
@click.option("--expires-in", default=None, help="Lifetime such as 30d, 12h, 15m.")
@click.option("--role", type=click.Choice(ROLES), default="client", show_default=True)
@click.option(
    "--env",
    "environment",
    type=click.Choice(["dev", "stage", "prod"]),
    default=None,
    help="Environment whose releases route: calls get (default prod).",
)
@data_dir_option
@token_option
@control_errors
def create(
    tenant: str,
    name: str,
    models: tuple[str, ...],
    expires_in: str | None,
    role: str,
    environment: str | None,
    data_dir: str | None,
    token: str | None,
) -> None:
    """Create a key (needs the admin role in the tenant); its secret is printed once."""
    instance = open_instance(data_dir)
    actor = actor_for(instance, token)
    try:
        issued = instance.keys.create(
            tenant,
            name=name,
            role=role,
            allowed_models=list(models) or None,
            expires_at=expiry(expires_in),
            environment=environment,
            actor=actor,
        )
    except UnknownTenant as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"id:      {issued.info.id}")
    click.echo(f"prefix:  {issued.info.prefix}")
    click.echo(f"expires: {when(issued.info.expires_at)}")
    click.echo(f"key:     {issued.secret}")
    click.echo("Store the key now: lockgate keeps only its hash.", err=True)


@keys.command("list")
@click.option("--tenant", default=None)
@click.option("--json", "as_json", is_flag=True)
@data_dir_option
def list_keys(tenant: str | None, as_json: bool, data_dir: str | None) -> None:
    """List keys by prefix; secrets are never shown."""
    found = open_instance(data_dir).keys.list(tenant)
    if as_json:
        emit_json([{**dataclasses.asdict(k), "status": k.status()} for k in found])
        return
    click.echo(f"{'ID':<29} {'PREFIX':<12} {'TENANT':<16} {'ROLE':<7} {'STATUS':<8} {'EXPIRES':<21} MODELS")
    for k in found:
        models = ",".join(k.allowed_models) if k.allowed_models is not None else "*"
        expires = when(k.expires_at)
        line = f"{k.id:<29} {k.prefix:<12} {k.tenant:<16} {k.role:<7} {k.status():<8} {expires:<21} {models}"
        click.echo(line)


@keys.command("revoke")
@click.argument("key")
@data_dir_option
@token_option
@control_errors
def revoke(key: str, data_dir: str | None, token: str | None) -> None:
    """Revoke a key by id or prefix; every gateway worker refuses it within a second."""
    instance = open_instance(data_dir)
    try:
        info = instance.keys.revoke(key, actor=actor_for(instance, token))
    except UnknownKey:
        raise click.ClickException(f"no key with id or prefix {key!r}") from None
    click.echo(f"revoked {info.id} ({info.prefix}) at {when(info.revoked_at)}")
