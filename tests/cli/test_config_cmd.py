"""``lockgate config check FILE``: a summary and exit 0 on a good file, one line per problem and exit 1.

A local check: it runs with no server, no token and no data directory.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.cli import Cli

GOOD = """\
providers:
  up:
    kind: openai
    base_url: http://upstream.test/v1
  other:
    kind: openai
    base_url: http://other.test/v1
models:
  - name: a
    deployments:
      - provider: up
        model: x
      - provider: other
        model: x
  - name: b
    deployments: [{provider: up, model: y}]
tenants:
  - name: acme
"""

BAD = """\
providers:
  up:
    kind: openai
    base_url: http://upstream.test/v1
models:
  - name: a
    deployments:
      - provider: up
        model: x
        colour: red
routing:
  retries: -1
"""


@pytest.fixture
def offline(tmp_path: Path) -> Cli:
    return Cli("", None, tmp_path)


def test_good_file_prints_a_summary(offline: Cli, tmp_path: Path) -> None:
    path = tmp_path / "lockgate.yaml"
    path.write_text(GOOD)
    result = offline("config", "check", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{path}: ok (2 providers, 2 models, 3 deployments, 1 tenants)"
    assert result.stderr == ""


def test_bad_file_prints_each_problem_and_exits_1(offline: Cli, tmp_path: Path) -> None:
    path = tmp_path / "lockgate.yaml"
    path.write_text(BAD)
    result = offline("config", "check", str(path))
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert all(re.fullmatch(rf"{re.escape(str(path))}:\d+: [\w.\[\]]+: .+", line) for line in lines), lines
    assert sorted(lines) == [
        f"{path}:10: models[0].deployments[0].colour: unknown field",
        f"{path}:12: routing.retries: must be >= 0",
    ]
    assert "ok (" not in result.output


def test_provider_problems_are_listed_too(offline: Cli, tmp_path: Path) -> None:
    path = tmp_path / "lockgate.yaml"
    path.write_text(GOOD.replace("  other:\n", "  other:\n    colour: red\n"))
    result = offline("config", "check", str(path))
    assert result.exit_code == 1
    assert result.stderr.strip() == f"{path}:6: providers.other.colour: unknown field"


def test_invalid_yaml_exits_1_with_line(offline: Cli, tmp_path: Path) -> None:
    path = tmp_path / "lockgate.yaml"
    path.write_text("routing:\n  retries: 1\n  cooldown: 2: 3\n")
    result = offline("config", "check", str(path))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{path}:3: (top level): invalid YAML")
    assert "Traceback" not in result.output


def test_missing_file_exits_1(offline: Cli, tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    result = offline("config", "check", str(path))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{path}: ")
    assert "cannot read" in result.stderr
