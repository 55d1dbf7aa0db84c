"""The model registry: which models a tenant may put into a release, and what is known about each.

A model is registered once per ``name:version`` with a card (what it is, where it comes from, what it
may be used for) and then moves between ``active``, ``deprecated`` and ``retired``; retirement is final.
Aliases such as ``support-llm@champion`` point at one version and can be moved. A self-hosted artifact
given as a ``file://`` URI is hashed before it is accepted, so the registry never vouches for a file
it has not seen. Every change is audited in the same transaction as the change itself.
"""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy import Connection, Engine, Row, select, update
from sqlalchemy.exc import IntegrityError

from lockgate.digests import file_sha256
from lockgate.security.audit import AuditEvent, AuditLog
from lockgate.security.permissions import Authorizer
from lockgate.security.rbac import Actor
from lockgate.security.tenants import ServedModels, check_served
from lockgate.service_errors import Conflict, Invalid, NotFound
from lockgate.store.tables import model_aliases, registry_models, tenants
from lockgate.store.tenancy import require_tenant_id

ALIAS = re.compile(r"^[a-z][a-z0-9_-]*$")
Sha256 = Annotated[str, StringConstraints(to_lower=True, pattern=r"^[0-9a-fA-F]{64}$")]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
SUMMARY = {"gateway_model", "provider", "artifact_uri", "sha256", "license", "owner_team"}


class ModelStatus(enum.StrEnum):
    ACTIVE = "active"
    DEPRECATED = "deprecated"
    RETIRED = "retired"


class TrainingSpec(BaseModel):
    """How a fine-tune was made, so it can be reproduced and its lineage traced."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_model: Text
    method: Literal["lora", "qlora", "full"]
    rank: int | None = Field(default=None, gt=0)
    alpha: float | None = Field(default=None, gt=0)
    target_modules: list[Text] = Field(default_factory=list)
    dataset_sha256: Sha256 | None = None
    epochs: int | None = Field(default=None, gt=0)
    learning_rate: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _adapter_parameters(self) -> Self:
        if self.method in ("lora", "qlora") and (self.rank is None or self.alpha is None):
            raise ValueError(f"a {self.method} fine-tune needs both rank and alpha")
        if self.method == "full" and (self.rank is not None or self.alpha is not None):
            raise ValueError("rank and alpha apply only to lora and qlora fine-tunes")
        return self


class ModelCard(BaseModel):
    """What a registered model is; ``gateway_model`` is the public model name that serves it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=200)]
    version: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=50)]
    gateway_model: Text
    provider: Text | None = None
    artifact_uri: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9+.-]*://\S+$")] | None = None
    sha256: Sha256 | None = None
    license: Text
    intended_use: Text
    out_of_scope_uses: list[Text] = Field(default_factory=list)
    constraints: list[Text] = Field(default_factory=list)
    context_window: int | None = Field(default=None, gt=0)
    input_price_per_1m: float | None = Field(default=None, ge=0)
    output_price_per_1m: float | None = Field(default=None, ge=0)
    owner_team: Text
    training: TrainingSpec | None = None

    @field_validator("name", "version", mode="before")
    @classmethod
    def _unquoted_yaml(cls, value: object) -> object:
        # YAML reads `version: 2025-06-01` as a date and `version: 3` as a number; both mean the text.
        # A float is refused: `1.10` has already become 1.1, and a guess would register the wrong version.
        if isinstance(value, float):
            raise ValueError(f"quote it: {value!r} was read as a number")
        if isinstance(value, date | int) and not isinstance(value, bool):
            return value.isoformat() if isinstance(value, date) else str(value)
        return value

    @model_validator(mode="after")
    def _local_artifacts_are_pinned(self) -> Self:
        if self.artifact_uri is not None and self.artifact_uri.startswith("file:"):
            artifact_path(self.artifact_uri)
            if self.sha256 is None:
                raise ValueError("a file:// artifact needs its sha256")
        return self


def parse_card(data: object) -> ModelCard:
    """Validate a card from YAML or JSON, with every problem in one readable ``Invalid`` message."""
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        found = [(".".join(map(str, e["loc"])), e["msg"].removeprefix("Value error, ")) for e in exc.errors()]
        problems = "; ".join(f"{where}: {message}" if where else message for where, message in found)
        raise Invalid(f"invalid model card: {problems}") from None


def artifact_path(uri: str) -> Path:
    """The local path of a ``file://`` URI; only absolute paths on this host are accepted."""
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise ValueError(f"{uri} is not an absolute file URI such as file:///models/model.gguf")
    return Path(unquote(parts.path))


