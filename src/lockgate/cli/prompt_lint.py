"""Local checks of a prompt file for ``lockgate prompts lint`` (the server runs the same on push)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from lockgate.control.prompt_spec import PromptSpec, lint


def check(raw: dict[str, Any] | None) -> list[str]:
    """Problems of one prompt file's content: schema errors, then lint rules."""
    if raw is None:
        return []
    try:
        spec = PromptSpec.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        return problems
    return lint(spec)
