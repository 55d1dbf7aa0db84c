"""One lockgate installation: its data directory, store, key pepper and the services over them.

The CLI, the gateway and (later) the control API all start from an ``Instance``; none of them holds
business logic of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from sqlalchemy import Engine, make_url

from lockgate.config.loader import LoadedConfig, load_file, load_text
from lockgate.control.environments import Environments
from lockgate.control.plane import ControlPlane
from lockgate.control.prompts import PromptCatalog
from lockgate.control.registry import ModelRegistry
from lockgate.control.releases import ReleaseService
from lockgate.evals.datasets import DatasetService
from lockgate.evals.evidence import EvidenceService
from lockgate.evals.gate import GateService
from lockgate.evals.promotion import GatePromotionGuard
from lockgate.evals.service import EvalService
from lockgate.security.apikeys import IssuedKey, KeyService
from lockgate.security.audit import AuditLog
from lockgate.security.audit_verify import anchor_path, install_anchor_hook
from lockgate.security.pepper import load_pepper
from lockgate.security.rbac import Role
from lockgate.security.signing import load_signer
from lockgate.security.tenants import TenantService
from lockgate.security.users import IssuedToken, UserService
from lockgate.store.database import data_dir, database_url, migrate, open_engine

DEFAULT_TENANT = "default"


@dataclass(frozen=True, slots=True)
class Instance:
    data: Path
    url: str
    engine: Engine
    pepper: bytes

    @property
    def keys(self) -> KeyService:
        return KeyService(self.engine, self.pepper)

    @property
    def tenants(self) -> TenantService:
        return TenantService(self.engine)

    @property
    def audit(self) -> AuditLog:
        return AuditLog(load_signer(self.data))

    @property
    def users(self) -> UserService:
        return UserService(self.engine, self.pepper, self.audit)

    def control(self) -> ControlPlane:
        audit = self.audit
        prompts = PromptCatalog(self.engine, audit)
        registry = ModelRegistry(self.engine, audit)
        releases = ReleaseService(self.engine, audit, prompts, registry)
        environments = Environments(self.engine, audit, releases)
        datasets = DatasetService(self.engine, audit)
        evals = EvalService(self.engine, audit, releases, environments, datasets)
        gates = GateService(self.engine, audit, evals)
        evidence = EvidenceService(self.engine, audit)
        environments.guard = GatePromotionGuard(gates, evidence, evals.store, environments)
        return ControlPlane(
            engine=self.engine,
            audit=audit,
            users=UserService(self.engine, self.pepper, audit),
            tenants=TenantService(self.engine, audit),
            keys=KeyService(self.engine, self.pepper, audit),
            registry=registry,
            prompts=prompts,
            releases=releases,
            environments=environments,
            datasets=datasets,
            evals=evals,
            gates=gates,
            evidence=evidence,
        )

    @property
    def safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)


def open_instance(data: str | Path | None = None, *, upgrade: bool = True) -> Instance:
    directory = data_dir(data)
    url = database_url(directory)
    engine = open_engine(url)
    # After every commit that signs a new audit head, copy it to a file outside the database.
    install_anchor_hook(engine, anchor_path(directory))
    if upgrade:
        migrate(engine)
    return Instance(directory, url, engine, load_pepper(directory))


def load_config(path: str | Path | None) -> LoadedConfig:
    if path is None:
        text = files("lockgate.defaults").joinpath("lockgate.yaml").read_text(encoding="utf-8")
        return load_text(text, source="<embedded defaults>")
    return load_file(path)


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """Secrets created on first start, shown once: an admin API key and the admin's control token."""

    api_key: IssuedKey | None
    control_token: IssuedToken | None


def bootstrap(instance: Instance, config: LoadedConfig) -> Bootstrap:
    """Sync configured tenants; on first start create the default tenant, an admin key and an admin user."""
    tenants = instance.tenants
    for tenant in config.gateway.tenants:
        tenants.ensure(tenant.name, tenant.allowed_models)
    if DEFAULT_TENANT not in {t.name for t in tenants.list()}:
        tenants.create(DEFAULT_TENANT)
    keys, users = instance.keys, instance.users
    api_key = None if keys.has_admin() else keys.create(DEFAULT_TENANT, name="bootstrap admin", role="admin")
    token = None
    if not users.all():
        users.create(None, "admin", {DEFAULT_TENANT: [Role.ADMIN]})
        token = users.issue_token(None, "admin")
    return Bootstrap(api_key, token)
