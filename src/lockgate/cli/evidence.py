"""``lockgate evidence``: list, show, verify and export the signed records of promotion attempts.

Reading needs a control token with the viewer role. ``verify --bundle`` is the auditor's command: it
checks an exported bundle offline, with no data directory and no token; ``--public-key`` pins the key
the bundle must be signed by, otherwise compare the printed fingerprint with the instance's key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lockgate.cli.common import data_dir_option, emit_json, when
from lockgate.cli.identity import actor_for, control_errors, token_option
from lockgate.evals.bundle import Verification, fingerprint, verify_bundle
from lockgate.evals.evidence import EvidenceService, StoredEvidence
from lockgate.instance import open_instance
from lockgate.security.rbac import Role

tenant_option = click.option("--tenant", default="default", show_default=True)


def _service(data_dir: str | None, token: str | None, tenant: str) -> EvidenceService:
    """The evidence service, once the token's user is known to hold the viewer role in ``tenant``."""
    instance = open_instance(data_dir)
    actor_for(instance, token).require(tenant, Role.VIEWER, "evidence.read")
    return EvidenceService(instance.engine, instance.audit)


@click.group()
def evidence() -> None:
    """Signed evidence of every promotion attempt: inspect it, verify it, export it for an audit."""


@evidence.command("list")
@click.option("--release", "release_id", default=None, help="Only this release's evidence.")
@click.option("--route", default=None, help="Only this route's evidence.")
@click.option("--json", "as_json", is_flag=True)
@tenant_option
@data_dir_option
@token_option
@control_errors
def list_evidence(
    release_id: str | None,
    route: str | None,
    as_json: bool,
    tenant: str,
    data_dir: str | None,
    token: str | None,
) -> None:
    """Evidence records, oldest first."""
    records = _service(data_dir, token, tenant).list(tenant, release_id=release_id, route=route)
    if as_json:
        emit_json([_summary(item) for item in records])
        return
    click.echo(
        f"{'ID':<28} {'DECIDED (UTC)':<20} {'ROUTE':<20} {'ENV':<6} {'DECISION':<9} {'BY':<12} RELEASE"
    )
    for item in records:
        click.echo(
            f"{item.id:<28} {when(item.created_at):<20} {item.route:<20} {item.environment:<6} "
            f"{item.decision:<9} {item.record['requested_by']:<12} {item.release_id}"
        )


@evidence.command("show")
@click.argument("evidence_id")
@click.option("--json", "as_json", is_flag=True)
@tenant_option
@data_dir_option
@token_option
@control_errors
def show(evidence_id: str, as_json: bool, tenant: str, data_dir: str | None, token: str | None) -> None:
    """One record: the decision and everything it was based on."""
    item = _service(data_dir, token, tenant).get(tenant, evidence_id)
    if as_json:
        emit_json(item.as_dict())
        return
    for line in _describe(item):
        click.echo(line)


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
@data_dir_option
@token_option
@control_errors
def verify(
    evidence_id: str | None,
    bundle: str | None,
    public_key: str | None,
    tenant: str,
    data_dir: str | None,
    token: str | None,
) -> None:
    """Check EVIDENCE_ID against the database, or --bundle FILE without one; exit 1 on any failed check."""
    if (evidence_id is None) == (bundle is None):
        raise click.UsageError("give either EVIDENCE_ID or --bundle FILE")
    if bundle is not None:
        result = verify_bundle(Path(bundle).read_bytes(), public_key)
    elif public_key is not None:
        raise click.UsageError(
            "--public-key applies to --bundle; the database is checked with this instance's key"
        )
    else:
        result = _service(data_dir, token, tenant).verify(tenant, str(evidence_id))
    _report(result)


@evidence.command("export")
@click.argument("evidence_id")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="File to write.")
@tenant_option
@data_dir_option
@token_option
@control_errors
def export(evidence_id: str, output: str, tenant: str, data_dir: str | None, token: str | None) -> None:
    """Write the self-contained bundle of EVIDENCE_ID (verify it with `evidence verify --bundle`)."""
    data = _service(data_dir, token, tenant).export(tenant, evidence_id)
    Path(output).write_bytes(data)
    click.echo(f"wrote {output} ({len(data)} bytes)")


def _report(result: Verification) -> None:
    for check in result.checks:
        click.echo(f"{'✓' if check.ok else '✗'} {check.name}: {check.detail}")
    click.echo(f"signing key fingerprint: {result.fingerprint or '-'}")
    if not result.ok:
        click.echo(f"FAILED: {', '.join(result.failed)}")
        raise click.exceptions.Exit(1)
    click.echo("ok: every check passed")


def _summary(item: StoredEvidence) -> dict[str, Any]:
    return {
        "id": item.id,
        "route": item.route,
        "environment": item.environment,
        "release_id": item.release_id,
        "decision": item.decision,
        "requested_by": item.record["requested_by"],
        "created_at": item.created_at.isoformat(),
        "audit_seq": item.audit_seq,
    }


def _describe(item: StoredEvidence) -> list[str]:
    record = item.record
    policy = record.get("policy")
    return [
        f"evidence   {item.id} (tenant {item.tenant})",
        f"decision   {item.decision}: {item.route} -> {item.environment}",
        f"release    {item.release_id}",
        f"commit     {record.get('git_commit') or '-'}",
        *_items("reasons", record.get("reasons", [])),
        *_items("warnings", record.get("warnings", [])),
        *_items("datasets", [f"{d['name']}@{d['version']} sha256:{d['sha256']}" for d in record["datasets"]]),
        *_items(
            "reports",
            [f"{r['role']} {r['run_id']} {r['format']} sha256:{r['sha256']}" for r in record["reports"]],
        ),
        f"policy     {_policy(policy)}",
        f"approvers  {', '.join(record['approvers']) or '-'}",
        f"requested  by {record['requested_by']} at {record['requested_at']}",
        f"decided    {record['decided_at']}",
        f"audit seq  {item.audit_seq}",
        f"sha256     {item.sha256}",
        f"signed by  key {fingerprint(item.public_key)}",
    ]


def _items(label: str, values: list[str]) -> list[str]:
    if not values:
        return [f"{label:<10} -"]
    return [f"{label if i == 0 else '':<10} - {value}" for i, value in enumerate(values)]


def _policy(policy: dict[str, Any] | None) -> str:
    if policy is None:
        return "-"
    return f"sha256:{policy['sha256']} ({policy['engine']}, {len(policy['modules'])} module(s))"
