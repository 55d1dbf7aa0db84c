"""Who runs a control-plane command: the user behind ``--token`` / ``LOCKGATE_TOKEN``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from lockgate.control.errors import ControlError
from lockgate.instance import Instance
from lockgate.security.rbac import Actor

F = TypeVar("F", bound=Callable[..., Any])


def token_option(func: F) -> F:
    return click.option(
        "--token",
        envvar="LOCKGATE_TOKEN",
        default=None,
        help="Control token of the user acting (default: $LOCKGATE_TOKEN).",
    )(func)


def actor_for(instance: Instance, token: str | None) -> Actor:
    return instance.users.authenticate(token, source="cli")


def control_errors(func: F) -> F:
    """Turn control-plane errors into a one-line message and exit code 1, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ControlError as exc:
            raise click.ClickException(exc.message) from None

    return wrapper  # type: ignore[return-value]
