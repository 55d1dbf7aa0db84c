"""``lockgate config``: check a configuration file without starting anything."""

from __future__ import annotations

import click

from lockgate.cli.common import fail_with_problems
from lockgate.config.loader import ConfigError, load_file


@click.group()
def config() -> None:
    """Work with lockgate.yaml."""


@config.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def check(file: str) -> None:
    """Validate FILE; print each problem as file:line: field: message and exit 1 if there are any."""
    try:
        loaded = load_file(file)
    except ConfigError as exc:
        fail_with_problems(exc)
    gateway = loaded.gateway
    click.echo(
        f"{file}: ok ({len(loaded.providers)} providers, {len(gateway.models)} models, "
        f"{sum(len(m.deployments) for m in gateway.models)} deployments, {len(gateway.tenants)} tenants)"
    )
