"""Load ``lockgate.yaml``: YAML with line numbers, then schema validation, then each provider's settings.

Every problem is reported as ``file:line: path: message`` (``models[2].deployments[0].timeout: must be >
0``). Messages never include the offending value, so a secret pasted in the wrong place stays secret.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lockgate.config.schema import GatewayConfig, LocatedValueError
from lockgate.providers.base import ProviderSettings
from lockgate.providers.registry import UnknownProviderKind, provider_class


@dataclass(frozen=True, slots=True)
class Problem:
    source: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{where}: {self.path or '(top level)'}: {self.message}"


class ConfigError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    gateway: GatewayConfig
    providers: dict[str, ProviderSettings]
    source: str = "<defaults>"


@dataclass(slots=True)
class _Lines:
    by_path: dict[str, int] = field(default_factory=dict)

    def nearest(self, path: str) -> int | None:
        while True:
            if path in self.by_path:
                return self.by_path[path]
            if not path:
                return None
            path = _parent(path)


def load_file(path: str | Path) -> LoadedConfig:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(str(file), None, "", f"cannot read file: {exc.strerror}")]) from None
    return load_text(text, source=str(file))


def load_text(text: str, *, source: str = "<string>") -> LoadedConfig:
    lines = _Lines()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise ConfigError([Problem(source, line, "", f"invalid YAML: {exc.problem}")]) from None
    data = _to_python(node, "", lines) if node is not None else {}
    if not isinstance(data, dict):
        raise ConfigError([Problem(source, 1, "", "the file must hold a mapping at the top level")])
    return load_mapping(data, source=source, lines=lines)


def load_mapping(
    data: dict[str, Any], *, source: str = "<defaults>", lines: _Lines | None = None
) -> LoadedConfig:
    lines = lines or _Lines()
    try:
        gateway = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc, "", source, lines)) from None
    providers: dict[str, ProviderSettings] = {}
    problems: list[Problem] = []
    for name, spec in gateway.providers.items():
        base = f"providers.{name}"
        try:
            settings_class = provider_class(str(spec["kind"])).Settings
        except UnknownProviderKind as exc:
            problems.append(Problem(source, lines.nearest(f"{base}.kind"), f"{base}.kind", str(exc)))
            continue
        except ImportError as exc:
            message = f"provider kind {spec['kind']!r} is not installed ({exc.name})"
            problems.append(Problem(source, lines.nearest(f"{base}.kind"), f"{base}.kind", message))
            continue
        try:
            providers[name] = settings_class.model_validate(spec)
        except ValidationError as exc:
            problems.extend(_problems(exc, base, source, lines))
    if problems:
        raise ConfigError(problems)
    return LoadedConfig(gateway=gateway, providers=providers, source=source)


def _to_python(node: yaml.Node, path: str, lines: _Lines) -> Any:
    lines.by_path.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(_scalar(key_node))
            child = f"{path}.{key}" if path else key
            out[key] = _to_python(value_node, child, lines)
            lines.by_path[child] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, f"{path}[{i}]", lines) for i, item in enumerate(node.value)]
    return _scalar(node)


def _problems(exc: ValidationError, base: str, source: str, lines: _Lines) -> list[Problem]:
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, LocatedValueError):
            path, message = _join(base, cause.path), cause.message
        else:
            path = _join(base, _loc_to_path(error["loc"]))
            message = _message(error["type"], error["msg"], error.get("ctx") or {})
        problems.append(Problem(source, lines.nearest(path), path, message))
    return problems


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not re.fullmatch(r"function-\w+\[.*\]|[a-z_]+\[.*\]", str(part)):
            path = f"{path}.{part}" if path else str(part)
    return path


def _message(kind: str, msg: str, ctx: dict[str, Any]) -> str:
    bounds = {"greater_than": "gt", "greater_than_equal": "ge", "less_than": "lt", "less_than_equal": "le"}
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    if kind in bounds:
        key = bounds[kind]
        return f"must be {symbols[key]} {_number(ctx[key])}"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    return msg.removeprefix("Value error, ")


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _join(base: str, path: str) -> str:
    if not base:
        return path
    if not path:
        return base
    return f"{base}{path}" if path.startswith("[") else f"{base}.{path}"


def _parent(path: str) -> str:
    cut = max(path.rfind("."), path.rfind("["))
    return path[:cut] if cut > 0 else ""


def _scalar(node: yaml.Node) -> Any:
    return yaml.SafeLoader("").construct_object(node, deep=True)
