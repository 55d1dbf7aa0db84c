"""``lockgate config``: check a configuration file without starting anything (no server needed)."""

from __future__ import annotations

import click


@click.group()
def config() -> None:
    """Work with lockgate.yaml."""


@config.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def check(file: str) -> None:
    """Validate FILE; print each problem as file:line: field: message and exit 1 if there are any."""
    from lockgate.config.loader import ConfigError, load_file

    try:
        loaded = load_file(file)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        raise SystemExit(1) from None
    gateway = loaded.gateway
    click.echo(
        f"{file}: ok ({len(loaded.providers)} providers, {len(gateway.models)} models, "
        f"{sum(len(m.deployments) for m in gateway.models)} deployments, {len(gateway.tenants)} tenants)"
    )
