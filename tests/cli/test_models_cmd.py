"""``lockgate models`` as a client of a running server (SQLite and PostgreSQL), acting with control tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from lockgate.security.rbac import Actor, Role
from lockgate.services import Services
from tests.support.cli import Cli
from tests.support.people import token_of


@pytest.fixture
def eddie(cli: Cli, services: Services, admin: Actor) -> Cli:
    """An editor of tenant ``default``; ``cli`` itself acts as the admin."""
    return cli.as_(token_of(services, admin, "eddie", Role.EDITOR))


def write_card(directory: Path, version: str, **extra: Any) -> str:
    path = directory / f"support-llm-{version}.yaml"
    card = {
        "name": "support-llm",
        "version": version,
        "gateway_model": "m",
        "provider": "anthropic",
        "license": "proprietary",
        "intended_use": "answering support tickets",
        "out_of_scope_uses": ["medical advice", "legal advice"],
        "owner_team": "support-platform",
        **extra,
    }
    path.write_text(yaml.safe_dump(card))
    return str(path)


def versions(cli: Cli) -> dict[str, str]:
    return {m["version"]: m["status"] for m in cli.json("models", "list")}


def test_register_show_list_alias_retire_round_trip(cli: Cli, eddie: Cli, tmp_path: Path) -> None:
    registered = eddie.ok("models", "register", write_card(tmp_path, "2025-06-01"))
    assert registered.stdout == "registered support-llm:2025-06-01 in tenant default (active)\n"
    eddie.ok(
        "models", "register", write_card(tmp_path, "2025-07-01", gateway_model="other"), "--tenant", "default"
    )

    moved = eddie.ok("models", "alias", "support-llm", "champion", "2025-06-01")
    assert moved.stdout == "support-llm@champion -> support-llm:2025-06-01\n"

    shown = cli.ok("models", "show", "support-llm@champion").stdout
    assert "model:               support-llm:2025-06-01\n" in shown
    assert "aliases:             champion\n" in shown
    assert "out_of_scope_uses:   medical advice, legal advice\n" in shown
    assert "by eddie" in shown
    assert cli.json("models", "show", "support-llm")["version"] == "2025-07-01"

    listing = cli.ok("models", "list").stdout.splitlines()
    assert listing[0].split()[:4] == ["NAME", "VERSION", "STATUS", "GATEWAY"]
    assert [line.split()[:5] for line in listing[1:]] == [
        ["support-llm", "2025-06-01", "active", "m", "champion"],
        ["support-llm", "2025-07-01", "active", "other", "-"],
    ]

    refused = eddie.fails("models", "retire", "support-llm", "2025-06-01")
    assert "eddie may not models.retire in tenant 'default': it needs admin" in refused.stderr
    assert "Traceback" not in refused.output
    assert versions(cli)["2025-06-01"] == "active"

    retired = cli.ok("models", "retire", "support-llm", "2025-06-01")
    assert retired.stdout == "support-llm:2025-06-01 is now retired in tenant default\n"
    after = cli.ok("models", "show", "support-llm@champion", "--json")
    assert orjson.loads(after.stdout)["status"] == "retired"
    assert "warning: support-llm:2025-06-01 is retired" in after.stderr
    assert versions(cli) == {"2025-06-01": "retired", "2025-07-01": "active"}


def test_deprecate_and_activate(cli: Cli, eddie: Cli, tmp_path: Path) -> None:
    eddie.ok("models", "register", write_card(tmp_path, "1"))
    assert eddie.ok("models", "deprecate", "support-llm", "1").stdout == (
        "support-llm:1 is now deprecated in tenant default\n"
    )
    assert cli.json("models", "show", "support-llm:1")["status"] == "deprecated"
    eddie.ok("models", "activate", "support-llm", "1")
    assert cli.json("models", "show", "support-llm:1")["status"] == "active"


def test_registering_needs_an_editor(cli: Cli, services: Services, admin: Actor, tmp_path: Path) -> None:
    card = write_card(tmp_path, "1")
    missing = cli.as_(None).fails("models", "register", card)
    assert "missing control token" in missing.stderr
    wrong = cli.fails("models", "register", card, "--token", "lgc-00000000-nope")
    assert "invalid control token" in wrong.stderr
    viewer = cli.as_(token_of(services, admin, "vic", Role.VIEWER)).fails("models", "register", card)
    assert "vic may not models.register in tenant 'default': it needs editor" in viewer.stderr
    assert cli.json("models", "list") == []


def test_bad_cards_are_refused_with_the_reason(cli: Cli, eddie: Cli, tmp_path: Path) -> None:
    lora = {"base_model": "llama-3-8b", "method": "lora", "alpha": 32}
    result = eddie.fails("models", "register", write_card(tmp_path, "1", training=lora))
    assert "training: a lora fine-tune needs both rank and alpha" in result.stderr

    weights = tmp_path / "w.gguf"
    weights.write_bytes(b"weights")
    artifact = {"artifact_uri": weights.as_uri(), "sha256": "f" * 64}
    result = eddie.fails("models", "register", write_card(tmp_path, "2", **artifact))
    assert "the card says ffff" in result.stderr

    unserved = eddie.fails("models", "register", write_card(tmp_path, "3", gateway_model="gpt-9"))
    assert "gpt-9" in unserved.stderr
    assert "m, other" in unserved.stderr

    broken = tmp_path / "broken.yaml"
    broken.write_text("name: support-llm\nversion: [unclosed\n")
    result = eddie.fails("models", "register", str(broken))
    assert f"{broken}:3: not valid YAML" in result.stderr
    for refused in (result, unserved):
        assert "Traceback" not in refused.output
    assert cli.json("models", "list") == []


def test_duplicate_and_unknown_references_are_errors(cli: Cli, eddie: Cli, tmp_path: Path) -> None:
    card = write_card(tmp_path, "1")
    eddie.ok("models", "register", card)
    duplicate = eddie.fails("models", "register", card)
    assert "support-llm:1 already exists in tenant 'default'" in duplicate.stderr
    unknown = cli.fails("models", "show", "support-llm@champion")
    assert "no alias support-llm@champion" in unknown.stderr


def test_unquoted_yaml_versions_mean_what_they_say(cli: Cli, eddie: Cli, tmp_path: Path) -> None:
    common = "gateway_model: m\nlicense: mit\nintended_use: tests\nowner_team: qa\n"
    dated = tmp_path / "dated.yaml"
    dated.write_text(f"name: support-llm\nversion: 2025-06-01\n{common}")
    eddie.ok("models", "register", str(dated))
    assert cli.json("models", "show", "support-llm:2025-06-01")["card"]["version"] == "2025-06-01"

    decimal = tmp_path / "decimal.yaml"
    decimal.write_text(f"name: support-llm\nversion: 1.10\n{common}")
    refused = eddie.fails("models", "register", str(decimal))
    assert "version: quote it: 1.1 was read as a number" in refused.stderr
    assert list(versions(cli)) == ["2025-06-01"]
