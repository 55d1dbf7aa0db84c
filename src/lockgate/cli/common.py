"""Shared CLI options and helpers."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar

import click
import orjson

from lockgate.config.loader import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

_DURATION = re.compile(r"^(?P<n>\d+)(?P<unit>[smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def data_dir_option(func: F) -> F:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False),
        envvar="LOCKGATE_DATA_DIR",
        default=None,
        help="Where the SQLite store and key pepper live (default ./.lockgate).",
    )(func)


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if match is None:
        raise click.BadParameter("use a number and a unit: 90s, 15m, 12h, 30d, 2w")
    return timedelta(**{_UNITS[match["unit"]]: int(match["n"])})


def expiry(expires_in: str | None) -> datetime | None:
    return datetime.now(UTC) + parse_duration(expires_in) if expires_in else None


def emit_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value is not None else "-"


def fail_with_problems(error: ConfigError) -> NoReturn:
    """Print each configuration problem as file:line: field: message, then exit 1."""
    for problem in error.problems:
        click.echo(str(problem), err=True)
    raise SystemExit(1)
