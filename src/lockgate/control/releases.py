"""Releases: immutable, content-addressed bundles of everything that shapes a route's behaviour.

A release snapshots the prompt version (messages, variable schema, output schema), the resolved model
(registry name and version, and the gateway model serving it), parameters, the output contract,
retrieval settings, the tool allow-list, the fallback chain and the git commit it was built from. Its
id is the hash of that canonical JSON, so the same bundle always has the same id and any past output can
be traced to exactly what produced it. The tenant is hashed in too, so a release id names one tenant's
release and no other tenant's.

Content is checked when the release is created, so a release that cannot be served never enters the
store: the output contract is a valid JSON Schema, the templates pass the bounded sandbox's rules,
and the model and every fallback are served by this gateway and allowed for the tenant.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import Field
from sqlalchemy import Engine, select

from lockgate.control.prompts import PromptCatalog
from lockgate.control.registry import ModelRegistry
from lockgate.control.release_content import Frozen, ModelSnapshot, PromptSnapshot, ReleaseContent
from lockgate.control.templating import TemplateRejected, check_template
from lockgate.security.audit import AuditEvent, AuditLog
from lockgate.security.permissions import Authorizer
from lockgate.security.rbac import Actor
from lockgate.security.tenants import ServedModels, check_served
from lockgate.service_errors import Invalid, NotFound
from lockgate.store.tables import releases, tenants
from lockgate.store.tenancy import require_tenant_id

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
    tools: list[str] = Field(default_factory=list, max_length=128)
    fallbacks: list[str] = Field(
        default_factory=list, max_length=16, description="Gateway models tried when the model fails"
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
        self,
        engine: Engine,
        audit: AuditLog,
        authz: Authorizer,
        prompts: PromptCatalog,
        registry: ModelRegistry,
        served: ServedModels,
    ) -> None:
        self._engine = engine
        self._audit = audit
        self._authz = authz
        self._prompts = prompts
        self._registry = registry
        self._served = served

    def create(self, actor: Actor, tenant: str, request: ReleaseRequest) -> Release:
        self._authz.require(actor, "releases.create", tenant, f"route:{tenant}/{request.route}")
        content = self.resolve(tenant, request)
        self._check(tenant, content)
        release_id = content.release_id(tenant)
        existing = self.find(tenant, release_id)
        if existing is not None:
            return existing  # content-addressed: the same bundle is the same release
        now = datetime.now(UTC)
        with self._engine.begin() as connection:
            connection.execute(
                releases.insert().values(
                    id=release_id,
                    tenant_id=require_tenant_id(connection, tenant),
                    route=content.route,
                    spec=content.model_dump(mode="json"),
                    created_by=actor.name,
                    created_at=now,
                )
            )
            release = Release(release_id, tenant, content, actor.name, now)
            self._audit.append(
                connection,
                actor,
                AuditEvent("release.create", f"release:{tenant}/{release_id}", after=release.summary()),
            )
        return release

    def resolve(self, tenant: str, request: ReleaseRequest) -> ReleaseContent:
        name, _, version = request.prompt.partition("@")
        prompt = self._prompts.find(tenant, name, version or None)
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

    def get(self, actor: Actor, tenant: str, release_id: str) -> Release:
        self._authz.require(actor, "releases.get", tenant)
        return self.require(tenant, release_id)

    def list(self, actor: Actor, tenant: str, route: str | None = None) -> list[Release]:
        self._authz.require(actor, "releases.list", tenant)
        with self._engine.connect() as connection:
            tenant_id = require_tenant_id(connection, tenant)
            query = select(releases).where(releases.c.tenant_id == tenant_id).order_by(releases.c.created_at)
            if route is not None:
                query = query.where(releases.c.route == route)
            return [_release(row, tenant) for row in connection.execute(query)]

    def require(self, tenant: str, release_id: str) -> Release:
        """The release, for a caller already authorised in ``tenant``; another tenant's is unknown."""
        release = self.find(tenant, release_id)
        if release is None:
            raise NotFound(f"unknown release {release_id!r} in tenant {tenant!r}")
        return release

    def find(self, tenant: str, release_id: str) -> Release | None:
        with self._engine.connect() as connection:
            row = connection.execute(
                select(releases).join(tenants).where(releases.c.id == release_id, tenants.c.name == tenant)
            ).first()
        return _release(row, tenant) if row is not None else None

    def _check(self, tenant: str, content: ReleaseContent) -> None:
        """Refuse content that could not be served, naming the part at fault."""
        if content.output_contract is not None:
            import jsonschema  # on first use: it costs the server about 10 MB where nothing needs it

            try:
                jsonschema.Draft202012Validator.check_schema(content.output_contract)
            except jsonschema.SchemaError as exc:
                raise Invalid(f"output_contract is not a valid JSON Schema: {exc.message}") from None
        for index, message in enumerate(content.prompt.messages, start=1):
            try:
                check_template(message["content"])
            except TemplateRejected as exc:
                raise Invalid(f"prompt message {index} ({message['role']}): {exc}") from None
        models = [content.model.gateway_model, *content.fallbacks]
        check_served(self._served, content.fallbacks, "fallbacks")
        check_served(self._served, [content.model.gateway_model], f"model {content.model.name}")
        self._registry.check_tenant_allows(tenant, models, "release models")


def _release(row: Any, tenant: str) -> Release:
    return Release(
        id=row.id,
        tenant=tenant,
        content=ReleaseContent.model_validate(row.spec),
        created_by=row.created_by,
        created_at=row.created_at,
    )
