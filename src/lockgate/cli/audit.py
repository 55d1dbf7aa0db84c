"""``lockgate audit``: verify the tamper-evident audit log (on the server, with its key) and read it."""

from __future__ import annotations

import click

from lockgate.cli.client import Client
from lockgate.cli.options import connected, emit_json, json_option, when


@click.group()
def audit() -> None:
    """Verify and read the audit log (platform viewers verify; platform admins read entries)."""


@audit.command("verify")
@json_option
@connected
def verify_command(as_json: bool, client: Client) -> None:
    """Check every entry, the signed head and the anchor file on the server; exit 1 on any tampering."""
    report = client.get("/audit/verify")
    if as_json:
        emit_json(report)
    elif not report["ok"]:
        click.echo(f"TAMPERED: {report['problem']}")
    else:
        click.echo(
            f"ok: {report['entries']} entries, head at seq {report['head_seq'] or 0}, "
            f"signed by key {report['fingerprint']}"
        )
        if report["anchor_seq"] is None:
            click.echo("anchor: none yet (truncation together with the heads would go unnoticed)")
        else:
            click.echo(f"anchor: seq {report['anchor_seq']}")
    if not report["ok"]:
        raise click.exceptions.Exit(1)


@audit.command("show")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--action", default=None, help="Only entries of this action, such as user.invite.")
@json_option
@connected
def show(limit: int, action: str | None, as_json: bool, client: Client) -> None:
    """The newest entries first."""
    entries = client.get("/audit", limit=limit, action=action)
    if as_json:
        emit_json(entries)
        return
    click.echo(
        f"{'SEQ':>6} {'AT (UTC)':<20} {'ACTOR':<16} {'ACTION':<20} {'OUTCOME':<8} {'SOURCE':<10} RESOURCE"
    )
    for e in entries:
        click.echo(
            f"{e['seq']:>6} {when(e['at']):<20} {e['actor']:<16} {e['action']:<20} "
            f"{e['outcome']:<8} {e['source'] or '-':<10} {e['resource']}"
        )
