"""Value types for configuration fields that read the environment.

``EnvStr`` interpolates ``${VAR}`` and ``${VAR:-default}`` anywhere in a string (URLs, paths).
``EnvSecret`` must be written as exactly one ``${VAR}`` reference: literal credentials in a file that
is committed to git are refused, and the resolved value is a ``SecretStr`` that never prints.
"""

from __future__ import annotations

import os
import re
from typing import Annotated

from pydantic import BeforeValidator, SecretStr

_REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
_WHOLE_REFERENCE = re.compile(r"^\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}$")


def interpolate(text: str) -> str:
    def substitute(match: re.Match[str]) -> str:
        name, default = match.group("name"), match.group("default")
        value = os.environ.get(name)
        if value is None:
            if default is None:
                raise ValueError(f"environment variable {name} is not set")
            return default
        return value

    return _REFERENCE.sub(substitute, text)


def _interpolate_any(value: object) -> object:
    return interpolate(value) if isinstance(value, str) else value


def _resolve_secret(value: object) -> SecretStr:
    if not isinstance(value, str):
        raise ValueError("must be an ${ENV_VAR} reference")
    match = _WHOLE_REFERENCE.match(value.strip())
    if match is None:
        # Never echo the value: it may be a pasted credential.
        raise ValueError("must be an ${ENV_VAR} reference; literal credentials are not accepted")
    name = match.group("name")
    resolved = os.environ.get(name)
    if resolved is None:
        raise ValueError(f"environment variable {name} is not set")
    return SecretStr(resolved)


def _secret_text(value: object) -> SecretStr:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return SecretStr(interpolate(value))


EnvStr = Annotated[str, BeforeValidator(_interpolate_any)]
# Free text that may hold a credential once interpolated (e.g. an ``api-key`` header): never printed.
EnvSecretText = Annotated[SecretStr, BeforeValidator(_secret_text)]
EnvSecret = Annotated[SecretStr, BeforeValidator(_resolve_secret)]
