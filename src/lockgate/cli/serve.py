"""``lockgate serve``: migrate the store, bootstrap on first start, and run the gateway."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import click
import uvicorn

from lockgate.api.app import create_control_api
from lockgate.cli.common import fail_with_problems
from lockgate.config.loader import ConfigError
from lockgate.gateway.asgi import CONFIG_ENV
from lockgate.gateway.http import create_app
from lockgate.gateway.runtime import Gateway
from lockgate.instance import bootstrap, load_config, open_instance


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    envvar=CONFIG_ENV,
    help="lockgate.yaml; default: the embedded local model.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=4000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    envvar="LOCKGATE_DATA_DIR",
    default=None,
    help="Where the SQLite store, key pepper and model files live (default ./.lockgate).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
def serve(
    config_path: str | None, host: str, port: int, workers: int, data_dir: str | None, log_level: str
) -> None:
    """Start the OpenAI-compatible gateway."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        fail_with_problems(exc)
    instance = open_instance(data_dir)
    os.environ["LOCKGATE_DATA_DIR"] = str(instance.data)
    first = bootstrap(instance, config)

    url = f"http://{host}:{port}"
    click.echo(f"lockgate serving {', '.join(m.name for m in config.gateway.models)} at {url}/v1")
    click.echo(f"  config: {config.source}")
    click.echo(f"  store:  {instance.safe_url}")
    if first.api_key is not None:
        click.echo(f"  admin key (shown once, store it now): {first.api_key.secret}")
        click.echo(f"  try: curl {url}/v1/models -H 'Authorization: Bearer {first.api_key.secret}'")
    if first.control_token is not None:
        click.echo(f"  control token of user 'admin' (shown once): {first.control_token.secret}")
        click.echo("  use it with the CLI as LOCKGATE_TOKEN=... and with the control API at /docs")

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
        gateway = Gateway(config, instance.engine, instance.pepper)
        app = create_app(gateway, create_control_api(instance.control()))
        uvicorn.run(app, **options)  # type: ignore[arg-type]
        return
    if config_path is not None:
        os.environ[CONFIG_ENV] = str(Path(config_path).resolve())
    # Every worker writes its metric samples here; /metrics on any worker merges them.
    with tempfile.TemporaryDirectory(prefix="lockgate-metrics-") as samples:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = samples
        uvicorn.run("lockgate.gateway.asgi:create_from_env", factory=True, workers=workers, **options)  # type: ignore[arg-type]
