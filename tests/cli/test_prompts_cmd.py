"""``lockgate prompts``: prompt files on disk, linted locally and pushed to a running server (SQLite and
PostgreSQL)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from lockgate.control.prompts import PromptSpec, content_hash
from lockgate.security.rbac import Actor, Role
from lockgate.services import Services
from tests.control.test_semver import BASE
from tests.support.cli import Cli
from tests.support.people import token_of


@pytest.fixture
def offline(tmp_path: Path) -> Cli:
    """The CLI with no server to talk to and no token: what a local check must be content with."""
    return Cli("http://127.0.0.1:1", None, tmp_path)


@pytest.fixture
def erin(cli: Cli, services: Services, admin: Actor) -> Cli:
    return cli.as_(token_of(services, admin, "erin", Role.EDITOR))


def write(root: Path, version: str, **changes: Any) -> Path:
    """Write ``prompts/<name>/<version>.yaml`` from the support-answer example with ``changes``."""
    data = copy.deepcopy(BASE) | {"version": version}
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        target = data
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        target[leaf] = value
    name: str = data["name"]
    path = root / name / f"{version}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def history(root: Path) -> Path:
    """1.2.0, then a MINOR 1.9.0 and a MINOR 1.10.0: text order differs from version order."""
    write(root, "1.2.0")
    write(root, "1.9.0", settings={"model": "support-llm@champion", "temperature": 0.3})
    write(root, "1.10.0", settings={"model": "support-llm@champion", "temperature": 0.4})
    return root


def latest(cli: Cli) -> list[tuple[str, str]]:
    return [(p["name"], p["version"]) for p in cli.json("prompts", "list")]


def test_lint_passes_good_files_without_a_server(offline: Cli, tmp_path: Path) -> None:
    result = offline.ok("prompts", "lint", str(history(tmp_path / "prompts")))
    assert result.stdout == "3 prompt file(s), no problems\n"


def test_lint_reports_each_problem_as_file_colon_problem(offline: Cli, tmp_path: Path) -> None:
    root = tmp_path / "prompts"
    good = write(root, "1.2.0")
    undeclared = write(root, "1.3.0", messages=[{"role": "user", "content": "{{ question }} {{ customer }}"}])
    bad_version = root / "support-answer" / "draft.yaml"
    bad_version.write_text(yaml.safe_dump(copy.deepcopy(BASE) | {"version": "1.4"}))
    misnamed = root / "support-answer" / "2.0.0.yaml"
    misnamed.write_text(yaml.safe_dump(copy.deepcopy(BASE) | {"version": "1.5.0"}))
    unreadable = root / "support-answer" / "broken.yaml"
    unreadable.write_text("name: [unclosed\n")

    result = offline.fails("prompts", "lint", str(root))
    lines = result.stdout.splitlines()
    assert (
        f"{undeclared}: template uses variable 'customer', which is not declared in variables.properties"
        in lines
    )
    assert f"{undeclared}: required variable 'product' is not used by any message" in lines
    assert any(line.startswith(f"{bad_version}: version: String should match pattern") for line in lines)
    assert f"{misnamed}: file is named 2.0.0.yaml but declares version 1.5.0" in lines
    assert any(line.startswith(f"{unreadable}: cannot be read: ") for line in lines)
    assert not any(line.startswith(f"{good}:") for line in lines)
    assert "Traceback" not in result.output


def test_push_a_directory_in_version_order(cli: Cli, erin: Cli, tmp_path: Path) -> None:
    root = history(tmp_path / "prompts")
    result = erin.ok("prompts", "push", str(root))
    outcomes = [line.split(" (")[0] for line in result.stdout.splitlines()]
    assert outcomes == [
        "pushed support-answer@1.2.0",
        "pushed support-answer@1.9.0",
        "pushed support-answer@1.10.0",
    ]
    assert latest(cli) == [("support-answer", "1.10.0")]

    # The same files again change nothing.
    before = cli.json("prompts", "show", "support-answer")
    again = erin.ok("prompts", "push", str(root))
    assert [line.split(" (")[0] for line in again.stdout.splitlines()] == [
        "unchanged support-answer@1.2.0",
        "unchanged support-answer@1.9.0",
        "unchanged support-answer@1.10.0",
    ]
    assert cli.json("prompts", "show", "support-answer") == before


def test_an_under_declared_bump_is_refused_and_later_versions_skipped(
    cli: Cli, erin: Cli, tmp_path: Path
) -> None:
    root = tmp_path / "prompts"
    write(root, "1.2.0")
    removed = copy.deepcopy(BASE["variables"])
    del removed["properties"]["question"]
    removed["required"] = ["product"]
    messages = [{"role": "system", "content": "Support for {{ product }}."}]
    write(root, "1.3.0", variables=removed, messages=messages)
    write(root, "1.4.0", variables=removed, messages=messages, description="Later.")

    result = erin.fails("prompts", "push", str(root))
    lines = result.stdout.splitlines()
    assert lines[0].startswith("pushed support-answer@1.2.0")
    assert lines[1] == (
        "refused support-answer@1.3.0: version 1.3.0 declares a MINOR bump but the change from 1.2.0 "
        "needs MAJOR: variable 'question' removed"
    )
    assert lines[2] == "skipped support-answer@1.4.0: an earlier version of support-answer was refused"
    assert cli.json("prompts", "show", "support-answer")["version"] == "1.2.0"


def test_pushing_needs_an_editor_token(cli: Cli, services: Services, admin: Actor, tmp_path: Path) -> None:
    path = str(write(tmp_path, "1.2.0"))
    missing = cli.as_(None).fails("prompts", "push", path)
    assert "missing control token" in missing.stderr
    viewer = cli.as_(token_of(services, admin, "vic", Role.VIEWER)).fails("prompts", "push", path)
    assert "vic may not prompts.push in tenant 'default': it needs editor" in viewer.stderr
    assert "pushed" not in viewer.stdout
    assert "Traceback" not in missing.output + viewer.output
    assert latest(cli) == []


def test_push_with_lint_problems_pushes_nothing(cli: Cli, erin: Cli, tmp_path: Path) -> None:
    root = tmp_path / "prompts"
    write(root, "1.2.0")
    write(
        root, "1.3.0", messages=[{"role": "user", "content": "{{ question }} {{ product }} {{ customer }}"}]
    )
    result = erin.fails("prompts", "push", str(root))
    assert "template uses variable 'customer'" in result.stdout
    assert "nothing pushed" in result.stderr
    assert latest(cli) == []


def test_show_prints_a_file_that_round_trips(cli: Cli, erin: Cli, tmp_path: Path) -> None:
    erin.ok("prompts", "push", str(history(tmp_path / "prompts")))
    text = cli.ok("prompts", "show", "support-answer", "--version", "1.9.0").stdout
    header, pushed_by = text.splitlines()[:2]
    spec = PromptSpec.model_validate(yaml.safe_load(text))
    assert header == f"# support-answer@1.9.0 sha256:{content_hash(spec)}"
    assert pushed_by.startswith("# pushed by erin at ")
    assert spec.settings.temperature == 0.3

    as_json = cli.json("prompts", "show", "support-answer")
    assert (as_json["version"], as_json["created_by"]) == ("1.10.0", "erin")
    assert as_json["spec"]["messages"][1]["content"] == "{{ question }}"

    unknown = cli.fails("prompts", "show", "nope")
    assert "no prompt nope in tenant 'default'" in unknown.stderr


def test_diff_shows_the_changed_line(cli: Cli, erin: Cli, tmp_path: Path) -> None:
    root = tmp_path / "prompts"
    write(root, "1.2.0")
    write(root, "1.2.1", messages__1__content="Customer asks: {{ question }}")
    erin.ok("prompts", "push", str(root))
    lines = cli.ok("prompts", "diff", "support-answer", "1.2.0", "1.2.1").stdout.splitlines()
    assert "-{{ question }}" in lines
    assert "+Customer asks: {{ question }}" in lines
    assert "1.2.0 -> 1.2.1 needs a PATCH bump:" in lines


def test_list_shows_the_latest_version_of_each_prompt(cli: Cli, erin: Cli, tmp_path: Path) -> None:
    root = history(tmp_path / "prompts")
    other = write(tmp_path / "more", "0.1.0", name="faq-answer")
    erin.ok("prompts", "push", str(root), str(other.parent.parent))

    table = cli.ok("prompts", "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "VERSION", "SHA256", "PUSHED", "BY", "PUSHED"]
    assert [line.split()[:2] for line in table[1:]] == [["faq-answer", "0.1.0"], ["support-answer", "1.10.0"]]
    listed = orjson.loads(cli.ok("prompts", "list", "--json").stdout)
    assert [(p["name"], p["version"], p["created_by"]) for p in listed] == [
        ("faq-answer", "0.1.0", "erin"),
        ("support-answer", "1.10.0", "erin"),
    ]
    assert all(len(p["content_hash"]) == 64 for p in listed)
    assert listed[1]["tags"] == ["support"]
