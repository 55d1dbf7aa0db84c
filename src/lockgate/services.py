"""The service layer, built one way: every service over one store, one audit log, one authorizer.

The REST API is a thin shell over these services and the CLI a client of that API; the server's own
work (first start, configuration sync, the eval worker) calls them with the ``SYSTEM`` actor. Every
public operation takes the acting ``Actor`` and checks it against ``security.permissions``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from lockgate.config.loader import LoadedConfig
from lockgate.control.environments import Environments
from lockgate.control.prompts import PromptCatalog
from lockgate.control.registry import ModelRegistry
from lockgate.control.releases import ReleaseService
from lockgate.evals.datasets import DatasetService
from lockgate.evals.service import EvalService
from lockgate.gates.evidence import EvidenceService
from lockgate.gates.gate import GateService, GateSettings
from lockgate.gates.promotion import GatePromotionGuard
from lockgate.instance import Instance
from lockgate.limits.service import LimitService
from lockgate.rollouts.service import RolloutService
from lockgate.security.apikeys import KeyService
from lockgate.security.audit import AuditLog
from lockgate.security.audit_trail import AuditTrail
from lockgate.security.permissions import Authorizer
from lockgate.security.tenants import TenantService
from lockgate.security.tokens import TokenService
from lockgate.security.users import UserService


@dataclass(frozen=True, slots=True)
class Services:
    engine: Engine
    audit: AuditLog
    authz: Authorizer
    tenants: TenantService
    keys: KeyService
    tokens: TokenService
    users: UserService
    registry: ModelRegistry
    prompts: PromptCatalog
    releases: ReleaseService
    environments: Environments
    datasets: DatasetService
    evals: EvalService
    gates: GateService
    evidence: EvidenceService
    rollouts: RolloutService
    trail: AuditTrail
    limits: LimitService


def build_services(instance: Instance, config: LoadedConfig) -> Services:
    engine, pepper = instance.engine, instance.pepper
    served_models = frozenset(model.name for model in config.gateway.models)

    def served() -> frozenset[str]:
        return served_models

    audit = AuditLog(instance.signer)
    authz = Authorizer(engine, audit)
    tokens = TokenService(engine, pepper, audit, authz)
    prompts = PromptCatalog(engine, audit, authz)
    registry = ModelRegistry(engine, audit, authz, served)
    releases = ReleaseService(engine, audit, authz, prompts, registry, served)
    environments = Environments(engine, audit, authz, releases)
    datasets = DatasetService(engine, audit, authz)
    evals = EvalService(engine, audit, authz, releases, environments, datasets)
    control = config.gateway.control
    gates = GateService(
        engine, audit, authz, evals, GateSettings(control.gates_required, tuple(control.opa_urls))
    )
    evidence = EvidenceService(engine, audit, authz)
    environments.guard = GatePromotionGuard(gates, evidence, evals.store, environments)
    rollouts = RolloutService(engine, audit, authz, releases, environments, evidence)
    environments.starter = rollouts
    return Services(
        engine=engine,
        audit=audit,
        authz=authz,
        tenants=TenantService(engine, audit, authz, served),
        keys=KeyService(engine, pepper, audit, authz, served),
        tokens=tokens,
        users=UserService(engine, pepper, audit, authz, tokens),
        registry=registry,
        prompts=prompts,
        releases=releases,
        environments=environments,
        datasets=datasets,
        evals=evals,
        gates=gates,
        evidence=evidence,
        rollouts=rollouts,
        trail=AuditTrail(engine, audit, authz, instance.anchor),
        limits=LimitService(engine, audit, authz, served),
    )
