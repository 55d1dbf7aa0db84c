"""Reading the YAML files a user keeps in git (model cards, gates, release specs), for the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lockgate.cli.options import fail


def read_yaml(path: Path, what: str) -> dict[str, Any]:
    """A YAML mapping; a syntax error names the file and line, and the command exits 1."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        fail(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}")
    if not isinstance(raw, dict):
        fail(f"{path}: {what}")
    return raw
