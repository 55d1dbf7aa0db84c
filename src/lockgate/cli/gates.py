"""``lockgate gates set|show|test``: a route's promotion gate and its Rego policy."""

from __future__ import annotations

from pathlib import Path

import click

from lockgate.cli.client import Client, ClientError
from lockgate.cli.files import read_policy_files, read_yaml
from lockgate.cli.options import connected, emit_json, fail, json_option, tenant_option, tenant_path, when


@click.group()
def gates() -> None:
    """Promotion gates: which evals a release must pass, and the policy that decides."""


@gates.command("set")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@tenant_option
@connected
def set_gate(file: str, tenant: str, client: Client) -> None:
    """Install the gate FILE describes (route, datasets, thresholds, optional policies); admins only."""
    raw = read_yaml(Path(file), "a gate file is a mapping with route and datasets")
    modules = read_policy_files(Path(file).parent, raw.pop("policies", None), file)
    route = raw.get("route")
    if not isinstance(route, str) or not route:
        fail(f"{file}: route: name the route this gate guards")
    try:
        stored = client.put(tenant_path(tenant, "gates", route), {"spec": raw, "policies": modules})
    except ClientError as exc:
        # The server names the gate document; the author reads it as this file.
        fail(
            f"{file}: {exc.message.removeprefix('gate: ')}"
            if exc.message.startswith("gate: ")
            else exc.message
        )
    click.echo(
        f"gate of route {stored['route']} set: datasets {', '.join(stored['datasets'])}; guards "
        f"{', '.join(stored['environments'])}; policy {stored['policy_sha256'][:16]} "
        f"({', '.join(sorted(stored['policies']))})"
    )


@gates.command("show")
@click.argument("route")
@tenant_option
@json_option
@click.option("--policy", "show_policy", is_flag=True, help="Print the Rego sources too.")
@connected
def show(route: str, tenant: str, as_json: bool, show_policy: bool, client: Client) -> None:
    """The gate of ROUTE."""
    stored = client.get(tenant_path(tenant, "gates", route))
    if as_json:
        emit_json({**stored, "policies": sorted(stored["policies"])})
        return
    click.echo(f"route {stored['route']}: guards {', '.join(stored['environments'])}")
    click.echo(f"  datasets: {', '.join(stored['datasets'])}")
    for key, value in stored["thresholds"].items():
        click.echo(f"  {key}: {value}")
    click.echo(f"  policy {stored['policy_sha256']} ({', '.join(sorted(stored['policies']))})")
    engine = f"OPA at {stored['opa_url']}" if stored["opa_url"] else "regopy (in-process, on the server)"
    click.echo(f"  evaluated by {engine}")
    click.echo(f"  set by {stored['updated_by']} at {when(stored['updated_at'])}")
    if show_policy:
        for name, source in sorted(stored["policies"].items()):
            click.echo(f"--- {name}\n{source}")


@gates.command("test")
@click.argument("tests", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--policy", "policies", multiple=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--replace-default", is_flag=True, help="Test POLICY files alone, without the default policy.")
def test(tests: tuple[str, ...], policies: tuple[str, ...], replace_default: bool) -> None:
    """Run opa-test-style TESTS (rules named test_*) against the default policy plus --policy files.

    Runs locally: it reads only the files given and needs no server.
    """
    from lockgate.gates.policy import PolicySet, run_tests
    from lockgate.service_errors import Invalid

    extra = {Path(p).name: Path(p).read_text(encoding="utf-8") for p in policies}
    try:
        policy_set = PolicySet.default(extra, replace=replace_default)
        results = run_tests(policy_set, {Path(t).name: Path(t).read_text(encoding="utf-8") for t in tests})
    except Invalid as exc:
        raise click.ClickException(exc.message) from None
    failed = 0
    for result in results:
        mark = "PASS" if result.passed else "FAIL"
        failed += not result.passed
        detail = f"  ({result.error})" if result.error else ""
        click.echo(f"{mark}  {result.name}{detail}")
    click.echo(f"{len(results) - failed} passed, {failed} failed")
    raise SystemExit(1 if failed or not results else 0)
