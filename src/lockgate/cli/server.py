"""``lockgate serve`` and ``lockgate migrate``: the server-side commands (they open the store)."""

from __future__ import annotations

import click

CONFIG_HELP = "lockgate.yaml; default: the embedded local model."
config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    envvar="LOCKGATE_CONFIG",
    help=CONFIG_HELP,
)
data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    envvar="LOCKGATE_DATA_DIR",
    default=None,
    help="Where the SQLite store, key pepper, signing key and audit anchor live (default ./.lockgate).",
)


@click.command()
@config_option
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
@click.option(
    "--drain-seconds",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 300),
    envvar="LOCKGATE_DRAIN_SECONDS",
    help="On SIGTERM, answer /readyz with 503 and keep serving this long before shutting down.",
)
def serve(
    config_path: str | None,
    host: str,
    port: int,
    workers: int,
    data_dir: str | None,
    log_level: str,
    drain_seconds: float,
) -> None:
    """Run the server: the OpenAI-compatible gateway, the control API and the eval worker."""
    from lockgate.server.run import serve as run

    run(config_path, host, port, workers, data_dir, log_level, drain_seconds)


@click.command()
@data_dir_option
@click.option(
    "--check",
    is_flag=True,
    help="Change nothing: exit 0 when the store is at the current schema, 3 when it is not.",
)
def migrate(data_dir: str | None, check: bool) -> None:
    """Create the store's secrets on first install and bring its schema up to date (server side)."""
    if check:
        from lockgate.server.run import check_schema

        check_schema(data_dir)
        return
    from lockgate.server.run import migrate as run

    run(data_dir)


@click.command("recover-admin")
@click.argument("name")
@config_option
@data_dir_option
def recover_admin(name: str, config_path: str | None, data_dir: str | None) -> None:
    """On the server host: a one-day token for platform admin NAME, when all of theirs are lost or expired.

    Opens the store like `serve`; audited as `user.recover` by `operator`.
    """
    from lockgate.server.run import recover_admin as run

    run(config_path, data_dir, name)
