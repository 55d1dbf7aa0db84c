"""``lockgate evidence``: list, show, verify and export the signed records of promotions and rollbacks.

Reading needs the viewer role. ``verify --bundle`` is the auditor's command: it checks an exported
bundle offline, against a public key the auditor trusts: ``--public-key``, or the key the server
publishes (``lockgate evidence key``) when a server is configured. It never trusts the key inside the
bundle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lockgate.cli.client import Client, ClientError, resolve
from lockgate.cli.options import connected, emit_json, fail, json_option, tenant_option, tenant_path, when


@click.group()
def evidence() -> None:
    """Signed evidence of every promotion attempt and rollback: inspect, verify, export for an audit."""


@evidence.command("list")
@click.option("--release", "release_id", default=None, help="Only this release's evidence.")
@click.option("--route", default=None, help="Only this route's evidence.")
@click.option("--ids", "ids_only", is_flag=True, help="Print only the ids, oldest first.")
@tenant_option
@json_option
@connected
def list_evidence(
    release_id: str | None, route: str | None, ids_only: bool, tenant: str, as_json: bool, client: Client
) -> None:
    """Evidence records, oldest first."""
    records = client.get(tenant_path(tenant, "evidence"), release=release_id, route=route)
    if as_json:
        emit_json(records)
        return
    if ids_only:
        for item in records:
            click.echo(item["id"])
        return
    click.echo(
        f"{'ID':<28} {'DECIDED (UTC)':<20} {'ROUTE':<20} {'ENV':<6} {'ACTION':<9} {'DECISION':<9} "
        f"{'BY':<12} RELEASE"
    )
    for item in records:
        click.echo(
            f"{item['id']:<28} {when(item['created_at']):<20} {item['route']:<20} {item['environment']:<6} "
            f"{item['action']:<9} {item['decision']:<9} {item['requested_by']:<12} {item['release_id']}"
        )


@evidence.command("show")
@click.argument("evidence_id")
@tenant_option
@json_option
@connected
def show(evidence_id: str, tenant: str, as_json: bool, client: Client) -> None:
    """One record: the decision and everything it was based on."""
    item = client.get(tenant_path(tenant, "evidence", evidence_id))
    if as_json:
        emit_json(item)
        return
    for line in _describe(item):
        click.echo(line)


@evidence.command("key")
@connected
def key(client: Client) -> None:
    """The server's public signing key (base64) and its fingerprint: pin it to verify bundles."""
    answer = client.get("/signing-key")
    click.echo(f"fingerprint {answer['fingerprint']}", err=True)
    click.echo(answer["public_key"])


@evidence.command("verify")
@click.argument("evidence_id", required=False)
@click.option(
    "--bundle",
    "bundle",
    type=click.Path(dir_okay=False, exists=True),
    help="Verify an exported bundle offline.",
)
@click.option(
    "--public-key", default=None, help="With --bundle: the Ed25519 key (base64) it must be signed by."
)
@tenant_option
@click.option("--url", envvar="LOCKGATE_URL", default=None, help="Server URL (default: $LOCKGATE_URL).")
@click.option(
    "--token", envvar="LOCKGATE_TOKEN", default=None, help="Control token (default: $LOCKGATE_TOKEN)."
)
@click.option(
    "--profile", envvar="LOCKGATE_PROFILE", default=None, help="A profile saved by `lockgate login`."
)
def verify(
    evidence_id: str | None,
    bundle: str | None,
    public_key: str | None,
    tenant: str,
    url: str | None,
    token: str | None,
    profile: str | None,
) -> None:
    """Check EVIDENCE_ID on the server, or --bundle FILE offline; exit 1 on any failed check."""
    if (evidence_id is None) == (bundle is None):
        raise click.UsageError("give either EVIDENCE_ID or --bundle FILE")
    try:
        if bundle is not None:
            from lockgate.gates.evidence_format import verify_bundle

            trusted = public_key or _server_key(url, token, profile)
            result = verify_bundle(Path(bundle).read_bytes(), trusted)
            checks = [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in result.checks]
            _report(checks, result.fingerprint, result.ok)
            return
        if public_key is not None:
            raise click.UsageError(
                "--public-key applies to --bundle; the server checks records with its own key"
            )
        answer = resolve(url, token, profile).get(tenant_path(tenant, "evidence", str(evidence_id), "verify"))
    except ClientError as exc:
        fail(exc.message)
    _report(answer["checks"], answer["fingerprint"], answer["ok"])


