"""``lockgate models``: register model cards, look them up, move aliases and retire versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lockgate.cli.client import Client
from lockgate.cli.files import read_yaml
from lockgate.cli.options import connected, emit_json, json_option, tenant_option, tenant_path, when


@click.group()
def models() -> None:
    """Manage the model registry: cards, versions, aliases and their status."""


@models.command("register")
@click.argument("card_file", metavar="FILE.yaml", type=click.Path(exists=True, dir_okay=False))
@tenant_option
@connected
def register(card_file: str, tenant: str, client: Client) -> None:
    """Register a model version from its card (a file:// artifact is hashed and checked by the server)."""
    card = read_yaml(Path(card_file), "a model card is a mapping of fields")
    model = client.post(tenant_path(tenant, "models"), card)
    click.echo(f"registered {model['name']}:{model['version']} in tenant {tenant} ({model['status']})")


@models.command("show")
@click.argument("reference")
@tenant_option
@json_option
@connected
def show(reference: str, tenant: str, as_json: bool, client: Client) -> None:
    """Show one model: REFERENCE is name@alias, name:version, or name (its newest active version)."""
    model = client.get(tenant_path(tenant, "models", "resolve", reference))
    if model["status"] != "active":
        click.echo(f"warning: {model['name']}:{model['version']} is {model['status']}", err=True)
    if as_json:
        emit_json(model)
        return
    lines = {
        "model": f"{model['name']}:{model['version']}",
        "status": model["status"],
        "aliases": ", ".join(model["aliases"]) or "-",
        "registered": f"{when(model['created_at'])} by {model['created_by']}",
    }
    for key, value in model["card"].items():
        if key not in ("name", "version") and value is not None and value != []:
            lines[key] = _plain(value)
    for key, text in lines.items():
        click.echo(f"{key + ':':<20} {text}")


def _plain(value: Any, separator: str = ", ") -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_plain(v, ',')}" for k, v in value.items() if v is not None and v != [])
    if isinstance(value, list):
        return separator.join(str(v) for v in value)
    return str(value)


@models.command("list")
@tenant_option
@click.option("--name", default=None, help="Only the versions of this model.")
@json_option
@connected
def list_models(tenant: str, name: str | None, as_json: bool, client: Client) -> None:
    """List registered models, each name's versions oldest first."""
    found = client.get(tenant_path(tenant, "models"), name=name)
    if as_json:
        emit_json(found)
        return
    click.echo(f"{'NAME':<24} {'VERSION':<14} {'STATUS':<11} {'GATEWAY MODEL':<24} {'ALIASES':<20} CREATED")
    for m in found:
        aliases = ",".join(m["aliases"]) or "-"
        click.echo(
            f"{m['name']:<24} {m['version']:<14} {m['status']:<11} {m['card']['gateway_model']:<24} "
            f"{aliases:<20} {when(m['created_at'])}"
        )


@models.command("alias")
@click.argument("name")
@click.argument("alias")
@click.argument("version")
@tenant_option
@connected
def alias(name: str, alias: str, version: str, tenant: str, client: Client) -> None:
    """Point NAME@ALIAS at VERSION (creating the alias or moving it)."""
    model = client.put(tenant_path(tenant, "models", name, "aliases", alias), {"version": version})
    click.echo(f"{name}@{alias} -> {model['name']}:{model['version']}")


def _status_command(command_name: str, target: str, help_text: str) -> click.Command:
    @click.argument("name")
    @click.argument("version")
    @tenant_option
    @connected
    def command(name: str, version: str, tenant: str, client: Client) -> None:
        if target == "retired":
            model = client.post(tenant_path(tenant, "models", name, "versions", version, "retire"))
        else:
            path = tenant_path(tenant, "models", name, "versions", version, "status")
            model = client.post(path, {"status": target})
        click.echo(f"{model['name']}:{model['version']} is now {model['status']} in tenant {tenant}")

    return click.command(command_name, help=help_text)(command)


for _name, _target, _help in (
    ("deprecate", "deprecated", "Deprecate a version: still usable, with a warning."),
    ("retire", "retired", "Retire a version for good (admin): no new release may use it."),
    ("activate", "active", "Make a deprecated version active again."),
):
    models.add_command(_status_command(_name, _target, _help))
