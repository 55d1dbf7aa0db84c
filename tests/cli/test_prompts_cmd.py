"""``lockgate prompts`` against prompt files on disk and a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from lockgate.cli.prompts import prompts
from lockgate.control.prompts import PromptSpec, content_hash
from lockgate.instance import Instance
from lockgate.security.rbac import Role
from lockgate.security.users import UserService
from tests.control.test_semver import BASE


@dataclass
class Tokens:
    editor: str
    viewer: str


class Cli:
    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.runner = CliRunner()

    def __call__(self, *args: str, token: str | None = None) -> Result:
        env = {"LOCKGATE_DATA_DIR": str(self.instance.data), "LOCKGATE_TOKEN": token}
        return self.runner.invoke(prompts, list(args), env=env)

    def ok(self, *args: str, token: str | None = None) -> Result:
        result = self(*args, token=token)
        assert result.exit_code == 0, result.output
        return result


@pytest.fixture
def run(instance: Instance) -> Cli:
    return Cli(instance)


@pytest.fixture
def tokens(instance: Instance) -> Tokens:
    instance.tenants.create("default")
    users: UserService = instance.users
    users.create(None, "root", {"default": [Role.ADMIN]})
    admin = users.authenticate(users.issue_token(None, "root").secret)
    users.create(admin, "erin", {"default": [Role.EDITOR]})
    users.create(admin, "vic", {"default": [Role.VIEWER]})
    return Tokens(users.issue_token(admin, "erin").secret, users.issue_token(admin, "vic").secret)


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


def test_lint_passes_good_files(run: Cli, tmp_path: Path) -> None:
    result = run.ok("lint", str(history(tmp_path / "prompts")))
    assert result.stdout == "3 prompt file(s), no problems\n"


def test_lint_reports_each_problem_as_file_colon_problem(run: Cli, tmp_path: Path) -> None:
    root = tmp_path / "prompts"
    good = write(root, "1.2.0")
    undeclared = write(root, "1.3.0", messages=[{"role": "user", "content": "{{ question }} {{ customer }}"}])
    bad_version = root / "support-answer" / "draft.yaml"
    bad_version.write_text(yaml.safe_dump(copy.deepcopy(BASE) | {"version": "1.4"}))
    misnamed = root / "support-answer" / "2.0.0.yaml"
    misnamed.write_text(yaml.safe_dump(copy.deepcopy(BASE) | {"version": "1.5.0"}))

    result = run("lint", str(root))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert (
        f"{undeclared}: template uses variable 'customer', which is not declared in variables.properties"
        in lines
    )
    assert f"{undeclared}: required variable 'product' is not used by any message" in lines
    assert any(line.startswith(f"{bad_version}: version: String should match pattern") for line in lines)
    assert f"{misnamed}: file is named 2.0.0.yaml but declares version 1.5.0" in lines
    assert not any(line.startswith(f"{good}:") for line in lines)


def test_push_a_directory_in_version_order(run: Cli, tokens: Tokens, tmp_path: Path) -> None:
    root = history(tmp_path / "prompts")
    result = run.ok("push", str(root), token=tokens.editor)
    outcomes = [line.split(" (")[0] for line in result.stdout.splitlines()]
    assert outcomes == [
        "pushed support-answer@1.2.0",
        "pushed support-answer@1.9.0",
        "pushed support-answer@1.10.0",
    ]
    listed = json.loads(run.ok("list", "--json").stdout)
    assert [(p["name"], p["version"]) for p in listed] == [("support-answer", "1.10.0")]


def test_pushing_the_same_files_again_changes_nothing(run: Cli, tokens: Tokens, tmp_path: Path) -> None:
    root = history(tmp_path / "prompts")
    run.ok("push", str(root), token=tokens.editor)
    before = json.loads(run.ok("show", "support-answer", "--json").stdout)
    again = run.ok("push", str(root), token=tokens.editor)
    assert [line.split(" (")[0] for line in again.stdout.splitlines()] == [
        "unchanged support-answer@1.2.0",
        "unchanged support-answer@1.9.0",
        "unchanged support-answer@1.10.0",
    ]
    assert json.loads(run.ok("show", "support-answer", "--json").stdout) == before


def test_an_under_declared_bump_is_refused_and_later_versions_skipped(
    run: Cli, tokens: Tokens, tmp_path: Path
) -> None:
    root = tmp_path / "prompts"
    write(root, "1.2.0")
    removed = copy.deepcopy(BASE["variables"])
    del removed["properties"]["question"]
    removed["required"] = ["product"]
    messages = [{"role": "system", "content": "Support for {{ product }}."}]
    write(root, "1.3.0", variables=removed, messages=messages)
    write(root, "1.4.0", variables=removed, messages=messages, description="Later.")

    result = run("push", str(root), token=tokens.editor)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("pushed support-answer@1.2.0")
    assert lines[1] == (
        "refused support-answer@1.3.0: version 1.3.0 declares a MINOR bump but the change from 1.2.0 "
        "needs MAJOR: variable 'question' removed"
    )
    assert lines[2] == "skipped support-answer@1.4.0: an earlier version of support-answer was refused"
    assert json.loads(run.ok("show", "support-answer", "--json").stdout)["version"] == "1.2.0"


def test_push_needs_a_token(run: Cli, tokens: Tokens, tmp_path: Path) -> None:
    result = run("push", str(write(tmp_path, "1.2.0")))
    assert result.exit_code == 1
    assert "missing control token" in result.stderr
    assert json.loads(run.ok("list", "--json").stdout) == []


def test_a_viewer_token_cannot_push(run: Cli, tokens: Tokens, tmp_path: Path) -> None:
    result = run("push", str(write(tmp_path, "1.2.0")), token=tokens.viewer)
    assert result.exit_code == 1
    assert "refused support-answer@1.2.0: vic lacks the editor role in tenant 'default'" in result.stdout
    assert json.loads(run.ok("list", "--json").stdout) == []


def test_push_with_lint_problems_pushes_nothing(run: Cli, tokens: Tokens, tmp_path: Path) -> None:
    root = tmp_path / "prompts"
    write(root, "1.2.0")
    write(
        root, "1.3.0", messages=[{"role": "user", "content": "{{ question }} {{ product }} {{ customer }}"}]
    )
    result = run("push", str(root), token=tokens.editor)
    assert result.exit_code == 1
    assert "template uses variable 'customer'" in result.stdout
    assert "nothing pushed" in result.stderr
    assert json.loads(run.ok("list", "--json").stdout) == []


def test_show_prints_a_file_that_round_trips(run: Cli, tokens: Tokens, tmp_path: Path) -> None:
    run.ok("push", str(history(tmp_path / "prompts")), token=tokens.editor)
    text = run.ok("show", "support-answer", "--version", "1.9.0").stdout
    header, pushed_by = text.splitlines()[:2]
    spec = PromptSpec.model_validate(yaml.safe_load(text))
    assert header == f"# support-answer@1.9.0 sha256:{content_hash(spec)}"
    assert pushed_by.startswith("# pushed by erin at ")
    assert spec.settings.temperature == 0.3

    as_json = json.loads(run.ok("show", "support-answer", "--json").stdout)
    assert (as_json["version"], as_json["created_by"]) == ("1.10.0", "erin")
    assert as_json["spec"]["messages"][1]["content"] == "{{ question }}"


def test_show_unknown_prompt_is_an_error(run: Cli, tokens: Tokens) -> None:
    result = run("show", "nope")
    assert result.exit_code == 1
    assert "no prompt nope in tenant 'default'" in result.stderr


def test_diff_shows_the_changed_line(run: Cli, tokens: Tokens, tmp_path: Path) -> None:
    root = tmp_path / "prompts"
    write(root, "1.2.0")
    write(root, "1.2.1", messages__1__content="Customer asks: {{ question }}")
    run.ok("push", str(root), token=tokens.editor)
    lines = run.ok("diff", "support-answer", "1.2.0", "1.2.1").stdout.splitlines()
    assert "-{{ question }}" in lines
    assert "+Customer asks: {{ question }}" in lines
    assert "1.2.0 -> 1.2.1 needs a PATCH bump:" in lines


def test_list_shows_the_latest_version_of_each_prompt(run: Cli, tokens: Tokens, tmp_path: Path) -> None:
    root = history(tmp_path / "prompts")
    other = write(tmp_path / "more", "0.1.0", name="faq-answer")
    run.ok("push", str(root), str(other.parent.parent), token=tokens.editor)

    table = run.ok("list").stdout.splitlines()
    assert table[0].split() == ["NAME", "VERSION", "SHA256", "PUSHED", "BY", "PUSHED"]
    assert [line.split()[:2] for line in table[1:]] == [["faq-answer", "0.1.0"], ["support-answer", "1.10.0"]]
    listed = json.loads(run.ok("list", "--json").stdout)
    assert [(p["name"], p["version"], p["created_by"]) for p in listed] == [
        ("faq-answer", "0.1.0", "erin"),
        ("support-answer", "1.10.0", "erin"),
    ]
    assert all(len(p["content_hash"]) == 64 for p in listed)
