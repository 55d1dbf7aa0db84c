"""``lockgate models``: register model cards, look them up, move aliases and retire versions."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from lockgate.cli.common import data_dir_option, emit_json, when
from lockgate.cli.identity import actor_for, control_errors, token_option
from lockgate.control.registry import ModelRegistry, ModelStatus, parse_card
from lockgate.instance import Instance, open_instance

tenant_option = click.option("--tenant", default="default", show_default=True)


def _registry(instance: Instance) -> ModelRegistry:
    return ModelRegistry(instance.engine, instance.audit)


@click.group()
def models() -> None:
    """Manage the model registry: cards, versions, aliases and their status."""


@models.command("register")
@click.argument("card_file", metavar="FILE.yaml", type=click.Path(exists=True, dir_okay=False))
@tenant_option
@token_option
@data_dir_option
@control_errors
def register(card_file: str, tenant: str, token: str | None, data_dir: str | None) -> None:
    """Register a model version from its card; a file:// artifact is hashed and checked first."""
    try:
        data = yaml.safe_load(Path(card_file).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise click.ClickException(f"{card_file} is not valid YAML: {exc}") from None
    card = parse_card(data)
    instance = open_instance(data_dir)
    model = _registry(instance).register(actor_for(instance, token), tenant, card)
    click.echo(f"registered {model.reference} in tenant {tenant} ({model.status.value})")


@models.command("show")
@click.argument("reference")
@tenant_option
@click.option("--json", "as_json", is_flag=True)
@data_dir_option
@control_errors
def show(reference: str, tenant: str, as_json: bool, data_dir: str | None) -> None:
    """Show one model: REFERENCE is name@alias, name:version, or name (its newest active version)."""
    model = _registry(open_instance(data_dir)).resolve(tenant, reference)
    if model.status is not ModelStatus.ACTIVE:
        click.echo(f"warning: {model.reference} is {model.status.value}", err=True)
    if as_json:
        emit_json(model.to_dict())
        return
    lines = {
        "model": model.reference,
        "status": model.status.value,
        "aliases": ", ".join(model.aliases) or "-",
        "registered": f"{when(model.created_at)} by {model.created_by}",
    }
    for key, value in model.card.model_dump(mode="json", exclude={"name", "version"}).items():
        if value is not None and value != []:
            lines[key] = _plain(value)
    for key, text in lines.items():
        click.echo(f"{key + ':':<20} {text}")


def _plain(value: object, separator: str = ", ") -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_plain(v, ',')}" for k, v in value.items() if v is not None and v != [])
    if isinstance(value, list):
        return separator.join(str(v) for v in value)
    return str(value)


@models.command("list")
@tenant_option
@click.option("--name", default=None, help="Only the versions of this model.")
@click.option("--json", "as_json", is_flag=True)
@data_dir_option
@control_errors
def list_models(tenant: str, name: str | None, as_json: bool, data_dir: str | None) -> None:
    """List registered models, each name's versions oldest first."""
    found = _registry(open_instance(data_dir)).list(tenant, name)
    if as_json:
        emit_json([m.to_dict() for m in found])
        return
    click.echo(f"{'NAME':<24} {'VERSION':<14} {'STATUS':<11} {'GATEWAY MODEL':<24} {'ALIASES':<20} CREATED")
    for m in found:
        aliases = ",".join(m.aliases) or "-"
        click.echo(
            f"{m.name:<24} {m.version:<14} {m.status.value:<11} {m.card.gateway_model:<24} {aliases:<20} "
            f"{when(m.created_at)}"
        )


@models.command("alias")
@click.argument("name")
@click.argument("alias")
@click.argument("version")
@tenant_option
@token_option
@data_dir_option
@control_errors
def alias(name: str, alias: str, version: str, tenant: str, token: str | None, data_dir: str | None) -> None:
    """Point NAME@ALIAS at VERSION (creating the alias or moving it)."""
    instance = open_instance(data_dir)
    model = _registry(instance).set_alias(actor_for(instance, token), tenant, name, alias, version)
    click.echo(f"{name}@{alias} -> {model.reference}")


def _status_command(command_name: str, status: ModelStatus, help_text: str) -> click.Command:
    @click.argument("name")
    @click.argument("version")
    @tenant_option
    @token_option
    @data_dir_option
    @control_errors
    def command(name: str, version: str, tenant: str, token: str | None, data_dir: str | None) -> None:
        instance = open_instance(data_dir)
        model = _registry(instance).set_status(actor_for(instance, token), tenant, name, version, status)
        click.echo(f"{model.reference} is now {model.status.value} in tenant {tenant}")

    return click.command(command_name, help=help_text)(command)


for _name, _status, _help in (
    ("deprecate", ModelStatus.DEPRECATED, "Deprecate a version: still usable, with a warning."),
    ("retire", ModelStatus.RETIRED, "Retire a version for good (admin): no new release may use it."),
    ("activate", ModelStatus.ACTIVE, "Make a deprecated version active again."),
):
    models.add_command(_status_command(_name, _status, _help))
