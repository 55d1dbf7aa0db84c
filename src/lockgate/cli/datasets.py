"""``lockgate datasets push|list|show|capture``: golden sets, versioned by content, stored on the server."""

from __future__ import annotations

import re
from pathlib import Path

import click

from lockgate.cli.client import Client, ClientError
from lockgate.cli.files import read_yaml
from lockgate.cli.options import (
    connected,
    emit_json,
    fail,
    json_option,
    seconds,
    tenant_option,
    tenant_path,
    when,
)
from lockgate.evals.dataset_files import read_dataset_file
from lockgate.service_errors import Invalid

_CASE = re.compile(r"^cases\[(?P<index>\d+)\]")


@click.group()
def datasets() -> None:
    """Golden datasets the evals run on."""


@datasets.command("push")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@tenant_option
@connected
def push(file: str, tenant: str, client: Client) -> None:
    """Store the dataset FILE describes (YAML naming its cases and scorers); prints name@version."""
    try:
        found = read_dataset_file(file)
    except Invalid as exc:
        fail(exc.message)
    try:
        stored = client.post(tenant_path(tenant, "datasets"), {"spec": found.spec, "cases": found.cases})
    except ClientError as exc:
        # The server names cases by index; the author reads them by file and line.
        match = _CASE.match(exc.message)
        if match is not None:
            fail(found.where(int(match["index"])) + exc.message[match.end() :])
        if exc.message.startswith("spec: "):
            fail(f"{found.path}: {exc.message.removeprefix('spec: ')}")
        raise
    click.echo(f"{stored['ref']}  {stored['cases']} cases  sha256 {stored['sha256']}")


@datasets.command("list")
@tenant_option
@json_option
@connected
def list_datasets(tenant: str, as_json: bool, client: Client) -> None:
    """Every dataset version."""
    found = client.get(tenant_path(tenant, "datasets"))
    if as_json:
        emit_json([{k: d[k] for k in ("name", "version", "sha256", "cases")} for d in found])
        return
    for d in found:
        click.echo(
            f"{d['ref']:<30} {d['suite']:<8} {d['cases']:>6} cases  {d['sha256'][:16]}  "
            f"{d['created_by']}  {when(d['created_at'])}"
        )


@datasets.command("show")
@click.argument("reference")
@tenant_option
@connected
def show(reference: str, tenant: str, client: Client) -> None:
    """Print one version (REFERENCE: name or name@version) as JSON, cases included."""
    name, _, version = reference.partition("@")
    if version and not version.isdigit():
        fail(f"dataset reference {reference!r}: the version is a number, e.g. {name}@3")
    found = client.get(tenant_path(tenant, "datasets", name), version=version or None)
    emit_json(
        {
            "name": found["name"],
            "version": found["version"],
            "sha256": found["sha256"],
            "spec": found["spec"],
            "cases": found["case_list"],
        }
    )


@datasets.command("capture")
@click.argument("spec_file", type=click.Path(dir_okay=False, exists=True))
@click.option("--route", required=True, help="Capture calls of this route.")
@click.option("--since", default="7d", show_default=True, help="How far back: 90m, 24h, 7d.")
@click.option("--limit", default=500, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--only-rated", is_flag=True, help="Only calls a user rated through POST /v1/feedback.")
@click.option(
    "--min-feedback",
    type=click.FloatRange(0, 1),
    default=None,
    help="Only calls rated at least this (0..1; a thumbs up is 1). Implies --only-rated.",
)
@tenant_option
@connected
def capture(
    spec_file: str,
    route: str,
    since: str,
    limit: int,
    only_rated: bool,
    min_feedback: float | None,
    tenant: str,
    client: Client,
) -> None:
    """Make a dataset version from production calls of ROUTE (needs request_log.store_content).

    SPEC_FILE is a dataset YAML file; its `cases` entry, if any, is ignored. Each captured case
    carries the users' feedback on its call, if any, as its `feedback` label.
    """
    spec = read_yaml(Path(spec_file), "a dataset file is a mapping with name and scorers")
    spec.pop("cases", None)
    body = {
        "spec": spec,
        "route": route,
        "since_hours": seconds(since) / 3600,
        "limit": limit,
        "only_rated": only_rated or min_feedback is not None,
        "min_feedback": min_feedback,
    }
    stored = client.post(tenant_path(tenant, "datasets", "capture"), body)
    click.echo(
        f"{stored['ref']}  {stored['cases']} cases captured from route {route}  sha256 {stored['sha256']}"
    )
