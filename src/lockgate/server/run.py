"""``lockgate serve``, ``migrate`` and ``recover-admin``: the only commands that open the store.

``migrate`` creates the data directory's secrets on first install and brings the schema up to date.
``serve`` refuses a store at any other schema, syncs configured tenants, bootstraps on first start, and
runs the server (one process, or ``--workers N`` processes sharing the store). ``recover-admin`` is the
operator's break-glass on the server host: a short-lived token for a platform admin whose tokens are
all lost or expired.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import click
import uvicorn

from lockgate.config.loader import ConfigError, LoadedConfig
from lockgate.instance import load_config, migrate_instance, open_instance
from lockgate.security.rbac import Actor
from lockgate.server.app import build_app
from lockgate.server.asgi import CONFIG_ENV
from lockgate.server.bootstrap import bootstrap
from lockgate.service_errors import ControlError
from lockgate.services import build_services

OPERATOR = Actor(name="operator", source="server host", system=True)


def configuration(path: str | None) -> LoadedConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        raise SystemExit(1) from None


def migrate(data_dir: str | None) -> None:
    try:
        instance = migrate_instance(data_dir)
    except ControlError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"store {instance.safe_url} is at the current schema")
    click.echo(f"data directory {instance.data} (key pepper, signing key, audit anchor)")
    instance.engine.dispose()


def recover_admin(config_path: str | None, data_dir: str | None, name: str) -> None:
    config = configuration(config_path)
    try:
        instance = open_instance(data_dir)
        issued = build_services(instance, config).users.recover(OPERATOR, name)
    except ControlError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(
        f"token {issued.info.prefix} for {name} expires {issued.info.expires_at:%Y-%m-%d %H:%M}Z", err=True
    )
    click.echo(
        "log in with it, then create a lasting token (lockgate tokens create) and revoke this one", err=True
    )
    click.echo(issued.secret)
    instance.engine.dispose()


def serve(
    config_path: str | None, host: str, port: int, workers: int, data_dir: str | None, log_level: str
) -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = configuration(config_path)
    try:
        instance = open_instance(data_dir)
        first = bootstrap(build_services(instance, config), config)
    except ControlError as exc:
        raise click.ClickException(exc.message) from None
    os.environ["LOCKGATE_DATA_DIR"] = str(instance.data)

    url = f"http://{host}:{port}"
    click.echo(f"lockgate serving {', '.join(m.name for m in config.gateway.models)} at {url}/v1")
    click.echo(f"  config: {config.source}")
    click.echo(f"  store:  {instance.safe_url}")
    click.echo(f"  control API: {url}/api/v1 (OpenAPI at {url}/docs)")
    if first.api_key is not None:
        click.echo(f"  admin key (shown once, store it now): {first.api_key.secret}")
        click.echo(f"  try: curl {url}/v1/models -H 'Authorization: Bearer {first.api_key.secret}'")
    if first.control_token is not None:
        click.echo(f"  control token of user 'admin' (shown once): {first.control_token.secret}")
        click.echo(f"  log in with it: lockgate login --url {url} --token <that token>")

    options: dict[str, object] = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,
        "log_level": log_level,
        "timeout_graceful_shutdown": 30,
        "server_header": False,
    }
    if workers == 1:
        uvicorn.run(build_app(instance, config), **options)  # type: ignore[arg-type]
        return
    instance.engine.dispose()
    if config_path is not None:
        os.environ[CONFIG_ENV] = str(Path(config_path).resolve())
    # Every worker writes its metric samples here; /metrics on any worker merges them.
    with tempfile.TemporaryDirectory(prefix="lockgate-metrics-") as samples:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = samples
        uvicorn.run("lockgate.server.asgi:create_from_env", factory=True, workers=workers, **options)  # type: ignore[arg-type]