@dataclass(frozen=True, slots=True)
class RegisteredModel:
    tenant: str
    card: ModelCard
    status: ModelStatus
    created_by: str
    created_at: datetime
    aliases: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def version(self) -> str:
        return self.card.version

    @property
    def reference(self) -> str:
        return f"{self.card.name}:{self.card.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "name": self.name,
            "version": self.version,
            "status": self.status.value,
            "aliases": list(self.aliases),
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "card": self.card.model_dump(mode="json"),
        }


class ModelRegistry:
    def __init__(self, engine: Engine, audit: AuditLog, authz: Authorizer, served: ServedModels) -> None:
        self._engine = engine
        self._audit = audit
        self._authz = authz
        self._served = served

    def register(self, actor: Actor, tenant: str, card: ModelCard) -> RegisteredModel:
        """Register a version; its gateway model must be served here and allowed for the tenant."""
        summary = {"status": ModelStatus.ACTIVE.value} | card.model_dump(mode="json", include=SUMMARY)
        event = AuditEvent("model.register", _resource(tenant, card.name, card.version), after=summary)
        self._authz.require(actor, "models.register", tenant, event.resource)
        check_served(self._served, [card.gateway_model], "gateway_model")
        self.check_tenant_allows(tenant, [card.gateway_model], "gateway_model")
        _verify_artifact(card)
        try:
            with self._engine.begin() as connection:
                tenant_id = require_tenant_id(connection, tenant)
                if _find(connection, tenant_id, card.name, card.version) is not None:
                    raise Conflict(f"model {card.name}:{card.version} already exists in tenant {tenant!r}")
                connection.execute(
                    registry_models.insert().values(
                        id=f"mdl_{uuid.uuid4().hex[:24]}",
                        tenant_id=tenant_id,
                        name=card.name,
                        version=card.version,
                        status=ModelStatus.ACTIVE.value,
                        card=card.model_dump(mode="json"),
                        created_by=actor.name,
                        created_at=datetime.now(UTC),
                    )
                )
                self._audit.append(connection, actor, event)
        except IntegrityError:
            # Two registrations raced past the check above; the unique index let one through.
            raise Conflict(f"model {card.name}:{card.version} already exists in tenant {tenant!r}") from None
        return self._get(tenant, card.name, card.version)

    def get(self, actor: Actor, tenant: str, name: str, version: str) -> RegisteredModel:
        self._authz.require(actor, "models.get", tenant)
        return self._get(tenant, name, version)

    def resolve(self, actor: Actor, tenant: str, reference: str) -> RegisteredModel:
        self._authz.require(actor, "models.resolve", tenant)
        return self._resolve(tenant, reference)

    def check_tenant_allows(self, tenant: str, models: list[str], what: str) -> None:
        """Refuse models outside ``tenant``'s allow-list (no list: every served model is allowed)."""
        with self._engine.connect() as connection:
            allowed = connection.execute(
                select(tenants.c.allowed_models).where(tenants.c.name == tenant)
            ).scalar()
        if allowed is None:
            return
        outside = sorted(set(models) - set(allowed))
        if outside:
            raise Invalid(f"{what}: tenant {tenant!r} may not use {', '.join(outside)}")

    def _get(self, tenant: str, name: str, version: str) -> RegisteredModel:
        with self._engine.connect() as connection:
            return _model(connection, tenant, _row(connection, tenant, name, version))

    def _resolve(self, tenant: str, reference: str) -> RegisteredModel:
        """``name@alias``, ``name:version``, or ``name`` for its most recently registered active version."""
        if "@" in reference:
            name, alias = reference.split("@", 1)
            a = model_aliases.c
            with self._engine.connect() as connection:
                query = select(a.version).where(
                    a.tenant_id == require_tenant_id(connection, tenant), a.name == name, a.alias == alias
                )
                version = connection.execute(query).scalar()
            if version is None:
                raise NotFound(f"no alias {reference} in tenant {tenant!r}")
            return self._get(tenant, name, str(version))
        if ":" in reference:
            name, version = reference.split(":", 1)
            return self._get(tenant, name, version)
        active = [m for m in self._list(tenant, reference) if m.status is ModelStatus.ACTIVE]
        if not active:
            hint = f"name a version as {reference}:VERSION"
            raise NotFound(f"model {reference} has no active version in tenant {tenant!r}; {hint}")
        return active[-1]

    def _list(self, tenant: str, name: str | None = None) -> list[RegisteredModel]:
        t = registry_models.c
        with self._engine.connect() as connection:
            query = select(registry_models).where(t.tenant_id == require_tenant_id(connection, tenant))
            if name is not None:
                query = query.where(t.name == name)
            rows = connection.execute(query.order_by(t.name, t.created_at, t.version)).all()
            return [_model(connection, tenant, row) for row in rows]

    def set_alias(self, actor: Actor, tenant: str, name: str, alias: str, version: str) -> RegisteredModel:
        event = AuditEvent("model.alias", _resource(tenant, name, version), after={"alias": alias})
        self._authz.require(actor, "models.alias", tenant, event.resource)
        if not ALIAS.match(alias):
            raise Invalid(f"alias {alias!r} must start with a letter: lower-case letters, digits, '_', '-'")
        a = model_aliases.c
        try:
            with self._engine.begin() as connection:
                target = _row(connection, tenant, name, version, lock=True)
                if target.status == ModelStatus.RETIRED:
                    raise Invalid(f"model {name}:{version} is retired; an alias cannot point at it")
                key = (a.tenant_id == target.tenant_id, a.name == name, a.alias == alias)
                previous = connection.execute(select(a.version).where(*key)).scalar()
                values = {"version": version, "updated_at": datetime.now(UTC)}
                if previous is None:
                    connection.execute(
                        model_aliases.insert().values(
                            tenant_id=target.tenant_id, name=name, alias=alias, **values
                        )
                    )
                else:
                    connection.execute(update(model_aliases).where(*key).values(**values))
                before = {"alias": alias, "version": previous} if previous is not None else None
                moved = AuditEvent(event.action, event.resource, before, {"alias": alias, "version": version})
                self._audit.append(connection, actor, moved)
        except IntegrityError:
            # Two first-time settings of the same alias raced; the primary key let one through.
            raise Conflict(f"alias {name}@{alias} was set concurrently; try again") from None
        return self._get(tenant, name, version)

    def set_status(
        self, actor: Actor, tenant: str, name: str, version: str, status: ModelStatus
    ) -> RegisteredModel:
        """Deprecate or reactivate (editor), or retire for good (admin)."""
        operation = "models.retire" if status is ModelStatus.RETIRED else "models.set_status"
        event = AuditEvent("model.status", _resource(tenant, name, version), after={"status": status.value})
        self._authz.require(actor, operation, tenant, event.resource)
        with self._engine.begin() as connection:
            row = _row(connection, tenant, name, version, lock=True)
            current = ModelStatus(row.status)
            if current is status:
                return _model(connection, tenant, row)
            if current is ModelStatus.RETIRED:
                raise Invalid(f"model {name}:{version} is retired; retirement is final")
            connection.execute(
                update(registry_models).where(registry_models.c.id == row.id).values(status=status.value)
            )
            changed = AuditEvent(event.action, event.resource, {"status": current.value}, event.after)
            self._audit.append(connection, actor, changed)
        return self._get(tenant, name, version)

    def ensure_usable(self, tenant: str, reference: str) -> RegisteredModel:
        """The model a release may use (for a caller already authorised); deprecated models pass."""
        model = self._resolve(tenant, reference)
        if model.status is ModelStatus.RETIRED:
            raise Invalid(f"model {model.reference} is retired and cannot enter a new release")
        return model

    def list(self, actor: Actor, tenant: str, name: str | None = None) -> list[RegisteredModel]:
        """Models by name, each name's versions oldest first."""
        self._authz.require(actor, "models.list", tenant)
        return self._list(tenant, name)


