"""``lockgate evidence`` against a running server (SQLite and PostgreSQL), on evidence a real promotion
left: a release evaluated on the server, refused by its gate once, then promoted to stage and (approved
by someone else) to prod."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from lockgate.control.prompt_spec import PromptSpec
from lockgate.control.registry import ModelCard
from lockgate.control.releases import ReleaseRequest
from lockgate.evals.cases import Case
from lockgate.evals.datasets import DatasetSpec
from lockgate.gates.gate import GateSpec
from lockgate.instance import Instance
from lockgate.security.rbac import Actor, Role
from lockgate.services import Services
from lockgate.store.tables import eval_reports
from tests.support.cli import Cli
from tests.support.people import token_of

ROUTE = "support-answer"
BARE: dict[str, Any] = {"LOCKGATE_URL": None, "LOCKGATE_TOKEN": None}


class Recording(Cli):
    """The CLI, remembering everything it printed."""

    def __init__(self, url: str, token: str | None, home: Path, outputs: list[str]) -> None:
        super().__init__(url, token, home)
        self.outputs = outputs

    def as_(self, token: str | None) -> Recording:
        return Recording(self.url, token, self.home, self.outputs)

    def __call__(self, *args: str, input: str | None = None, **env: str | None) -> Result:
        result = super().__call__(*args, input=input, **env)
        self.outputs.append(result.output)
        return result


@dataclass
class Promoted:
    admin: Recording
    viewer: Recording
    outsider: Recording
    release_id: str
    run_id: str
    evidence: list[dict[str, Any]]
    """Oldest first: stage deny (no eval yet), stage allow, prod allow."""

    @property
    def prod(self) -> dict[str, Any]:
        return self.evidence[-1]


def prompt() -> PromptSpec:
    return PromptSpec.model_validate(
        {
            "name": ROUTE,
            "version": "1.0.0",
            "messages": [{"role": "user", "content": 'reply:{"answer": "{{ question }}"}'}],
            "variables": {
                "type": "object",
                "properties": {"question": {"type": "string"}},
                "required": ["question"],
            },
            "settings": {"model": "support-llm@champion", "max_tokens": 64},
            "output_schema": {
                "type": "object",
                "properties": {"answer": {"type": "string"}},
                "required": ["answer"],
            },
        }
    )


@pytest.fixture
def promoted(
    cli: Cli, services: Services, admin: Actor, instance: Instance, admin_token: str, tmp_path: Path
) -> Iterator[Promoted]:
    """The promotion; afterwards, neither a control token nor the signing key appears in anything the
    CLI printed."""
    tokens = {
        name: token_of(services, admin, name, role)
        for name, role in (
            ("erin", Role.EDITOR),
            ("april", Role.APPROVER),
            ("dan", Role.DEPLOYER),
            ("vic", Role.VIEWER),
            ("otto", Role.VIEWER),
        )
    }
    services.users.grant(admin, "default", "otto", [])  # a user, but with no role in any tenant
    erin = services.tokens.authenticate(tokens["erin"])
    card = ModelCard(
        name="support-llm", version="1", gateway_model="m", license="mit", intended_use="t", owner_team="qa"
    )
    services.registry.register(erin, "default", card)
    services.registry.set_alias(erin, "default", "support-llm", "champion", "1")
    services.prompts.push(erin, "default", prompt())
    request = ReleaseRequest(route=ROUTE, prompt=f"{ROUTE}@1.0.0", git_commit="4f2a9c1")
    release = services.releases.create(erin, "default", request).id
    services.environments.point(erin, "default", ROUTE, "dev", release)
    cases = [
        Case(id=f"q-{topic}", variables={"question": topic}, facts=[topic]) for topic in ("sso", "refunds")
    ]
    services.datasets.push(erin, "default", DatasetSpec(name="golden", scorers=[{"type": "contains"}]), cases)
    services.gates.set(admin, "default", GateSpec(route=ROUTE, datasets=["golden"]), {})

    outputs: list[str] = []
    run = Recording(cli.url, admin_token, cli.home, outputs)
    dan = run.as_(tokens["dan"])
    early = dan.fails("promote", ROUTE, "--to", "stage")
    assert "has no completed eval run on golden@1" in early.stderr
    evaluated = run.as_(tokens["erin"]).ok(
        "eval", "run", "--release", release, "--dataset", "golden", "--output", str(tmp_path / "reports")
    )
    run_id = evaluated.stdout.split()[1]  # "run RUN_ID complete: ..."
    assert run_id.startswith("run_"), evaluated.stdout
    dan.ok("promote", ROUTE, "--to", "stage")
    run.as_(tokens["april"]).ok("releases", "approve", release, "--env", "prod")
    dan.ok("promote", ROUTE, "--to", "prod")
    evidence = run.json("evidence", "list")
    assert [(e["environment"], e["decision"]) for e in evidence] == [
        ("stage", "deny"),
        ("stage", "allow"),
        ("prod", "allow"),
    ]

    yield Promoted(run, run.as_(tokens["vic"]), run.as_(tokens["otto"]), release, run_id, evidence)

    signing_key = (instance.data / "signing-key").read_text().strip()
    secrets = [signing_key, admin_token, *tokens.values()]
    secrets += [token.split("-", 2)[2] for token in (admin_token, *tokens.values())]
    leaks = [secret for output in outputs for secret in secrets if secret in output]
    assert leaks == []


def server_key(promoted: Promoted) -> str:
    return promoted.viewer.ok("evidence", "key").stdout.strip()


def test_list_and_show(promoted: Promoted) -> None:
    vic, prod = promoted.viewer, promoted.prod
    table = vic.ok("evidence", "list").stdout.splitlines()
    assert table[0].split() == [
        "ID",
        "DECIDED",
        "(UTC)",
        "ROUTE",
        "ENV",
        "ACTION",
        "DECISION",
        "BY",
        "RELEASE",
    ]
    rows = [line.split() for line in table[1:]]
    assert [(r[0], r[3], r[4], r[5], r[6], r[7], r[8]) for r in rows] == [
        (e["id"], ROUTE, e["environment"], "promote", e["decision"], "dan", promoted.release_id)
        for e in promoted.evidence
    ]
    assert vic.ok("evidence", "list", "--ids").stdout.split() == [e["id"] for e in promoted.evidence]
    assert len(vic.json("evidence", "list", "--release", promoted.release_id)) == 3
    assert vic.json("evidence", "list", "--release", "rel_other") == []
    assert vic.json("evidence", "list", "--route", "other") == []

    shown = vic.json("evidence", "show", prod["id"])
    record = shown["record"]
    assert (shown["id"], shown["audit_seq"], record["approvers"]) == (
        prod["id"],
        prod["audit_seq"],
        ["april"],
    )
    lines = vic.ok("evidence", "show", prod["id"]).stdout.splitlines()
    assert f"evidence   {prod['id']} (tenant default)" in lines
    assert f"decision   promote allow: {ROUTE} -> prod" in lines
    assert f"release    {promoted.release_id}" in lines
    assert "commit     4f2a9c1" in lines
    assert "reasons    -" in lines
    assert f"datasets   - golden@1 sha256:{record['datasets'][0]['sha256']}" in lines
    for fmt in ("html", "json", "junit"):
        assert any(f"candidate {promoted.run_id} {fmt} sha256:" in line for line in lines), fmt
    assert any(
        line.startswith("runs       - candidate ") and f"{promoted.run_id} (server) fingerprint " in line
        for line in lines
    )
    assert "approvers  april" in lines
    assert f"requested  by dan at {record['requested_at']}" in lines
    assert f"audit seq  {prod['audit_seq']}" in lines
    assert f"sha256     {shown['sha256']}" in lines

    denied = vic.ok("evidence", "show", promoted.evidence[0]["id"]).stdout
    assert "decision   promote deny: support-answer -> stage" in denied
    assert "has no completed eval run on golden@1" in denied


def test_verify_on_the_server_notices_a_changed_report(promoted: Promoted, instance: Instance) -> None:
    vic, prod = promoted.viewer, promoted.prod
    lines = vic.ok("evidence", "verify", prod["id"]).stdout.splitlines()
    assert lines[-1] == "ok: every check passed"
    checks = [line for line in lines if line[:2] in ("✓ ", "✗ ")]
    assert len(checks) == 11
    assert all(line.startswith("✓ ") for line in checks)

    with instance.engine.begin() as connection:
        changed = connection.execute(
            eval_reports.update()
            .where(eval_reports.c.run_id == promoted.run_id, eval_reports.c.format == "json")
            .values(content="{}")
        )
        assert changed.rowcount == 1
    result = vic.fails("evidence", "verify", prod["id"])
    assert any(line.startswith("✗ reports: report ") for line in result.stdout.splitlines())
    assert result.stdout.splitlines()[-1] == "FAILED: reports"


def test_a_bundle_is_verified_against_a_key_the_auditor_trusts(promoted: Promoted, tmp_path: Path) -> None:
    vic, path = promoted.viewer, tmp_path / "evidence.json"
    assert vic.ok("evidence", "export", promoted.prod["id"], "-o", str(path)).stdout.startswith(
        f"wrote {path} ("
    )
    key = server_key(promoted)
    fingerprint = hashlib.sha256(base64.b64decode(key)).hexdigest()[:16]

    # Offline, with no server configured: the key must be given; the one inside the bundle is not trusted.
    untrusted = vic.fails("evidence", "verify", "--bundle", str(path), **BARE)
    assert "give the trusted signing key with --public-key" in untrusted.stderr
    assert "✓" not in untrusted.stdout
    assert "Traceback" not in untrusted.output
    pinned = vic.ok("evidence", "verify", "--bundle", str(path), "--public-key", key, **BARE)
    assert f"✓ trusted key: signed by the trusted key {fingerprint}" in pinned.stdout
    assert f"signing key fingerprint: {fingerprint}" in pinned.stdout
    assert pinned.stdout.splitlines()[-1] == "ok: every check passed"

    other = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    wrong = vic.fails(
        "evidence", "verify", "--bundle", str(path), "--public-key", base64.b64encode(other).decode()
    )
    assert wrong.stdout.splitlines()[-1] == "FAILED: trusted key"

    # With a server configured, its published key is the one trusted.
    fetched = vic.ok("evidence", "verify", "--bundle", str(path))
    assert f"trusting the signing key {vic.url} publishes" in fetched.stderr
    assert f"✓ trusted key: signed by the trusted key {fingerprint}" in fetched.stdout

    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    tampered = vic.fails("evidence", "verify", "--bundle", str(path), "--public-key", key, **BARE)
    assert tampered.stdout.splitlines()[-1].startswith("FAILED: ")


def test_reading_needs_a_viewer_of_the_tenant(promoted: Promoted, tmp_path: Path) -> None:
    evidence_id = promoted.prod["id"]
    for args, operation in (
        (["list"], "evidence.list"),
        (["show", evidence_id], "evidence.get"),
        (["verify", evidence_id], "evidence.verify"),
        (["export", evidence_id, "-o", str(tmp_path / "x.json")], "evidence.export"),
    ):
        refused = promoted.outsider.fails("evidence", *args)
        assert f"otto may not {operation} in tenant 'default': it needs viewer" in refused.stderr
        missing = promoted.outsider.as_(None).fails("evidence", *args)
        assert "missing control token" in missing.stderr
        assert "Traceback" not in refused.output + missing.output
    assert not (tmp_path / "x.json").exists()

    unknown = promoted.admin.fails("evidence", "show", "evd_000000000000000000000000")
    assert "unknown evidence 'evd_000000000000000000000000'" in unknown.stderr


def test_verify_takes_an_id_or_a_bundle(tmp_path: Path) -> None:
    offline = Cli("", None, tmp_path)
    path = tmp_path / "b.json"
    path.write_bytes(b"{}")
    assert offline.fails("evidence", "verify", code=2).exit_code == 2
    offline.fails("evidence", "verify", "evd_1", "--bundle", str(path), code=2)
    offline.fails("evidence", "verify", "evd_1", "--public-key", "AAAA", code=2)
    not_a_bundle = offline.fails("evidence", "verify", "--bundle", str(path), "--public-key", "AAAA")
    assert "✗ format: " in not_a_bundle.stdout
    no_key = offline.fails("evidence", "verify", "--bundle", str(path), **BARE)
    assert "give the trusted signing key with --public-key" in no_key.stderr
