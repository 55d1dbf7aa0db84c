"""``lockgate models`` against a real store (SQLite and PostgreSQL), acting with control tokens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from lockgate.cli.models import models
from lockgate.instance import Instance
from lockgate.security.rbac import Role


class Models:
    """``lockgate models ...`` as a given user; ``cli/main.py`` mounts the same group."""

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.runner = CliRunner()

    def __call__(self, *args: str, token: str | None = None) -> Result:
        env = {"LOCKGATE_TOKEN": token}
        return self.runner.invoke(models, [*args, "--data-dir", str(self.instance.data)], env=env)

    def ok(self, *args: str, token: str | None = None) -> Result:
        result = self(*args, token=token)
        assert result.exit_code == 0, result.output
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)


@pytest.fixture
def run(instance: Instance) -> Models:
    return Models(instance)


@pytest.fixture
def tokens(instance: Instance) -> dict[str, str]:
    if "default" not in {t.name for t in instance.tenants.list()}:
        instance.tenants.create("default")
    users = instance.users
    users.create(None, "root", {"default": [Role.ADMIN]})
    root = users.issue_token(None, "root").secret
    admin = users.authenticate(root)
    users.create(admin, "eddie", {"default": [Role.EDITOR]})
    return {"root": root, "eddie": users.issue_token(admin, "eddie").secret}


def write_card(directory: Path, version: str, **extra: Any) -> str:
    path = directory / f"support-llm-{version}.yaml"
    card = {
        "name": "support-llm",
        "version": version,
        "gateway_model": f"support-{version}",
        "provider": "anthropic",
        "license": "proprietary",
        "intended_use": "answering support tickets",
        "out_of_scope_uses": ["medical advice", "legal advice"],
        "owner_team": "support-platform",
        **extra,
    }
    path.write_text(yaml.safe_dump(card))
    return str(path)


def test_register_show_list_alias_retire_round_trip(
    run: Models, tokens: dict[str, str], tmp_path: Path
) -> None:
    eddie, root = tokens["eddie"], tokens["root"]
    registered = run.ok("register", write_card(tmp_path, "2025-06-01"), token=eddie)
    assert registered.stdout == "registered support-llm:2025-06-01 in tenant default (active)\n"
    run.ok("register", write_card(tmp_path, "2025-07-01"), "--tenant", "default", token=eddie)

    moved = run.ok("alias", "support-llm", "champion", "2025-06-01", token=eddie)
    assert moved.stdout == "support-llm@champion -> support-llm:2025-06-01\n"

    shown = run.ok("show", "support-llm@champion").stdout
    assert "model:               support-llm:2025-06-01\n" in shown
    assert "aliases:             champion\n" in shown
    assert "out_of_scope_uses:   medical advice, legal advice\n" in shown
    assert "by eddie" in shown
    assert run.json("show", "support-llm")["version"] == "2025-07-01"

    listing = run.ok("list").stdout.splitlines()
    assert listing[0].split()[:4] == ["NAME", "VERSION", "STATUS", "GATEWAY"]
    assert [line.split()[:5] for line in listing[1:]] == [
        ["support-llm", "2025-06-01", "active", "support-2025-06-01", "champion"],
        ["support-llm", "2025-07-01", "active", "support-2025-07-01", "-"],
    ]

    refused = run("retire", "support-llm", "2025-06-01", token=eddie)
    assert refused.exit_code == 1
    assert "eddie lacks the admin role" in refused.stderr
    assert "Traceback" not in refused.output

    retired = run.ok("retire", "support-llm", "2025-06-01", token=root)
    assert retired.stdout == "support-llm:2025-06-01 is now retired in tenant default\n"
    after = run("show", "support-llm@champion", "--json")
    assert after.exit_code == 0
    assert json.loads(after.stdout)["status"] == "retired"
    assert "warning: support-llm:2025-06-01 is retired" in after.stderr
    statuses = {m["version"]: m["status"] for m in run.json("list")}
    assert statuses == {"2025-06-01": "retired", "2025-07-01": "active"}


def test_deprecate_and_activate(run: Models, tokens: dict[str, str], tmp_path: Path) -> None:
    run.ok("register", write_card(tmp_path, "1"), token=tokens["eddie"])
    run.ok("deprecate", "support-llm", "1", token=tokens["eddie"])
    assert run.json("show", "support-llm:1")["status"] == "deprecated"
    run.ok("activate", "support-llm", "1", token=tokens["eddie"])
    assert run.json("show", "support-llm:1")["status"] == "active"


def test_mutations_need_a_valid_token(run: Models, tokens: dict[str, str], tmp_path: Path) -> None:
    card = write_card(tmp_path, "1")
    missing = run("register", card)
    assert missing.exit_code == 1
    assert "missing control token" in missing.stderr
    wrong = run("register", card, token="lgc-00000000-nope")
    assert wrong.exit_code == 1
    assert "invalid control token" in wrong.stderr
    assert run.json("list") == []


def test_bad_cards_are_refused_with_the_reason(run: Models, tokens: dict[str, str], tmp_path: Path) -> None:
    lora = {"base_model": "llama-3-8b", "method": "lora", "alpha": 32}
    result = run("register", write_card(tmp_path, "1", training=lora), token=tokens["eddie"])
    assert result.exit_code == 1
    assert "training: a lora fine-tune needs both rank and alpha" in result.stderr

    weights = tmp_path / "w.gguf"
    weights.write_bytes(b"weights")
    artifact = {"artifact_uri": weights.as_uri(), "sha256": "f" * 64}
    result = run("register", write_card(tmp_path, "2", **artifact), token=tokens["eddie"])
    assert result.exit_code == 1
    assert "the card says ffff" in result.stderr

    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    result = run("register", str(broken), token=tokens["eddie"])
    assert result.exit_code == 1
    assert "is not valid YAML" in result.stderr
    assert run.json("list") == []


def test_duplicate_and_unknown_references_are_errors(
    run: Models, tokens: dict[str, str], tmp_path: Path
) -> None:
    card = write_card(tmp_path, "1")
    run.ok("register", card, token=tokens["eddie"])
    duplicate = run("register", card, token=tokens["eddie"])
    assert duplicate.exit_code == 1
    assert "support-llm:1 already exists in tenant 'default'" in duplicate.stderr
    unknown = run("show", "support-llm@champion")
    assert unknown.exit_code == 1
    assert "no alias support-llm@champion" in unknown.stderr


def test_unquoted_yaml_versions_mean_what_they_say(
    run: Models, tokens: dict[str, str], tmp_path: Path
) -> None:
    common = "gateway_model: g\nlicense: mit\nintended_use: tests\nowner_team: qa\n"
    dated = tmp_path / "dated.yaml"
    dated.write_text(f"name: support-llm\nversion: 2025-06-01\n{common}")
    run.ok("register", str(dated), token=tokens["eddie"])
    assert run.json("show", "support-llm:2025-06-01")["card"]["version"] == "2025-06-01"

    decimal = tmp_path / "decimal.yaml"
    decimal.write_text(f"name: support-llm\nversion: 1.10\n{common}")
    refused = run("register", str(decimal), token=tokens["eddie"])
    assert refused.exit_code == 1
    assert "version: quote it: 1.1 was read as a number" in refused.stderr
    assert [m["version"] for m in run.json("list")] == ["2025-06-01"]