def _verify_artifact(card: ModelCard) -> None:
    if card.artifact_uri is None or not card.artifact_uri.startswith("file:"):
        return
    path = artifact_path(card.artifact_uri)
    if not path.is_file():
        raise Invalid(f"artifact {card.artifact_uri} does not exist on this host")
    actual = file_sha256(path)
    if actual != card.sha256:
        raise Invalid(f"artifact {card.artifact_uri} has sha256 {actual}, but the card says {card.sha256}")


def _find(
    connection: Connection, tenant_id: str, name: str, version: str, *, lock: bool = False
) -> Row[Any] | None:
    t = registry_models.c
    query = select(registry_models).where(t.tenant_id == tenant_id, t.name == name, t.version == version)
    # A status change reads then writes: the row lock stops two of them from interleaving.
    return connection.execute(query.with_for_update() if lock else query).first()


def _row(connection: Connection, tenant: str, name: str, version: str, *, lock: bool = False) -> Row[Any]:
    row = _find(connection, require_tenant_id(connection, tenant), name, version, lock=lock)
    if row is None:
        raise NotFound(f"no model {name}:{version} in tenant {tenant!r}")
    return row


def _model(connection: Connection, tenant: str, row: Row[Any]) -> RegisteredModel:
    a = model_aliases.c
    query = select(a.alias).where(a.tenant_id == row.tenant_id, a.name == row.name, a.version == row.version)
    aliases = connection.execute(query.order_by(a.alias)).scalars()
    return RegisteredModel(
        tenant=tenant,
        card=ModelCard.model_validate(row.card),
        status=ModelStatus(row.status),
        created_by=row.created_by,
        created_at=row.created_at,
        aliases=tuple(aliases),
    )


def _resource(tenant: str, name: str, version: str) -> str:
    return f"model:{tenant}/{name}:{version}"
