"""``lockgate gates set|show|test``: a route's promotion gate and its Rego policy."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from lockgate.cli.common import data_dir_option, emit_json, when
from lockgate.cli.identity import actor_for, control_errors, token_option
from lockgate.control.errors import Invalid
from lockgate.evals.gate import parse_gate
from lockgate.evals.policy import PolicySet, run_tests
from lockgate.instance import open_instance

tenant_option = click.option("--tenant", default="default", show_default=True)


@click.group()
def gates() -> None:
    """Promotion gates: which evals a release must pass, and the policy that decides."""


def _read_yaml(file: str) -> object:
    try:
        return yaml.safe_load(Path(file).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark is not None else file
        raise Invalid(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None


def _policy_files(base: Path, paths: object, where: str) -> dict[str, str]:
    if paths is None:
        return {}
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise Invalid(f"{where}: policies: a list of .rego files")
    modules: dict[str, str] = {}
    for name in paths:
        path = (base / name).resolve()
        try:
            modules[path.name] = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise Invalid(f"{where}: policies: cannot read {name}: {exc.strerror}") from None
    return modules


@gates.command("set")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@tenant_option
@data_dir_option
@token_option
@control_errors
def set_gate(file: str, tenant: str, data_dir: str | None, token: str | None) -> None:
    """Install the gate FILE describes (route, datasets, thresholds, optional policies)."""
    raw = _read_yaml(file)
    if not isinstance(raw, dict):
        raise Invalid(f"{file}: a gate file is a mapping with route and datasets")
    modules = _policy_files(Path(file).parent, raw.pop("policies", None), file)
    spec = parse_gate(raw, file)
    instance = open_instance(data_dir)
    stored = instance.control().gates.set(actor_for(instance, token), tenant, spec, modules)
    click.echo(
        f"gate of route {spec.route} set: datasets {', '.join(spec.datasets)}; guards "
        f"{', '.join(spec.environments)}; policy {stored.policies.sha256[:16]} "
        f"({', '.join(sorted(stored.policies.modules))})"
    )


@gates.command("show")
@click.argument("route")
@tenant_option
@click.option("--json", "as_json", is_flag=True)
@click.option("--policy", "show_policy", is_flag=True, help="Print the Rego sources too.")
@data_dir_option
@control_errors
def show(route: str, tenant: str, as_json: bool, show_policy: bool, data_dir: str | None) -> None:
    """The gate of ROUTE."""
    stored = open_instance(data_dir).control().gates.get(tenant, route)
    if stored is None:
        raise click.ClickException(f"route {route!r} has no gate; set one with `lockgate gates set FILE`")
    if as_json:
        emit_json(
            {
                **stored.spec.model_dump(mode="json"),
                "policy_sha256": stored.policies.sha256,
                "policies": sorted(stored.policies.modules),
                "updated_by": stored.updated_by,
                "updated_at": stored.updated_at.isoformat(),
            }
        )
        return
    spec = stored.spec
    click.echo(f"route {spec.route}: guards {', '.join(spec.environments)}")
    click.echo(f"  datasets: {', '.join(spec.datasets)}")
    for key, value in spec.thresholds.model_dump().items():
        click.echo(f"  {key}: {value}")
    click.echo(f"  policy {stored.policies.sha256} ({', '.join(sorted(stored.policies.modules))})")
    click.echo(f"  evaluated by {'OPA at ' + spec.opa_url if spec.opa_url else 'regopy (in-process)'}")
    click.echo(f"  set by {stored.updated_by} at {when(stored.updated_at)}")
    if show_policy:
        for name, source in sorted(stored.policies.modules.items()):
            click.echo(f"--- {name}\n{source}")


@gates.command("test")
@click.argument("tests", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--policy", "policies", multiple=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--replace-default", is_flag=True, help="Test POLICY files alone, without the default policy.")
def test(tests: tuple[str, ...], policies: tuple[str, ...], replace_default: bool) -> None:
    """Run opa-test-style TESTS (rules named test_*) against the default policy plus --policy files."""
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
