"""``lockgate evidence`` end to end against a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from lockgate.cli.evidence import evidence
from lockgate.gates.evidence import StoredEvidence
from lockgate.instance import Instance
from lockgate.security.rbac import Actor, Role
from lockgate.store.tables import eval_reports
from tests.evals.test_evidence import REPORT_JSON, World, build_world


@dataclass
class Cli:
    world: World
    runner: CliRunner
    outputs: list[str]

    def __call__(self, *args: str, token: str | None = None, data_dir: bool = True) -> Result:
        env = {
            "LOCKGATE_DATA_DIR": str(self.world.instance.data) if data_dir else None,
            "LOCKGATE_TOKEN": token,
        }
        result = self.runner.invoke(evidence, list(args), env=env)
        self.outputs.append(result.output)
        return result

    def ok(self, *args: str, token: str | None = None) -> Result:
        result = self(*args, token=token)
        assert result.exit_code == 0, result.output
        return result


@dataclass
class Tokens:
    viewer: str
    outsider: str
    admin: str


@pytest.fixture
def world(instance: Instance, admin: Actor) -> World:
    return build_world(instance, admin)


@pytest.fixture
def tokens(world: World, admin_token: str) -> Tokens:
    users = world.instance.users
    users.create(world.admin, "vic", {"default": [Role.VIEWER]})
    users.create(world.admin, "otto", {})  # a user, but no role in any tenant
    return Tokens(
        users.issue_token(world.admin, "vic").secret,
        users.issue_token(world.admin, "otto").secret,
        admin_token,
    )


@pytest.fixture
def run(world: World, tokens: Tokens) -> Iterator[Cli]:
    """The CLI; afterwards, neither a control token nor the signing key appears in anything it printed."""
    cli = Cli(world, CliRunner(), [])
    yield cli
    signing_key = (world.instance.data / "signing-key").read_text().strip()
    secrets = [tokens.viewer, tokens.outsider, tokens.admin, signing_key]
    secrets += [token.split("-", 2)[2] for token in (tokens.viewer, tokens.outsider, tokens.admin)]
    assert cli.outputs
    leaks = [secret for output in cli.outputs for secret in secrets if secret in output]
    assert leaks == []


@pytest.fixture
def recorded(world: World) -> list[StoredEvidence]:
    service = world.service
    return [
        service.record(world.admin, "default", world.draft()),
        service.record(
            world.admin, "default", world.draft(environment="stage", decision="allow", reasons=[])
        ),
    ]


def test_list(run: Cli, tokens: Tokens, recorded: list[StoredEvidence]) -> None:
    table = run.ok("list", token=tokens.viewer).stdout.splitlines()
    assert table[0].split() == ["ID", "DECIDED", "(UTC)", "ROUTE", "ENV", "DECISION", "BY", "RELEASE"]
    rows = [line.split() for line in table[1:]]
    assert [(r[0], r[4], r[5], r[6]) for r in rows] == [
        (recorded[0].id, "prod", "deny", "dan"),
        (recorded[1].id, "stage", "allow", "dan"),
    ]
    listed = json.loads(run.ok("list", "--json", token=tokens.viewer).stdout)
    assert [(e["id"], e["decision"], e["audit_seq"]) for e in listed] == [
        (e.id, e.decision, e.audit_seq) for e in recorded
    ]
    release = recorded[0].release_id
    assert len(json.loads(run.ok("list", "--release", release, "--json", token=tokens.viewer).stdout)) == 2
    assert json.loads(run.ok("list", "--release", "rel_other", "--json", token=tokens.viewer).stdout) == []
    assert json.loads(run.ok("list", "--route", "other", "--json", token=tokens.viewer).stdout) == []


def test_show(run: Cli, tokens: Tokens, world: World, recorded: list[StoredEvidence]) -> None:
    denied = recorded[0]
    lines = run.ok("show", denied.id, token=tokens.viewer).stdout.splitlines()
    assert "decision   deny: support-answer -> prod" in lines
    assert f"release    {world.release.id}" in lines
    assert "commit     4f2a9c1" in lines
    assert "reasons    - pass rate 0.875 is below the baseline's 0.9" in lines
    assert "warnings   - judge agreement not measured" in lines
    assert f"datasets   - support-golden@3 sha256:{world.dataset.sha256}" in lines
    first, second, baseline = world.reports
    start = lines.index(f"reports    - candidate {first.run_id} json sha256:{first.sha256}")
    assert lines[start + 1 : start + 3] == [
        f"           - candidate {second.run_id} md sha256:{second.sha256}",
        f"           - baseline {baseline.run_id} json sha256:{baseline.sha256}",
    ]
    assert f"policy     sha256:{denied.record['policy']['sha256']} (rego, 2 module(s))" in lines
    assert "approvers  april" in lines
    assert f"requested  by dan at {denied.record['requested_at']}" in lines
    assert f"audit seq  {denied.audit_seq}" in lines

    allowed = run.ok("show", recorded[1].id, token=tokens.viewer).stdout.splitlines()
    assert "reasons    -" in allowed

    as_json = json.loads(run.ok("show", denied.id, "--json", token=tokens.viewer).stdout)
    assert as_json["record"] == denied.record
    assert (as_json["sha256"], as_json["audit_seq"]) == (denied.sha256, denied.audit_seq)


def test_verify_against_the_database(
    run: Cli, tokens: Tokens, world: World, recorded: list[StoredEvidence]
) -> None:
    lines = run.ok("verify", recorded[0].id, token=tokens.viewer).stdout.splitlines()
    assert lines[-1] == "ok: every check passed"
    checks = [line for line in lines if line[:2] in ("✓ ", "✗ ")]
    assert len(checks) == 11
    assert all(line.startswith("✓ ") for line in checks)

    world.sql(eval_reports.update().where(eval_reports.c.format == "json").values(content="{}"))
    result = run("verify", recorded[0].id, token=tokens.viewer)
    assert result.exit_code == 1
    assert any(line.startswith("✗ reports: report ") for line in result.stdout.splitlines())
    assert result.stdout.splitlines()[-1] == "FAILED: reports"


def test_export_and_verify_the_bundle_offline(
    run: Cli, tokens: Tokens, world: World, recorded: list[StoredEvidence], tmp_path: Path
) -> None:
    path = tmp_path / "evidence.json"
    assert run.ok("export", recorded[0].id, "-o", str(path), token=tokens.viewer).stdout.startswith(
        f"wrote {path} ("
    )
    assert any(report["content"] == REPORT_JSON for report in json.loads(path.read_bytes())["reports"])

    offline = run("verify", "--bundle", str(path), data_dir=False)
    assert offline.exit_code == 0, offline.output
    fingerprint = hashlib.sha256(base64.b64decode(world.public_key)).hexdigest()[:16]
    assert f"signing key fingerprint: {fingerprint}" in offline.stdout

    trusted = run("verify", "--bundle", str(path), "--public-key", world.public_key, data_dir=False)
    assert trusted.exit_code == 0
    assert any(line.startswith("✓ trusted key") for line in trusted.stdout.splitlines())

    other = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    wrong = run("verify", "--bundle", str(path), "--public-key", base64.b64encode(other).decode())
    assert wrong.exit_code == 1
    assert wrong.stdout.splitlines()[-1] == "FAILED: trusted key"

    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert run("verify", "--bundle", str(path), data_dir=False).exit_code == 1


def test_verify_takes_an_id_or_a_bundle(
    run: Cli, tokens: Tokens, recorded: list[StoredEvidence], tmp_path: Path
) -> None:
    path = tmp_path / "b.json"
    path.write_bytes(b"{}")
    assert run("verify", token=tokens.viewer).exit_code == 2
    assert run("verify", recorded[0].id, "--bundle", str(path), token=tokens.viewer).exit_code == 2
    assert run("verify", recorded[0].id, "--public-key", "AAAA", token=tokens.viewer).exit_code == 2
    not_a_bundle = run("verify", "--bundle", str(path))
    assert not_a_bundle.exit_code == 1
    assert "✗ format: " in not_a_bundle.stdout


def test_reading_needs_a_viewer_of_the_tenant(
    run: Cli, tokens: Tokens, recorded: list[StoredEvidence]
) -> None:
    for args in (
        ["list"],
        ["show", recorded[0].id],
        ["verify", recorded[0].id],
        ["export", recorded[0].id, "-o", "x"],
    ):
        refused = run(*args, token=tokens.outsider)
        assert refused.exit_code == 1
        assert "otto lacks the viewer role in tenant 'default' needed to evidence.read" in refused.output
        missing = run(*args)
        assert missing.exit_code == 1
        assert "missing control token" in missing.output


def test_unknown_evidence_is_an_error(run: Cli, tokens: Tokens) -> None:
    result = run("show", "evd_000000000000000000000000", token=tokens.admin)
    assert result.exit_code == 1
    assert "unknown evidence 'evd_000000000000000000000000'" in result.output