def _server_key(url: str | None, token: str | None, profile: str | None) -> str:
    try:
        client = resolve(url, token, profile)
    except ClientError:
        fail(
            "give the trusted signing key with --public-key (the instance's key: `lockgate evidence key`); "
            "a bundle is never verified against the key it carries"
        )
    try:
        key: str = client.get("/signing-key")["public_key"]
    except ClientError as exc:
        fail(f"give the trusted signing key with --public-key; fetching the server's failed: {exc.message}")
    click.echo(f"trusting the signing key {client.url} publishes", err=True)
    return key


@evidence.command("export")
@click.argument("evidence_id")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="File to write.")
@tenant_option
@connected
def export(evidence_id: str, output: str, tenant: str, client: Client) -> None:
    """Write the self-contained bundle of EVIDENCE_ID (verify it with `evidence verify --bundle`)."""
    data = client.request("GET", tenant_path(tenant, "evidence", evidence_id, "bundle"), raw=True)
    Path(output).write_bytes(data)
    click.echo(f"wrote {output} ({len(data)} bytes)")


def _report(checks: list[dict[str, Any]], fingerprint: str | None, ok: bool) -> None:
    for check in checks:
        click.echo(f"{'✓' if check['ok'] else '✗'} {check['name']}: {check['detail']}")
    click.echo(f"signing key fingerprint: {fingerprint or '-'}")
    if not ok:
        click.echo(f"FAILED: {', '.join(c['name'] for c in checks if not c['ok'])}")
        raise click.exceptions.Exit(1)
    click.echo("ok: every check passed")


def _describe(item: dict[str, Any]) -> list[str]:
    record = item["record"]
    policy = record.get("policy")
    runs = [
        f"{r['role']} {r['run_id']} ({r['origin']}) fingerprint {r.get('fingerprint') or '-'}"
        for r in record.get("runs", [])
    ]
    return [
        f"evidence   {item['id']} (tenant {item['tenant']})",
        f"decision   {record.get('action', 'promote')} {record['decision']}: "
        f"{record['route']} -> {record['environment']}",
        f"release    {record['release_id']}",
        f"commit     {record.get('git_commit') or '-'}",
        *_items("reasons", record.get("reasons", [])),
        *_items("warnings", record.get("warnings", [])),
        *_items("datasets", [f"{d['name']}@{d['version']} sha256:{d['sha256']}" for d in record["datasets"]]),
        *_items(
            "reports",
            [f"{r['role']} {r['run_id']} {r['format']} sha256:{r['sha256']}" for r in record["reports"]],
        ),
        *_items("runs", runs),
        f"policy     {_policy(policy)}",
        f"approvers  {', '.join(record['approvers']) or '-'}",
        f"requested  by {record['requested_by']} at {record['requested_at']}",
        f"decided    {record['decided_at']}",
        f"audit seq  {item['audit_seq']}",
        f"sha256     {item['sha256']}",
        f"signed by  key {item['fingerprint']}",
    ]


def _items(label: str, values: list[str]) -> list[str]:
    if not values:
        return [f"{label:<10} -"]
    return [f"{label if i == 0 else '':<10} - {value}" for i, value in enumerate(values)]


def _policy(policy: dict[str, Any] | None) -> str:
    if policy is None:
        return "-"
    return f"sha256:{policy['sha256']} ({policy['engine']}, {len(policy['modules'])} module(s))"
