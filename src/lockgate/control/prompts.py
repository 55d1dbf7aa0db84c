"""The prompt catalog: versioned prompts per tenant, with semantic versioning enforced on push.

Prompts are written as YAML files in a git-friendly directory (``prompts/<name>/<version>.yaml``) and
pushed into the store. A stored version never changes: pushing it again with the same content is a
no-op, with other content a conflict. A new version must be higher than the latest one and declare at
least the bump its changes need (``lockgate.control.semver``). Every push is audited in the same
transaction that stores it.
"""

from __future__ import annotations

import dataclasses
import difflib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, Engine, Row, select
from sqlalchemy.exc import IntegrityError

from lockgate.control.prompt_spec import (
    Message,
    PromptSettings,
    PromptSpec,
    content_hash,
    lint,
    render,
    template_variables,
)
from lockgate.control.semver import Bump, changes, declared_bump, parse_version
from lockgate.security.audit import AuditEvent, AuditLog
from lockgate.security.permissions import Authorizer
from lockgate.security.rbac import Actor
from lockgate.service_errors import Conflict, Invalid, NotFound
from lockgate.store.tables import prompts
from lockgate.store.tenancy import require_tenant_id

__all__ = [
    "Message",
    "PromptCatalog",
    "PromptSettings",
    "PromptSpec",
    "PromptVersion",
    "content_hash",
    "diff_specs",
    "lint",
    "render",
    "template_variables",
]


@dataclass(frozen=True, slots=True)
class PromptVersion:
    tenant: str
    spec: PromptSpec
    content_hash: str
    created_by: str
    created_at: datetime
    unchanged: bool = False
    """True when a push found exactly this content already stored and wrote nothing."""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return self.spec.version

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "name": self.name,
            "version": self.version,
            "content_hash": self.content_hash,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "spec": self.spec.model_dump(mode="json"),
        }


class PromptCatalog:
    def __init__(self, engine: Engine, audit: AuditLog, authz: Authorizer) -> None:
        self._engine = engine
        self._audit = audit
        self._authz = authz

    def push(self, actor: Actor, tenant: str, spec: PromptSpec) -> PromptVersion:
        resource = _resource(tenant, spec.name, spec.version)
        self._authz.require(actor, "prompts.push", tenant, resource)
        problems = lint(spec)
        if problems:
            raise Invalid(f"prompt {spec.name}@{spec.version} does not pass lint: " + "; ".join(problems))
        digest = content_hash(spec)
        try:
            with self._engine.begin() as connection:
                # Locking the tenant row serialises pushes, so two new versions cannot both pass the
                # bump check against the same latest version.
                tenant_id = require_tenant_id(connection, tenant, lock=True)
                stored = _index(connection, tenant_id, spec.name)
                if spec.version in stored:
                    existing = _version(tenant, _row(connection, stored[spec.version]))
                    if existing.content_hash != digest:
                        raise Conflict(
                            f"prompt {spec.name}@{spec.version} already exists with other content; "
                            "push it as a new version"
                        )
                    return dataclasses.replace(existing, unchanged=True)
                latest = _latest(stored)
                bump = "initial"
                if latest is not None:
                    bump = _check_bump(_version(tenant, _row(connection, stored[latest])).spec, spec).name
                now = datetime.now(UTC)
                connection.execute(
                    prompts.insert().values(
                        id=f"prm_{uuid.uuid4().hex[:24]}",
                        tenant_id=tenant_id,
                        name=spec.name,
                        version=spec.version,
                        spec=spec.model_dump(mode="json"),
                        content_hash=digest,
                        created_by=actor.name,
                        created_at=now,
                    )
                )
                after = {"version": spec.version, "content_hash": digest, "bump": bump.lower()}
                self._audit.append(connection, actor, AuditEvent("prompt.push", resource, after=after))
        except IntegrityError:
            # Another push of the same version raced past the check above; the unique index let one in.
            raise Conflict(f"prompt {spec.name}@{spec.version} was pushed concurrently; try again") from None
        return PromptVersion(tenant, spec, digest, actor.name, now)

    def get(self, actor: Actor, tenant: str, name: str, version: str | None = None) -> PromptVersion:
        """One version, or the highest one when ``version`` is None."""
        self._authz.require(actor, "prompts.get", tenant)
        return self.find(tenant, name, version)

    def find(self, tenant: str, name: str, version: str | None = None) -> PromptVersion:
        """``get`` for a caller already authorised (release creation)."""
        with self._engine.connect() as connection:
            stored = _index(connection, require_tenant_id(connection, tenant), name)
            wanted = version if version is not None else _latest(stored)
            if wanted is None or wanted not in stored:
                label = f"{name}@{version}" if version is not None else name
                raise NotFound(f"no prompt {label} in tenant {tenant!r}")
            return _version(tenant, _row(connection, stored[wanted]))

    def versions(self, actor: Actor, tenant: str, name: str) -> list[PromptVersion]:
        """Every stored version of ``name``, lowest first."""
        self._authz.require(actor, "prompts.versions", tenant)
        with self._engine.connect() as connection:
            stored = _index(connection, require_tenant_id(connection, tenant), name)
            if not stored:
                raise NotFound(f"no prompt {name} in tenant {tenant!r}")
            return [_version(tenant, _row(connection, stored[v])) for v in sorted(stored, key=parse_version)]

    def list(self, actor: Actor, tenant: str) -> list[PromptVersion]:
        """The latest version of every prompt in the tenant, by name."""
        self._authz.require(actor, "prompts.list", tenant)
        with self._engine.connect() as connection:
            tenant_id = require_tenant_id(connection, tenant)
            query = select(prompts.c.name, prompts.c.version, prompts.c.id).where(
                prompts.c.tenant_id == tenant_id
            )
            by_name: dict[str, dict[str, str]] = {}
            for name, version, row_id in connection.execute(query):
                by_name.setdefault(name, {})[version] = row_id
            return [
                _version(tenant, _row(connection, ids[max(ids, key=parse_version)]))
                for _, ids in sorted(by_name.items())
            ]

    def diff(self, actor: Actor, tenant: str, name: str, a: str, b: str) -> str:
        self._authz.require(actor, "prompts.diff", tenant)
        return diff_specs(self.find(tenant, name, a).spec, self.find(tenant, name, b).spec)


