"""``lockgate prompts``: lint prompt files, push them into the catalog, and read the catalog back.

Prompt files are YAML, one file per version, conventionally ``prompts/<name>/<version>.yaml``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from lockgate.cli.common import data_dir_option, emit_json, when
from lockgate.cli.identity import actor_for, control_errors, token_option
from lockgate.control.errors import ControlError
from lockgate.control.prompt_spec import VERSION_PATTERN
from lockgate.control.prompts import PromptCatalog, PromptSpec, PromptVersion, lint
from lockgate.control.semver import parse_version
from lockgate.instance import open_instance

_SUFFIXES = (".yaml", ".yml")


@click.group()
def prompts() -> None:
    """Versioned prompt templates: files in git, pushed into the catalog with semver enforced."""


@prompts.command("lint")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
def lint_files(paths: tuple[str, ...]) -> None:
    """Check prompt files (or directories of them); prints 'file: problem' lines, exit 1 on any."""
    loaded = _load_all(paths)
    if _report(loaded):
        raise click.exceptions.Exit(1)
    click.echo(f"{len(loaded)} prompt file(s), no problems")


@prompts.command("push")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--tenant", default="default", show_default=True)
@token_option
@data_dir_option
@control_errors
def push(paths: tuple[str, ...], tenant: str, token: str | None, data_dir: str | None) -> None:
    """Push prompt files (or directories); each prompt's versions go in version order."""
    loaded = _load_all(paths)
    if _report(loaded):
        click.echo("nothing pushed: fix the problems above first", err=True)
        raise click.exceptions.Exit(1)
    instance = open_instance(data_dir)
    actor = actor_for(instance, token)
    catalog = PromptCatalog(instance.engine, instance.audit)
    specs = sorted((spec for _, spec, _ in loaded if spec is not None), key=_order)
    refused: set[str] = set()
    for spec in specs:
        label = f"{spec.name}@{spec.version}"
        if spec.name in refused:
            click.echo(f"skipped {label}: an earlier version of {spec.name} was refused")
            continue
        try:
            pushed = catalog.push(actor, tenant, spec)
        except ControlError as exc:
            refused.add(spec.name)
            click.echo(f"refused {label}: {exc.message}")
            continue
        outcome = "unchanged" if pushed.unchanged else "pushed"
        click.echo(f"{outcome} {label} (sha256 {pushed.content_hash[:12]})")
    if refused:
        raise click.exceptions.Exit(1)


@prompts.command("show")
@click.argument("name")
@click.option("--version", default=None, help="Default: the latest version.")
@click.option("--tenant", default="default", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@data_dir_option
@control_errors
def show(name: str, version: str | None, tenant: str, as_json: bool, data_dir: str | None) -> None:
    """Print one version as YAML, ready to save as a prompt file."""
    found = _catalog(data_dir).get(tenant, name, version)
    if as_json:
        emit_json(found.to_dict())
        return
    click.echo(f"# {found.name}@{found.version} sha256:{found.content_hash}")
    click.echo(f"# pushed by {found.created_by} at {when(found.created_at)}")
    click.echo(
        yaml.safe_dump(_as_file(found.spec), sort_keys=False, allow_unicode=True, width=10_000), nl=False
    )


@prompts.command("diff")
@click.argument("name")
@click.argument("a")
@click.argument("b")
@click.option("--tenant", default="default", show_default=True)
@data_dir_option
@control_errors
def diff(name: str, a: str, b: str, tenant: str, data_dir: str | None) -> None:
    """Show how version B differs from version A, and the bump that needs."""
    click.echo(_catalog(data_dir).diff(tenant, name, a, b))


@prompts.command("list")
@click.option("--tenant", default="default", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@data_dir_option
@control_errors
def list_prompts(tenant: str, as_json: bool, data_dir: str | None) -> None:
    """The latest version of every prompt in the tenant."""
    found = _catalog(data_dir).list(tenant)
    if as_json:
        emit_json([_summary(v) for v in found])
        return
    click.echo(f"{'NAME':<32} {'VERSION':<10} {'SHA256':<12} {'PUSHED BY':<16} PUSHED")
    for v in found:
        click.echo(
            f"{v.name:<32} {v.version:<10} {v.content_hash[:12]:<12} {v.created_by:<16} {when(v.created_at)}"
        )


Loaded = tuple[Path, PromptSpec | None, list[str]]


def _load_all(paths: tuple[str, ...]) -> list[Loaded]:
    files: list[Path] = []
    for given in map(Path, paths):
        if given.is_dir():
            files += sorted(p for p in given.rglob("*") if p.suffix in _SUFFIXES and p.is_file())
        else:
            files.append(given)
    if not files:
        raise click.ClickException("no prompt files (*.yaml, *.yml) found")
    return [(path, *_load(path)) for path in files]


def _load(path: Path) -> tuple[PromptSpec | None, list[str]]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return None, [f"cannot be read: {' '.join(str(exc).split())}"]
    if not isinstance(data, dict):
        return None, ["is not a YAML mapping of prompt fields"]
    try:
        spec = PromptSpec.model_validate(data)
    except ValidationError as exc:
        return None, [_validation_problem(error) for error in exc.errors()]
    problems = lint(spec)
    # In the prompts/<name>/<version>.yaml layout the path names the version; it must not lie.
    if re.match(VERSION_PATTERN, path.stem):
        if path.stem != spec.version:
            problems.append(f"file is named {path.name} but declares version {spec.version}")
        if path.parent.name != spec.name:
            problems.append(f"file is in directory {path.parent.name!r} but declares name {spec.name!r}")
    return spec, problems


def _validation_problem(error: ErrorDetails) -> str:
    where = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _report(loaded: list[Loaded]) -> bool:
    """Print every problem as 'file: problem'; True when there was one."""
    problems = [f"{path}: {problem}" for path, _, found in loaded for problem in found]
    for line in problems:
        click.echo(line)
    return bool(problems)


def _order(spec: PromptSpec) -> tuple[str, tuple[int, int, int]]:
    return spec.name, parse_version(spec.version)


def _catalog(data_dir: str | None) -> PromptCatalog:
    instance = open_instance(data_dir)
    return PromptCatalog(instance.engine, instance.audit)


def _as_file(spec: PromptSpec) -> dict[str, Any]:
    # Drop unset optional fields so the YAML reads like a hand-written file; it validates to the same spec.
    data = spec.model_dump(mode="json")
    data["settings"] = {key: value for key, value in data["settings"].items() if value is not None}
    if data["output_schema"] is None:
        del data["output_schema"]
    return data


def _summary(version: PromptVersion) -> dict[str, Any]:
    summary = {key: value for key, value in version.to_dict().items() if key != "spec"}
    return {**summary, "description": version.spec.description, "tags": version.spec.tags}
