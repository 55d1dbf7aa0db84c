"""``lockgate keys``: create, list and revoke API keys of a tenant, and set their teams (its admins)."""

from __future__ import annotations

import click

from lockgate.cli.client import Client
from lockgate.cli.options import connected, emit_json, json_option, seconds, tenant_option, tenant_path, when


@click.group()
def keys() -> None:
    """Manage API keys (shown once at creation, stored only as a hash)."""


@keys.command("create")
@tenant_option
@click.option("--name", default="", help="A label to recognise the key by.")
@click.option("--model", "models", multiple=True, help="Allow only this model or route:NAME (repeatable).")
@click.option("--expires-in", default=None, help="Lifetime such as 30d, 12h, 15m.")
@click.option("--role", type=click.Choice(["client", "admin"]), default="client", show_default=True)
@click.option(
    "--env",
    "environment",
    type=click.Choice(["dev", "stage", "prod"]),
    default=None,
    help="Pin the key to this environment's releases for route: calls (default: unpinned, prod).",
)
@click.option("--team", default=None, help="The key's team: its limits and budgets apply to the key's calls.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the key.")
@connected
def create(
    tenant: str,
    name: str,
    models: tuple[str, ...],
    expires_in: str | None,
    role: str,
    environment: str | None,
    team: str | None,
    quiet: bool,
    client: Client,
) -> None:
    """Create a key; its secret is printed once."""
    body = {
        "name": name,
        "role": role,
        "allowed_models": list(models) or None,
        "expires_in_days": seconds(expires_in) / 86400 if expires_in else None,
        "environment": environment,
        "team": team,
    }
    issued = client.post(tenant_path(tenant, "keys"), body)
    if quiet:
        click.echo(issued["key"])
        return
    click.echo(f"id:      {issued['id']}")
    click.echo(f"prefix:  {issued['prefix']}")
    click.echo(f"expires: {when(issued['expires_at'])}")
    if issued["team"] is not None:
        click.echo(f"team:    {issued['team']}")
    click.echo(f"key:     {issued['key']}")
    click.echo("Store the key now: lockgate keeps only its hash.", err=True)


@keys.command("list")
@tenant_option
@json_option
@connected
def list_keys(tenant: str, as_json: bool, client: Client) -> None:
    """List keys by prefix; secrets are never shown."""
    found = client.get(tenant_path(tenant, "keys"))
    if as_json:
        emit_json(found)
        return
    width = max([4, *(len(k["team"] or "-") for k in found)])
    click.echo(
        f"{'ID':<29} {'PREFIX':<12} {'ENV':<6} {'ROLE':<7} {'STATUS':<8} {'EXPIRES':<21} "
        f"{'TEAM':<{width}} MODELS"
    )
    for k in found:
        models = ",".join(k["allowed_models"]) if k["allowed_models"] is not None else "*"
        click.echo(
            f"{k['id']:<29} {k['prefix']:<12} {k['environment'] or '-':<6} {k['role']:<7} {k['status']:<8} "
            f"{when(k['expires_at']):<21} {k['team'] or '-':<{width}} {models}"
        )


@keys.command("revoke")
@click.argument("key")
@tenant_option
@connected
def revoke(key: str, tenant: str, client: Client) -> None:
    """Revoke a key by id or prefix; every gateway worker refuses it within a second."""
    info = client.delete(tenant_path(tenant, "keys", key))
    click.echo(f"revoked {info['id']} ({info['prefix']}) at {when(info['revoked_at'])}")


@keys.command("set-team")
@click.argument("key")
@click.argument("team", required=False)
@click.option("--none", "no_team", is_flag=True, help="Take the key out of its team.")
@tenant_option
@connected
def set_team(key: str, team: str | None, no_team: bool, tenant: str, client: Client) -> None:
    """Put KEY (id or prefix) in TEAM, or in none with --none; its next call counts against the team's
    limits and budgets."""
    if (team is None) == (not no_team):
        raise click.UsageError("give a TEAM or --none")
    info = client.put(tenant_path(tenant, "keys", key, "team"), {"team": team})
    where = f"in team {info['team']}" if info["team"] is not None else "in no team"
    click.echo(f"key {info['id']} ({info['prefix']}) is {where} now")
