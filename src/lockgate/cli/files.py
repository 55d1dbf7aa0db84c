"""Reading the YAML files a user keeps in git (model cards, gates, release specs, rollout strategies) and
the Rego files they name, for the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lockgate.cli.options import fail
from lockgate.documents import read_yaml_mapping
from lockgate.service_errors import Invalid


def read_yaml(path: Path, what: str) -> dict[str, Any]:
    """A YAML mapping; any problem names the file (and line), and the command exits 1."""
    try:
        return read_yaml_mapping(path, what)
    except Invalid as exc:
        fail(exc.message)


def read_policy_files(base: Path, paths: object, where: str) -> dict[str, str]:
    """The ``policies:`` entry of a gate or strategy file: Rego files relative to ``base``, as
    ``{file name: source}``; a bad entry or an unreadable file names ``where`` and exits 1."""
    if paths is None:
        return {}
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        fail(f"{where}: policies: a list of .rego files, relative to this file")
    modules: dict[str, str] = {}
    for name in paths:
        path = (base / name).resolve()
        try:
            modules[path.name] = path.read_text(encoding="utf-8")
        except OSError as exc:
            fail(f"{where}: policies: cannot read {name}: {exc.strerror}")
    return modules
