"""``lockgate login``, ``logout`` and ``whoami``: which server the CLI talks to, and as whom."""

from __future__ import annotations

import click

from lockgate.cli.client import Client, ClientError, Profile, forget_profile, load_profiles, save_profile
from lockgate.cli.options import connected, emit_json, fail, json_option


@click.command()
@click.option("--url", envvar="LOCKGATE_URL", required=True, help="Server URL, e.g. http://127.0.0.1:4000.")
@click.option("--token", envvar="LOCKGATE_TOKEN", default=None, help="A control token you hold (lgc-...).")
@click.option(
    "--invite", "invitation", default=None, help="An invitation code (lgi-...): redeem it for your token."
)
@click.option("--profile", default="default", show_default=True, help="Save as this profile.")
@click.option("--use", "use", is_flag=True, help="Make it the current profile (the first one always is).")
def login(url: str, token: str | None, invitation: str | None, profile: str, use: bool) -> None:
    """Check a token (or redeem an invitation) against the server and save it as a profile (0600).

    Commands use the current profile unless LOCKGATE_PROFILE or --profile names another.
    """
    if (token is None) == (invitation is None):
        raise click.UsageError("give --token TOKEN or --invite CODE")
    try:
        client = Client(url, token)
        if invitation is not None:
            issued = client.request("POST", "/invitations/redeem", body={}, bearer=invitation)
            token = str(issued["token"])
            client = Client(url, token)
            click.echo(f"redeemed the invitation: token {issued['prefix']} expires {issued['expires_at']}")
        me = client.get("/users/me")
    except ClientError as exc:
        fail(exc.message)
    assert token is not None
    path = save_profile(profile, Profile(client.url, token), make_current=use)
    current, _ = load_profiles()
    roles = ", ".join(f"{t}: {'+'.join(r)}" for t, r in sorted(me["roles"].items())) or "no roles yet"
    click.echo(f"logged in to {client.url} as {me['name']} ({roles}); profile {profile!r} saved in {path}")
    if current != profile:
        hint = f"use LOCKGATE_PROFILE={profile} or --use"
        click.echo(f"the current profile is still {current!r}: {hint}", err=True)


@click.command()
@click.option("--profile", default=None, help="Default: the current profile.")
def logout(profile: str | None) -> None:
    """Forget a saved profile (the token stays valid; revoke it with `lockgate tokens revoke`)."""
    current, _ = load_profiles()
    name = profile or current
    if name is None or not forget_profile(name):
        fail(f"no saved profile {name!r}" if name else "no saved profile")
    click.echo(f"forgot profile {name!r}")


@click.command()
@json_option
@connected
def whoami(as_json: bool, client: Client) -> None:
    """Who the token belongs to, and their roles per tenant."""
    me = client.get("/users/me")
    if as_json:
        emit_json(me)
        return
    click.echo(f"{me['name']} at {client.url}")
    for tenant, roles in sorted(me["roles"].items()):
        click.echo(f"  {tenant}: {', '.join(roles)}")
