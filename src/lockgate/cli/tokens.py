"""``lockgate tokens``: your control tokens: list, create, rotate, revoke."""

from __future__ import annotations

from urllib.parse import quote

import click

from lockgate.cli.client import Client, Profile, load_profiles, save_profile
from lockgate.cli.options import connected, emit_json, json_option, seconds, when


@click.group()
def tokens() -> None:
    """Your control tokens (secrets are shown once, when created or rotated)."""


@tokens.command("list")
@json_option
@connected
def list_tokens(as_json: bool, client: Client) -> None:
    """Your tokens, with their status and expiry."""
    found = client.get("/tokens")
    if as_json:
        emit_json(found)
        return
    click.echo(f"{'ID':<29} {'PREFIX':<13} {'NAME':<16} {'STATUS':<8} EXPIRES")
    for t in found:
        click.echo(
            f"{t['id']:<29} {t['prefix']:<13} {t['name'] or '-':<16} {t['status']:<8} {when(t['expires_at'])}"
        )


@tokens.command("create")
@click.option("--name", default="", help="A label, e.g. ci-deploy.")
@click.option("--expires-in", default=None, help="Lifetime such as 30d or 12h (default 90d, at most 365d).")
@connected
def create(name: str, expires_in: str | None, client: Client) -> None:
    """A new token for yourself (for a CI job, say); printed once."""
    days = seconds(expires_in) / 86400 if expires_in else None
    issued = client.post("/tokens", {"name": name, "expires_in_days": days})
    click.echo(f"token {issued['prefix']} expires {when(issued['expires_at'])}", err=True)
    click.echo(issued["token"])


@tokens.command("rotate")
@click.argument("token_id", required=False)
@click.option("--expires-in", default=None, help="Lifetime of the new token (default 90d).")
@connected
def rotate(token_id: str | None, expires_in: str | None, client: Client) -> None:
    """Replace a token (default: the one in use) with a new secret; the old one stops working now.

    When the rotated token is the one a saved profile holds, the profile is updated.
    """
    in_use = client.token or ""
    target = token_id or "-".join(in_use.split("-", 2)[:2])
    if not target:
        raise click.UsageError("give the TOKEN_ID (or prefix) to rotate")
    days = seconds(expires_in) / 86400 if expires_in else None
    issued = client.post(f"/tokens/{quote(target, safe='')}/rotate", {"expires_in_days": days})
    _, profiles = load_profiles()
    for name, profile in profiles.items():
        if in_use and profile.token == in_use and target == "-".join(in_use.split("-", 2)[:2]):
            save_profile(name, Profile(profile.url, issued["token"]), make_current=False)
            click.echo(f"profile {name!r} now holds the new token", err=True)
    click.echo(f"token {issued['prefix']} expires {when(issued['expires_at'])}", err=True)
    click.echo(issued["token"])


@tokens.command("revoke")
@click.argument("token_id")
@connected
def revoke(token_id: str, client: Client) -> None:
    """Revoke a token by id or prefix (yours; any as a platform admin)."""
    info = client.delete(f"/tokens/{quote(token_id, safe='')}")
    click.echo(f"revoked {info['prefix']} of {info['user']} at {when(info['revoked_at'])}")
