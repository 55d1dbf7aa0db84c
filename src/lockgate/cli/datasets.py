"""``lockgate datasets push|list|show|capture``: golden sets, versioned by content."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
import yaml

from lockgate.cli.common import data_dir_option, emit_json, parse_duration, when
from lockgate.cli.identity import actor_for, control_errors, token_option
from lockgate.control.errors import Invalid
from lockgate.evals.datasets import case_dicts, load_file, parse_spec
from lockgate.instance import open_instance

tenant_option = click.option("--tenant", default="default", show_default=True)


@click.group()
def datasets() -> None:
    """Golden datasets the evals run on."""


@datasets.command("push")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@tenant_option
@data_dir_option
@token_option
@control_errors
def push(file: str, tenant: str, data_dir: str | None, token: str | None) -> None:
    """Store the dataset FILE describes (YAML naming its cases and scorers); prints name@version."""
    spec, cases = load_file(file)
    instance = open_instance(data_dir)
    stored = instance.control().datasets.push(actor_for(instance, token), tenant, spec, cases)
    click.echo(f"{stored.ref}  {len(stored.cases)} cases  sha256 {stored.sha256}")


@datasets.command("list")
@tenant_option
@click.option("--json", "as_json", is_flag=True)
@data_dir_option
@control_errors
def list_datasets(tenant: str, as_json: bool, data_dir: str | None) -> None:
    """Every dataset version."""
    found = open_instance(data_dir).control().datasets.list(tenant)
    if as_json:
        emit_json(
            [{"name": d.name, "version": d.version, "sha256": d.sha256, "cases": len(d.cases)} for d in found]
        )
        return
    for d in found:
        click.echo(
            f"{d.ref:<30} {d.spec.suite:<8} {len(d.cases):>6} cases  {d.sha256[:16]}  "
            f"{d.created_by}  {when(d.created_at)}"
        )


@datasets.command("show")
@click.argument("reference")
@tenant_option
@click.option("--json", "as_json", is_flag=True)
@data_dir_option
@control_errors
def show(reference: str, tenant: str, as_json: bool, data_dir: str | None) -> None:
    """One version (name or name@version): its scorers and cases."""
    d = open_instance(data_dir).control().datasets.resolve(tenant, reference)
    if as_json:
        emit_json(
            {
                "name": d.name,
                "version": d.version,
                "sha256": d.sha256,
                "spec": d.spec.model_dump(mode="json"),
                "cases": case_dicts(d.cases),
            }
        )
        return
    click.echo(f"{d.ref}  ({d.spec.suite})  sha256 {d.sha256}")
    if d.spec.description:
        click.echo(f"  {d.spec.description}")
    for scorer in d.spec.scorers:
        click.echo(f"  scorer: {scorer}")
    click.echo(
        f"  {len(d.cases)} cases: {', '.join(c.id for c in d.cases[:10])}{' ...' * (len(d.cases) > 10)}"
    )


@datasets.command("capture")
@click.argument("spec_file", type=click.Path(dir_okay=False, exists=True))
@click.option("--route", required=True, help="Capture calls of this route.")
@click.option("--since", default="7d", show_default=True, help="How far back: 90m, 24h, 7d.")
@click.option("--limit", default=500, show_default=True, type=click.IntRange(1, 100_000))
@tenant_option
@data_dir_option
@token_option
@control_errors
def capture(
    spec_file: str, route: str, since: str, limit: int, tenant: str, data_dir: str | None, token: str | None
) -> None:
    """Make a dataset version from production calls of ROUTE (needs request_log.store_content).

    SPEC_FILE is a dataset YAML file; its `cases` entry, if any, is ignored.
    """
    try:
        raw = yaml.safe_load(Path(spec_file).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise Invalid(f"{spec_file}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise Invalid(f"{spec_file}: a dataset file is a mapping with name and scorers")
    raw.pop("cases", None)
    spec = parse_spec(raw, where=spec_file)
    instance = open_instance(data_dir)
    stored = instance.control().datasets.capture(
        actor_for(instance, token),
        tenant,
        spec,
        route=route,
        since=datetime.now(UTC) - parse_duration(since),
        limit=limit,
    )
    click.echo(f"{stored.ref}  {len(stored.cases)} cases captured from route {route}  sha256 {stored.sha256}")
