"""Semantic versioning of prompts: which bump a change needs, and why, in plain words.

MAJOR  a caller or consumer can break: a variable removed, renamed, newly required or retyped, a
       constraint tightened, the output schema tightened or a property of it removed.
MINOR  the prompt behaves differently but nothing breaks: an optional variable or output property
       added, a schema loosened, a setting such as the model or temperature changed.
PATCH  only wording: message text, description, tags, schema descriptions.
NONE   identical content.

Schema changes are judged keyword by keyword; a change lockgate cannot classify counts as MAJOR.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

import orjson

from lockgate.control.prompt_spec import VERSION_PATTERN, PromptSpec


class Bump(enum.IntEnum):
    NONE = 0
    PATCH = 1
    MINOR = 2
    MAJOR = 3


@dataclass(frozen=True, slots=True)
class Change:
    bump: Bump
    reason: str


def parse_version(version: str) -> tuple[int, int, int]:
    match = re.match(VERSION_PATTERN, version)
    if match is None:
        raise ValueError(f"{version!r} is not a MAJOR.MINOR.PATCH version")
    return int(match[1]), int(match[2]), int(match[3])


def declared_bump(old_version: str, new_version: str) -> Bump:
    """The bump ``new_version`` declares over ``old_version``; a lower version is an error."""
    old, new = parse_version(old_version), parse_version(new_version)
    if new < old:
        raise ValueError(f"version {new_version} is lower than {old_version}")
    if new[0] > old[0]:
        return Bump.MAJOR
    if new[1] > old[1]:
        return Bump.MINOR
    return Bump.PATCH if new[2] > old[2] else Bump.NONE


def required_bump(old: PromptSpec, new: PromptSpec) -> tuple[Bump, list[str]]:
    """The smallest bump that describes going from ``old`` to ``new``, and every reason for it."""
    found = changes(old, new)
    return max((c.bump for c in found), default=Bump.NONE), [c.reason for c in found]


def changes(old: PromptSpec, new: PromptSpec) -> list[Change]:
    """Every difference in content (the version itself aside), the most severe first."""
    found = [
        *_schema(old.variables, new.variables, _Where("variable", "the variables schema")),
        *_output(old.output_schema, new.output_schema),
        *_settings(old, new),
        *_messages(old, new),
    ]
    if old.description != new.description:
        found.append(Change(Bump.PATCH, "description changed"))
    if old.tags != new.tags:
        found.append(Change(Bump.PATCH, f"tags changed from {_show(old.tags)} to {_show(new.tags)}"))
    return sorted(found, key=lambda c: -c.bump)


@dataclass(frozen=True, slots=True)
class _Where:
    """Names the part of a schema a reason talks about: "variable 'user.name'", "the output schema"."""

    noun: str
    root: str
    path: tuple[str, ...] = ()

    def child(self, name: str) -> _Where:
        return _Where(self.noun, self.root, (*self.path, name))

    def __str__(self) -> str:
        return f"{self.noun} {'.'.join(self.path)!r}" if self.path else self.root


_ANNOTATIONS = {
    "title",
    "description",
    "default",
    "examples",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
}
_LOWER_BOUNDS = {"minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties", "minContains"}
_UPPER_BOUNDS = {"maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties", "maxContains"}
# Keywords that only ever narrow what is valid: dropping one loosens the schema, adding one tightens it.
_CONSTRAINTS = {
    "pattern", "format", "const", "multipleOf", "uniqueItems", "not", "allOf", "anyOf", "oneOf",
    "contains", "propertyNames", "dependentRequired", "dependentSchemas", "unevaluatedProperties",
    "unevaluatedItems",
}  # fmt: skip


def _output(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[Change]:
    if old == new:
        return []
    if old is None:
        return [Change(Bump.MAJOR, "output schema added: answers that were accepted before may be refused")]
    if new is None:
        return [Change(Bump.MAJOR, "output schema removed: callers can no longer rely on the answer's shape")]
    return _schema(old, new, _Where("output property", "the output schema"))


def _schema(old: Any, new: Any, where: _Where) -> list[Change]:
    old, new = _as_dict(old), _as_dict(new)
    if old == new:
        return []
    found: list[Change] = []
    if old.get("properties") != new.get("properties") or old.get("required") != new.get("required"):
        found += _properties(old, new, where)
    for key in sorted((old.keys() | new.keys()) - {"properties", "required"}):
        if old.get(key, _ABSENT) != new.get(key, _ABSENT):
            found += _keyword(key, old.get(key, _ABSENT), new.get(key, _ABSENT), where)
    return found


def _properties(old: dict[str, Any], new: dict[str, Any], where: _Where) -> list[Change]:
    before, after = old.get("properties", {}), new.get("properties", {})
    was_required, now_required = set(old.get("required", [])), set(new.get("required", []))
    removed, added = sorted(before.keys() - after.keys()), sorted(after.keys() - before.keys())
    found: list[Change] = []
    if len(removed) == 1 and len(added) == 1 and before[removed[0]] == after[added[0]]:
        found.append(Change(Bump.MAJOR, f"{where.child(removed[0])} renamed to {added[0]!r}"))
        removed, added = [], []
    found += [Change(Bump.MAJOR, f"{where.child(name)} removed") for name in removed]
    for name in added:
        if name in now_required:
            found.append(Change(Bump.MAJOR, f"required {where.child(name)} added"))
        else:
            found.append(Change(Bump.MINOR, f"optional {where.child(name)} added"))
    for name in sorted(before.keys() & after.keys()):
        found += _schema(before[name], after[name], where.child(name))
    for name in sorted((was_required ^ now_required) - set(removed) - set(added)):
        if name in now_required:
            found.append(Change(Bump.MAJOR, f"{where.child(name)} is now required"))
        else:
            found.append(Change(Bump.MINOR, f"{where.child(name)} is no longer required"))
    return found


def _keyword(key: str, old: Any, new: Any, where: _Where) -> list[Change]:
    if key in _ANNOTATIONS:
        return [Change(Bump.PATCH, f"{where}: {key} changed")]
    if key == "type":
        return [_type(old, new, where)]
    if key == "enum":
        return [_enum(old, new, where)]
    if key == "items":
        return _schema(_true_if_absent(old), _true_if_absent(new), where.child("[]"))
    if key == "additionalProperties":
        old, new = _true_if_absent(old), _true_if_absent(new)
        if new is False:
            return [Change(Bump.MAJOR, f"{where} no longer accepts properties it does not list")]
        if old is False:
            return [Change(Bump.MINOR, f"{where} now accepts properties it does not list")]
        return _schema(old, new, where.child("*"))
    if key in _LOWER_BOUNDS or key in _UPPER_BOUNDS:
        return [_bound(key, old, new, where)]
    if key in _CONSTRAINTS:
        if new is _ABSENT:
            return [Change(Bump.MINOR, f"{where}: {key} {_show(old)} removed, so more values are accepted")]
        return [Change(Bump.MAJOR, f"{where}: {key} is now {_show(new)}, so fewer values may be accepted")]
    return [Change(Bump.MAJOR, f"{where}: {key} changed in a way lockgate cannot prove compatible")]


def _type(old: Any, new: Any, where: _Where) -> Change:
    before, after = _types(old), _types(new)
    if after is None:
        return Change(Bump.MINOR, f"{where} now accepts any type")
    if before is None:
        return Change(Bump.MAJOR, f"{where} must now be {_either(after)}")
    if all(t in after or (t == "integer" and "number" in after) for t in before):
        return Change(Bump.MINOR, f"{where} now also accepts {_either(after - before)}")
    return Change(Bump.MAJOR, f"{where} changed type from {_either(before)} to {_either(after)}")


def _enum(old: Any, new: Any, where: _Where) -> Change:
    if new is _ABSENT:
        return Change(Bump.MINOR, f"{where} no longer limits its values to a list")
    if old is _ABSENT:
        return Change(Bump.MAJOR, f"{where} now only accepts {_show(new)}")
    dropped = [value for value in old if value not in new]
    if dropped:
        return Change(Bump.MAJOR, f"{where} no longer accepts {_show(dropped)}")
    return Change(Bump.MINOR, f"{where} now also accepts {_show([v for v in new if v not in old])}")


def _bound(key: str, old: Any, new: Any, where: _Where) -> Change:
    if old is _ABSENT:
        return Change(Bump.MAJOR, f"{where}: {key} {_show(new)} added, so fewer values are accepted")
    if new is _ABSENT:
        return Change(Bump.MINOR, f"{where}: {key} {_show(old)} removed, so more values are accepted")
    narrower = new > old if key in _LOWER_BOUNDS else new < old
    verb = "raised" if new > old else "lowered"
    bump, effect = (Bump.MAJOR, "fewer") if narrower else (Bump.MINOR, "more")
    return Change(
        bump, f"{where}: {key} {verb} from {_show(old)} to {_show(new)}, so {effect} values are accepted"
    )


def _settings(old: PromptSpec, new: PromptSpec) -> list[Change]:
    before, after = old.settings.model_dump(), new.settings.model_dump()
    return [
        Change(Bump.MINOR, f"settings.{key} changed from {_show(before[key])} to {_show(after[key])}")
        for key in before
        if before[key] != after[key]
    ]


def _messages(old: PromptSpec, new: PromptSpec) -> list[Change]:
    found: list[Change] = []
    for index in range(max(len(old.messages), len(new.messages))):
        number = index + 1
        if index >= len(old.messages):
            found.append(Change(Bump.PATCH, f"message {number} ({new.messages[index].role}) added"))
        elif index >= len(new.messages):
            found.append(Change(Bump.PATCH, f"message {number} ({old.messages[index].role}) removed"))
        else:
            a, b = old.messages[index], new.messages[index]
            if a.role != b.role:
                found.append(Change(Bump.PATCH, f"message {number} role changed from {a.role} to {b.role}"))
            if a.content != b.content:
                found.append(Change(Bump.PATCH, f"message {number} ({b.role}) wording changed"))
    return found


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


_ABSENT: Any = _Absent()


def _as_dict(schema: Any) -> dict[str, Any]:
    # Boolean schemas: true accepts anything (like {}), false accepts nothing (like {"not": {}}).
    if schema is True:
        return {}
    if schema is False:
        return {"not": {}}
    return dict(schema)


def _true_if_absent(value: Any) -> Any:
    return True if value is _ABSENT else value


def _types(value: Any) -> set[str] | None:
    if value is _ABSENT:
        return None
    return {value} if isinstance(value, str) else set(value)


def _either(types: set[str]) -> str:
    return " or ".join(sorted(types))


def _show(value: Any) -> str:
    return "unset" if value is None else orjson.dumps(value).decode()
