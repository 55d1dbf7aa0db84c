"""Reading the YAML files a user keeps in git (model cards, gates, release specs), for the CLI."""

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