def diff_specs(old: PromptSpec, new: PromptSpec) -> str:
    """A unified diff of the message texts, then every change with the bump it needs."""
    text = list(
        difflib.unified_diff(
            _message_lines(old),
            _message_lines(new),
            f"{old.name}@{old.version}",
            f"{new.name}@{new.version}",
            lineterm="",
        )
    )
    found = changes(old, new)
    if not found:
        return f"{old.name}@{old.version} and {new.name}@{new.version} have the same content"
    needed = max(c.bump for c in found)
    summary = [f"{old.version} -> {new.version} needs a {needed.name} bump:"]
    summary += [f"  {c.bump.name:<6} {c.reason}" for c in found]
    return "\n".join([*text, *([""] if text else []), *summary])


def _check_bump(latest: PromptSpec, spec: PromptSpec) -> Bump:
    if parse_version(spec.version) <= parse_version(latest.version):
        raise Invalid(
            f"version {spec.version} of {spec.name} is not higher than the latest version, {latest.version}"
        )
    declared = declared_bump(latest.version, spec.version)
    found = changes(latest, spec)
    needed = max((c.bump for c in found), default=Bump.NONE)
    if declared < needed:
        reasons = "; ".join(c.reason for c in found if c.bump > declared)
        raise Invalid(
            f"version {spec.version} declares a {declared.name} bump but the change from {latest.version} "
            f"needs {needed.name}: {reasons}"
        )
    return declared


def _message_lines(spec: PromptSpec) -> list[str]:
    lines: list[str] = []
    for message in spec.messages:
        lines.append(f"[{message.role}]")
        lines.extend(message.content.splitlines() or [""])
    return lines


def _index(connection: Connection, tenant_id: str, name: str) -> dict[str, str]:
    """Version -> row id of every stored version of ``name``."""
    query = select(prompts.c.version, prompts.c.id).where(
        prompts.c.tenant_id == tenant_id, prompts.c.name == name
    )
    return {str(version): str(row_id) for version, row_id in connection.execute(query)}


def _latest(versions: Iterable[str]) -> str | None:
    return max(versions, key=parse_version, default=None)


def _row(connection: Connection, row_id: str) -> Row[Any]:
    return connection.execute(select(prompts).where(prompts.c.id == row_id)).one()


def _version(tenant: str, row: Row[Any]) -> PromptVersion:
    try:
        spec = PromptSpec.model_validate(row.spec)
    except ValidationError as exc:
        # Stored before a rule it now breaks (e.g. a template the sandbox refuses): a 422, not a 500.
        problem = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise Invalid(
            f"prompt {row.name}@{row.version} as stored is no longer valid: {problem}; push a new version"
        ) from None
    return PromptVersion(
        tenant=tenant,
        spec=spec,
        content_hash=row.content_hash,
        created_by=row.created_by,
        created_at=row.created_at,
    )


def _resource(tenant: str, name: str, version: str) -> str:
    return f"prompt:{tenant}/{name}@{version}"
