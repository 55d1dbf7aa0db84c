"""Reading the YAML documents users keep in git: dataset, gate and release files, model cards.

A problem names the file and, for a syntax error, the line. Imports only PyYAML, so clients can use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lockgate.service_errors import Invalid


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """The mapping in ``path``; ``what`` says what the file should hold when it is not a mapping."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise Invalid(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise Invalid(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if not isinstance(raw, dict):
        raise Invalid(f"{path}: {what}")
    return raw
