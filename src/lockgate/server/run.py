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
from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError

from lockgate.config.loader import ConfigError, LoadedConfig
from lockgate.instance import load_config, migrate_instance, open_instance
from lockgate.security.rbac import Actor
from lockgate.server.app import build_app
from lockgate.server.asgi import CONFIG_ENV
from lockgate.server.bootstrap import bootstrap
from lockgate.server.drain import DRAIN_ENV
from lockgate.service_errors import ControlError
from lockgate.services import build_services
from lockgate.store.database import data_dir as store_data_dir
from lockgate.store.database import database_url, open_engine, require_current_schema

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


def check_schema(data_dir: str | None) -> None:
    """``lockgate migrate --check``: exit 0 when the store is at this code's schema, 3 otherwise.
    Changes nothing and needs no secrets: what a replica waits on while a migration job runs."""
    directory = store_data_dir(data_dir)
    engine = open_engine(database_url(directory))
    try:
        require_current_schema(engine)
    except ControlError as exc:
        click.echo(exc.message, err=True)
        raise SystemExit(3) from None
    except SQLAlchemyError as exc:
        click.echo(f"the store is not reachable: {type(exc).__name__}", err=True)
        raise SystemExit(3) from None
    finally:
        engine.dispose()
    click.echo(f"store {make_url(database_url(directory)).render_as_string(hide_password=True)} is current")


def serve(
    config_path: str | None,
    host: str,
    port: int,
    workers: int,
    data_dir: str | None,
    log_level: str,
    drain_seconds: float = 0.0,
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
        uvicorn.run(build_app(instance, config, drain_seconds=drain_seconds), **options)  # type: ignore[arg-type]
        return
    from lockgate.limits.shared import serve_counters  # only a supervisor of workers serves them

    instance.engine.dispose()
    os.environ[DRAIN_ENV] = str(drain_seconds)
    if config_path is not None:
        os.environ[CONFIG_ENV] = str(Path(config_path).resolve())
    # Every worker writes its metric samples here; /metrics on any worker merges them. This process
    # serves the limit counters the workers share (their socket path is in the environment).
    with tempfile.TemporaryDirectory(prefix="lockgate-metrics-") as samples, serve_counters():
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = samples
        uvicorn.run("lockgate.server.asgi:create_from_env", factory=True, workers=workers, **options)  # type: ignore[arg-type]
