"""``lockgate serve`` and ``lockgate migrate``: the server-side commands (they open the store)."""

from __future__ import annotations

import click

CONFIG_HELP = "lockgate.yaml; default: the embedded local model."
data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    envvar="LOCKGATE_DATA_DIR",
    default=None,
    help="Where the SQLite store, key pepper, signing key and audit anchor live (default ./.lockgate).",
)


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    envvar="LOCKGATE_CONFIG",
    help=CONFIG_HELP,
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=4000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@data_dir_option
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
def serve(
    config_path: str | None, host: str, port: int, workers: int, data_dir: str | None, log_level: str
) -> None:
    """Run the server: the OpenAI-compatible gateway, the control API and the eval worker."""
    from lockgate.server.run import serve as run

    run(config_path, host, port, workers, data_dir, log_level)


@click.command()
@data_dir_option
def migrate(data_dir: str | None) -> None:
    """Create the store's secrets on first install and bring its schema up to date (server side)."""
    from lockgate.server.run import migrate as run

    run(data_dir)
