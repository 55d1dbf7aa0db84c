"""``lockgate users``: invite people, set their roles, list them."""

from __future__ import annotations

import click

from lockgate.cli.client import Client
from lockgate.cli.options import connected, emit_json, json_option, seconds, tenant_option, tenant_path

ROLES = ("viewer", "editor", "approver", "deployer", "admin")


@click.group()
def users() -> None:
    """Invite users and manage their roles (tenant admins)."""


@users.command("invite")
@click.argument("name")
@click.option("--role", "roles", multiple=True, required=True, type=click.Choice(ROLES), help="Repeatable.")
@tenant_option
@click.option("--expires-in", default=None, help="How long the code works (default 72h).")
@click.option("--quiet", "-q", is_flag=True, help="Print only the invitation code.")
@connected
def invite(
    name: str, roles: tuple[str, ...], tenant: str, expires_in: str | None, quiet: bool, client: Client
) -> None:
    """Create user NAME with roles in the tenant and print their one-time invitation code.

    Give the code to NAME only; they run `lockgate login --url URL --invite CODE` and receive their own
    control token, which you never see.
    """
    body = {
        "name": name,
        "roles": list(roles),
        "expires_in_hours": seconds(expires_in) / 3600 if expires_in else None,
    }
    invitation = client.post(tenant_path(tenant, "invitations"), body)
    if quiet:
        click.echo(invitation["code"])
        return
    click.echo(f"invited {name} to {tenant} as {', '.join(invitation['roles'])}")
    click.echo(f"invitation code (works once, until {invitation['expires_at']}): {invitation['code']}")
    click.echo(f"{name} runs: lockgate login --url {client.url} --invite <code>", err=True)


@users.command("grant")
@click.argument("name")
@click.argument("roles", nargs=-1, type=click.Choice(ROLES))
@tenant_option
@connected
def grant(name: str, roles: tuple[str, ...], tenant: str, client: Client) -> None:
    """Set NAME's roles in the tenant (replaces what they held there; none cuts them off)."""
    user = client.put(tenant_path(tenant, "users", name, "roles"), {"roles": list(roles)})
    held = "; ".join(f"{t}: {', '.join(r)}" for t, r in sorted(user["roles"].items())) or "no roles"
    click.echo(f"{user['name']}: {held}")


@users.command("list")
@json_option
@connected
def list_users(as_json: bool, client: Client) -> None:
    """Every user and their roles (platform admins)."""
    found = client.get("/users")
    if as_json:
        emit_json(found)
        return
    for user in found:
        roles = "; ".join(f"{t}: {', '.join(r)}" for t, r in sorted(user["roles"].items())) or "-"
        click.echo(f"{user['name']:<24} {roles}")
