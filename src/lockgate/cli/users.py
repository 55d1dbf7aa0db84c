"""``lockgate users``: people, their roles per tenant, and their control tokens."""

from __future__ import annotations

import click

from lockgate.cli.common import data_dir_option, emit_json
from lockgate.cli.identity import actor_for, control_errors, token_option
from lockgate.instance import open_instance
from lockgate.security.rbac import Role


def _grants(pairs: tuple[str, ...]) -> dict[str, list[Role]]:
    grants: dict[str, list[Role]] = {}
    for pair in pairs:
        tenant, _, role = pair.rpartition(":")
        try:
            grants.setdefault(tenant or "default", []).append(Role(role))
        except ValueError:
            raise click.BadParameter(
                f"unknown role {role!r}; roles: {', '.join(r.value for r in Role)}"
            ) from None
    return grants


@click.group()
def users() -> None:
    """Manage users and roles (admin only)."""


@users.command("create")
@click.argument("name")
@click.option("--role", "roles", multiple=True, help="[TENANT:]ROLE, repeatable, e.g. default:editor.")
@data_dir_option
@token_option
@control_errors
def create(name: str, roles: tuple[str, ...], data_dir: str | None, token: str | None) -> None:
    """Create a user and print a control token for them (shown once)."""
    instance = open_instance(data_dir)
    actor = actor_for(instance, token)
    user = instance.users.create(actor, name, _grants(roles))
    issued = instance.users.issue_token(actor, name)
    click.echo(f"user:  {user.name} {user.roles}")
    click.echo(f"token: {issued.secret}")


@users.command("grant")
@click.argument("name")
@click.argument("tenant")
@click.argument("roles", nargs=-1)
@data_dir_option
@token_option
@control_errors
def grant(name: str, tenant: str, roles: tuple[str, ...], data_dir: str | None, token: str | None) -> None:
    """Set NAME's roles in TENANT (replaces the roles held there)."""
    instance = open_instance(data_dir)
    user = instance.users.grant(actor_for(instance, token), name, tenant, [Role(r) for r in roles])
    click.echo(f"{user.name}: {user.roles}")


@users.command("token")
@click.argument("name")
@data_dir_option
@token_option
@control_errors
def new_token(name: str, data_dir: str | None, token: str | None) -> None:
    """Issue another control token for NAME (yourself, or anyone if you are an admin)."""
    instance = open_instance(data_dir)
    click.echo(instance.users.issue_token(actor_for(instance, token), name).secret)


@users.command("list")
@data_dir_option
def list_users(data_dir: str | None) -> None:
    """List users and their roles."""
    emit_json([{"name": u.name, "roles": u.roles} for u in open_instance(data_dir).users.all()])
