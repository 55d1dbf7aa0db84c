"""Reading the deployment artifacts under deploy/ as their tools would."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
DIGEST = re.compile(r"^(?P<name>[a-z0-9./_-]+):(?P<tag>[\w.-]+)@sha256:(?P<digest>[0-9a-f]{64})$")
ENV_REFERENCE = re.compile(r"\$\{([A-Z][A-Z0-9_]*)")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_all_yaml(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def env_file(path: Path) -> dict[str, str]:
    """KEY=value lines, as docker compose and kustomize's secretGenerator read them."""
    pairs: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value
    return pairs


def git_ignores(path: Path) -> bool:
    """Whether git would leave ``path`` out of a commit (its .gitignore rules)."""
    git = shutil.which("git")
    assert git is not None
    result = subprocess.run(
        [git, "check-ignore", "--no-index", "-q", str(path.relative_to(ROOT))], cwd=ROOT, check=False
    )
    return result.returncode == 0


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def dockerfile(path: Path) -> list[Instruction]:
    """The instructions of a Dockerfile: continuation lines joined, comments and blank lines dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        keyword, _, arguments = whole.partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(arguments.split())))
    assert not pending, "a continuation line ends the file"
    return instructions
