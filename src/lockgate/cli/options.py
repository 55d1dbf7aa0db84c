"""Options and helpers every CLI command shares, defined once."""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, NoReturn, TypeVar

import click
import orjson

from lockgate.cli.client import Client, ClientError, resolve

F = TypeVar("F", bound=Callable[..., Any])

_DURATION = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<unit>[smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def connected(func: F) -> F:
    """Add ``--url``, ``--token`` and ``--profile`` and pass the command a ``client``; a refusal or an
    unreachable server becomes a one-line error and exit code 1, never a traceback."""

    @click.option("--url", envvar="LOCKGATE_URL", default=None, help="Server URL (default: $LOCKGATE_URL).")
    @click.option(
        "--token", envvar="LOCKGATE_TOKEN", default=None, help="Control token (default: $LOCKGATE_TOKEN)."
    )
    @click.option(
        "--profile", envvar="LOCKGATE_PROFILE", default=None, help="A profile saved by `lockgate login`."
    )
    @functools.wraps(func)
    def wrapper(*args: Any, url: str | None, token: str | None, profile: str | None, **kwargs: Any) -> Any:
        try:
            return func(*args, client=resolve(url, token, profile), **kwargs)
        except ClientError as exc:
            fail(exc.message)

    return wrapper  # type: ignore[return-value]


def tenant_option(func: F) -> F:
    return click.option(
        "--tenant", envvar="LOCKGATE_TENANT", default="default", show_default=True, help="Tenant to act in."
    )(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(func)


def fail(message: str) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


def seconds(text: str) -> float:
    """``90s``, ``15m``, ``12h``, ``30d``, ``2w`` in seconds."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise click.BadParameter("use a number and a unit: 90s, 15m, 12h, 30d, 2w")
    return float(match["n"]) * _SECONDS[match["unit"]]


def emit_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def when(value: str | None) -> str:
    """An ISO timestamp from the server as ``YYYY-MM-DD HH:MM:SSZ``."""
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%SZ")
    except ValueError:
        return value


def tenant_path(tenant: str, *parts: str) -> str:
    """``/tenants/<tenant>/<parts...>`` with every segment quoted."""
    from urllib.parse import quote

    return "/" + "/".join(quote(p, safe="") for p in ("tenants", tenant, *parts))


__all__ = [
    "Client",
    "connected",
    "emit_json",
    "fail",
    "json_option",
    "seconds",
    "tenant_option",
    "tenant_path",
    "when",
]
