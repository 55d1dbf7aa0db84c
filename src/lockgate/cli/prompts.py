"""``lockgate prompts``: lint prompt files, push them into the catalog, and read the catalog back.

Prompt files are YAML, one file per version, conventionally ``prompts/<name>/<version>.yaml``. ``lint``
checks files locally (no server); ``push`` sends each version to the server, which validates it again
and enforces semantic versioning.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import yaml

from lockgate.cli.client import Client, ClientError
from lockgate.cli.options import connected, emit_json, json_option, tenant_option, tenant_path, when

VERSION = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$")
_SUFFIXES = (".yaml", ".yml")

Loaded = tuple[Path, dict[str, Any] | None, list[str]]


@click.group()
def prompts() -> None:
    """Versioned prompt templates: files in git, pushed into the catalog with semver enforced."""


@prompts.command("lint")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
def lint_files(paths: tuple[str, ...]) -> None:
    """Check prompt files (or directories of them); prints 'file: problem' lines, exit 1 on any."""
    from lockgate.cli.prompt_lint import check

    loaded = _load_all(paths, check_version=False)
    problems = [(path, problem) for path, raw, found in loaded for problem in found + check(raw)]
    for path, problem in problems:
        click.echo(f"{path}: {problem}")
    if problems:
        raise click.exceptions.Exit(1)
    click.echo(f"{len(loaded)} prompt file(s), no problems")


@prompts.command("push")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@tenant_option
@connected
def push(paths: tuple[str, ...], tenant: str, client: Client) -> None:
    """Push prompt files (or directories); each prompt's versions go in version order.

    Every file is linted first, as ``lint`` does: one problem anywhere and nothing is pushed.
    """
    from lockgate.cli.prompt_lint import check

    loaded = _load_all(paths)
    problems = [f"{path}: {problem}" for path, raw, found in loaded for problem in found + check(raw)]
    if problems:
        for line in problems:
            click.echo(line)
        click.echo("nothing pushed: fix the problems above first", err=True)
        raise click.exceptions.Exit(1)
    specs = sorted((raw for _, raw, _ in loaded if raw is not None), key=_order)
    refused: set[str] = set()
    for spec in specs:
        name = str(spec.get("name"))
        label = f"{name}@{spec.get('version')}"
        if name in refused:
            click.echo(f"skipped {label}: an earlier version of {name} was refused")
            continue
        try:
            pushed = client.post(tenant_path(tenant, "prompts"), spec)
        except ClientError as exc:
            if exc.status in (0, 401, 403):
                raise
            refused.add(name)
            click.echo(f"refused {label}: {exc.message}")
            continue
        outcome = "unchanged" if pushed["unchanged"] else "pushed"
        click.echo(f"{outcome} {label} (sha256 {pushed['content_hash'][:12]})")
    if refused:
        raise click.exceptions.Exit(1)


@prompts.command("show")
@click.argument("name")
@click.option("--version", default=None, help="Default: the latest version.")
@tenant_option
@json_option
@connected
def show(name: str, version: str | None, tenant: str, as_json: bool, client: Client) -> None:
    """Print one version as YAML, ready to save as a prompt file."""
    found = client.get(tenant_path(tenant, "prompts", name, "versions", version or "latest"))
    if as_json:
        emit_json(found)
        return
    click.echo(f"# {found['name']}@{found['version']} sha256:{found['content_hash']}")
    click.echo(f"# pushed by {found['created_by']} at {when(found['created_at'])}")
    click.echo(
        yaml.safe_dump(_as_file(found["spec"]), sort_keys=False, allow_unicode=True, width=10_000), nl=False
    )


@prompts.command("diff")
@click.argument("name")
@click.argument("a")
@click.argument("b")
@tenant_option
@connected
def diff(name: str, a: str, b: str, tenant: str, client: Client) -> None:
    """Show how version B differs from version A, and the bump that needs."""
    click.echo(client.get(tenant_path(tenant, "prompts", name, "diff"), a=a, b=b)["diff"])


@prompts.command("list")
@tenant_option
@json_option
@connected
def list_prompts(tenant: str, as_json: bool, client: Client) -> None:
    """The latest version of every prompt in the tenant."""
    found = client.get(tenant_path(tenant, "prompts"))
    if as_json:
        emit_json([{k: v for k, v in p.items() if k != "spec"} | _described(p) for p in found])
        return
    click.echo(f"{'NAME':<32} {'VERSION':<10} {'SHA256':<12} {'PUSHED BY':<16} PUSHED")
    for v in found:
        click.echo(
            f"{v['name']:<32} {v['version']:<10} {v['content_hash'][:12]:<12} {v['created_by']:<16} "
            f"{when(v['created_at'])}"
        )


def _described(version: dict[str, Any]) -> dict[str, Any]:
    return {"description": version["spec"].get("description", ""), "tags": version["spec"].get("tags", [])}


def _load_all(paths: tuple[str, ...], *, check_version: bool = True) -> list[Loaded]:
    files: list[Path] = []
    for given in map(Path, paths):
        if given.is_dir():
            files += sorted(p for p in given.rglob("*") if p.suffix in _SUFFIXES and p.is_file())
        else:
            files.append(given)
    if not files:
        raise click.ClickException("no prompt files (*.yaml, *.yml) found")
    return [(path, *_load(path, check_version)) for path in files]


def _load(path: Path, check_version: bool) -> tuple[dict[str, Any] | None, list[str]]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return None, [f"cannot be read: {' '.join(str(exc).split())}"]
    if not isinstance(data, dict):
        return None, ["is not a YAML mapping of prompt fields"]
    problems: list[str] = []
    version, name = str(data.get("version", "")), str(data.get("name", ""))
    if check_version and not VERSION.match(version):
        problems.append(f"version: {version!r} is not MAJOR.MINOR.PATCH (quote it in YAML)")
    # In the prompts/<name>/<version>.yaml layout the path names the version; it must not lie.
    if VERSION.match(path.stem):
        if path.stem != version:
            problems.append(f"file is named {path.name} but declares version {version}")
        if path.parent.name != name:
            problems.append(f"file is in directory {path.parent.name!r} but declares name {name!r}")
    return data, problems


def _order(spec: dict[str, Any]) -> tuple[str, tuple[int, ...]]:
    match = VERSION.match(str(spec.get("version", "")))
    return str(spec.get("name", "")), tuple(int(part) for part in match.groups()) if match else (0, 0, 0)


def _as_file(spec: dict[str, Any]) -> dict[str, Any]:
    # Drop unset optional fields so the YAML reads like a hand-written file; it validates to the same spec.
    data = dict(spec)
    data["settings"] = {key: value for key, value in data["settings"].items() if value is not None}
    if data.get("output_schema") is None:
        data.pop("output_schema", None)
    return data
