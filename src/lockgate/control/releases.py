"""Releases: immutable, content-addressed bundles of everything that shapes a route's behaviour.

A release snapshots the prompt version (messages, variable schema, output schema), the resolved model
(registry name and version, and the gateway model serving it), parameters, the output contract,
retrieval settings, the tool allow-list, the fallback chain and the git commit it was built from. Its
id is the hash of that canonical JSON, so the same bundle always has the same id and any past output can
be traced to exactly what produced it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import Field
from sqlalchemy import Engine, select

from lockgate.control.bundle import Frozen, ModelSnapshot, PromptSnapshot, ReleaseContent
from lockgate.control.errors import NotFound
from lockgate.control.prompts import PromptCatalog
from lockgate.control.registry import ModelRegistry
from lockgate.security.audit import AuditEvent, AuditLog
from lockgate.security.rbac import Actor, Role
from lockgate.security.tenants import TenantService
from lockgate.store.tables import releases, tenants

ROUTE_NAME = r"^[a-z0-9][a-z0-9_.-]*$"


class ReleaseRequest(Frozen):
    """What a person asks for; references are resolved and snapshotted into ``ReleaseContent``."""

    route: str = Field(pattern=ROUTE_NAME)
    prompt: str = Field(description="name@version, e.g. support-answer@1.2.0")
    model: str | None = Field(
        default=None, description="Registry reference; default: the prompt's settings.model"
    )
    parameters: dict[str, Any] = Field(default_factory=dict, description="Overrides of the prompt's settings")
    output_contract: dict[str, Any] | None = Field(
        default=None, description="Default: the prompt's output_schema"
    )
    retrieval: dict[str, Any] = Field(default_factory=dict)
    tools: list[str] = Field(default_factory=list)
    fallbacks: list[str] = Field(
        default_factory=list, description="Gateway models tried when the model fails"
    )
    git_commit: str | None = None


@dataclass(frozen=True, slots=True)
class Release:
    id: str
    tenant: str
    content: ReleaseContent
    created_by: str
    created_at: datetime

    def summary(self) -> dict[str, Any]:
        c = self.content
        return {
            "id": self.id,
            "route": c.route,
            "prompt": f"{c.prompt.name}@{c.prompt.version}",
            "model": f"{c.model.name}:{c.model.version}",
            "git_commit": c.git_commit,
        }


class ReleaseService:
    def __init__(
        self, engine: Engine, audit: AuditLog, prompts: PromptCatalog, registry: ModelRegistry
    ) -> None:
        self._engine = engine
        self._audit = audit
        self._prompts = prompts
        self._registry = registry

    def create(self, actor: Actor, tenant: str, request: ReleaseRequest) -> Release:
        event = AuditEvent("release.create", f"route:{tenant}/{request.route}")
        self._audit.authorize(self._engine, actor, tenant, Role.EDITOR, event)
        content = self.resolve(tenant, request)
        release_id = content.release_id
        existing = self._find(release_id)
        if existing is not None:
            return existing  # content-addressed: the same bundle is the same release
        with self._engine.begin() as connection:
            tenant_row = TenantService.find(connection, tenant)
            if tenant_row is None:
                raise NotFound(f"unknown tenant {tenant!r}")
            connection.execute(
                releases.insert().values(
                    id=release_id,
                    tenant_id=tenant_row.id,
                    route=content.route,
                    spec=content.model_dump(mode="json"),
                    created_by=actor.name,
                    created_at=datetime.now(UTC),
                )
            )
            release = Release(release_id, tenant, content, actor.name, datetime.now(UTC))
            self._audit.append(
                connection,
                actor,
                AuditEvent("release.create", f"release:{tenant}/{release_id}", after=release.summary()),
            )
        return release

    def resolve(self, tenant: str, request: ReleaseRequest) -> ReleaseContent:
        name, _, version = request.prompt.partition("@")
        prompt = self._prompts.get(tenant, name, version or None)
        spec = prompt.spec
        reference = request.model or spec.settings.model
        model = self._registry.ensure_usable(tenant, reference)
        settings = spec.settings.model_dump(exclude_none=True, exclude={"model"})
        return ReleaseContent(
            route=request.route,
            prompt=PromptSnapshot(
                name=spec.name,
                version=spec.version,
                content_hash=prompt.content_hash,
                messages=[{"role": m.role, "content": m.content} for m in spec.messages],
                variables=spec.variables,
            ),
            model=ModelSnapshot(
                reference=reference,
                name=model.card.name,
                version=model.card.version,
                gateway_model=model.card.gateway_model,
            ),
            parameters={**settings, **request.parameters},
            output_contract=request.output_contract
            if request.output_contract is not None
            else spec.output_schema,
            retrieval=request.retrieval,
            tools=request.tools,
            fallbacks=request.fallbacks,
            git_commit=request.git_commit,
        )

    def get(self, tenant: str, release_id: str) -> Release:
        release = self._find(release_id)
        if release is None or release.tenant != tenant:
            raise NotFound(f"unknown release {release_id!r}")
        return release

    def list(self, tenant: str, route: str | None = None) -> list[Release]:
        with self._engine.connect() as connection:
            tenant_row = TenantService.find(connection, tenant)
            if tenant_row is None:
                raise NotFound(f"unknown tenant {tenant!r}")
            query = (
                select(releases).where(releases.c.tenant_id == tenant_row.id).order_by(releases.c.created_at)
            )
            if route is not None:
                query = query.where(releases.c.route == route)
            return [_release(row, tenant) for row in connection.execute(query)]

    def _find(self, release_id: str) -> Release | None:
        with self._engine.connect() as connection:
            row = connection.execute(
                select(releases, tenants.c.name.label("tenant_name"))
                .join(tenants)
                .where(releases.c.id == release_id)
            ).first()
        return _release(row, row.tenant_name) if row is not None else None


def _release(row: Any, tenant: str) -> Release:
    return Release(
        id=row.id,
        tenant=tenant,
        content=ReleaseContent.model_validate(row.spec),
        created_by=row.created_by,
        created_at=row.created_at,
    )
