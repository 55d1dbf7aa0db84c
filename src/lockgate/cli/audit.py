"""``lockgate audit``: verify the tamper-evident audit log and show its entries.

Both commands read the database directly, as an operator on the host would; they take no control token.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import orjson
from sqlalchemy import select

from lockgate.cli.common import data_dir_option, emit_json, when
from lockgate.instance import open_instance
from lockgate.security.audit_verify import anchor_path, verify
from lockgate.security.signing import load_signer
from lockgate.store.tables import audit_log

# Entries hold no secrets by design; this guards the display against a service that slips one in.
_SECRET_NAMES = re.compile(r"secret|password|passphrase|private|pepper|token_hash|key_hash|signing_key", re.I)
_FULL_KEY = re.compile(r"\b(lgc?-[0-9a-f]{8})-[A-Za-z0-9_-]+")
REDACTED = "[redacted]"


@click.group()
def audit() -> None:
    """Verify and read the audit log (operator commands with direct database access; no token needed)."""


@audit.command("verify")
@click.option("--anchor", type=click.Path(dir_okay=False), default=None, help="Anchor file to check against.")
@click.option("--public-key", default=None, help="Trust this Ed25519 public key (base64) instead.")
@data_dir_option
def verify_command(anchor: str | None, public_key: str | None, data_dir: str | None) -> None:
    """Check every entry, the signed head and the anchor file; exit 1 on any sign of tampering.

    The trusted key is this installation's signing key (LOCKGATE_SIGNING_KEY or <data-dir>/signing-key),
    never one read from the database.
    """
    instance = open_instance(data_dir)
    key = public_key or load_signer(instance.data).public_key
    path = Path(anchor) if anchor else anchor_path(instance.data)
    report = verify(instance.engine, key, path)
    if not report.ok:
        click.echo(f"TAMPERED: {report.problem}")
        raise click.exceptions.Exit(1)
    click.echo(f"ok: {report.entries} entries, head at seq {report.head_seq or 0}, signed by {key}")
    if report.anchor_seq is None:
        click.echo(f"anchor: none at {path} (truncation together with the heads would go unnoticed)")
    else:
        click.echo(f"anchor: seq {report.anchor_seq} in {path}")


@audit.command("show")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--action", default=None, help="Only entries of this action, such as user.create.")
@click.option("--json", "as_json", is_flag=True)
@data_dir_option
def show(limit: int, action: str | None, as_json: bool, data_dir: str | None) -> None:
    """The newest entries first."""
    query = select(audit_log).order_by(audit_log.c.seq.desc()).limit(limit)
    if action is not None:
        query = query.where(audit_log.c.action == action)
    with open_instance(data_dir).engine.connect() as connection:
        rows = connection.execute(query).all()
    entries = [
        {
            "seq": int(row.seq),
            "at": row.at.isoformat(),
            "actor": row.actor,
            "action": row.action,
            "resource": _redact(row.resource),
            "before": _redact(_parsed(row.before)),
            "after": _redact(_parsed(row.after)),
            "outcome": row.outcome,
            "source": row.source,
            "request_id": row.request_id,
            "hash": row.hash,
        }
        for row in rows
    ]
    if as_json:
        emit_json(entries)
        return
    click.echo(
        f"{'SEQ':>6} {'AT (UTC)':<20} {'ACTOR':<16} {'ACTION':<18} {'OUTCOME':<8} {'SOURCE':<10} RESOURCE"
    )
    for entry, row in zip(entries, rows, strict=True):
        click.echo(
            f"{entry['seq']:>6} {when(row.at):<20} {entry['actor']:<16} {entry['action']:<18} "
            f"{entry['outcome']:<8} {entry['source'] or '-':<10} {entry['resource']}"
        )


def _parsed(text: str | None) -> Any:
    try:
        return orjson.loads(text) if text is not None else None
    except orjson.JSONDecodeError:
        return text  # a tampered column is still worth seeing as it is


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return _FULL_KEY.sub(rf"\1-{REDACTED}", value)
    if isinstance(value, dict):
        return {k: REDACTED if _SECRET_NAMES.search(str(k)) else _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value
