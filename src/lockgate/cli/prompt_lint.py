"""Local checks of a prompt file for ``lockgate prompts lint`` (the server runs the same on push)."""

from __future__ import annotations

from typing import Any

from lockgate.control.prompt_spec import lint, parse_prompt


def check(raw: dict[str, Any] | None) -> list[str]:
    """Problems of one prompt file's content: schema errors, then lint rules."""
    if raw is None:
        return []
    spec, problems = parse_prompt(raw)
    return problems if spec is None else lint(spec)
