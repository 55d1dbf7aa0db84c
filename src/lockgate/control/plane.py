"""The control plane's services, wired once over one installation's store and audit log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from lockgate.control.environments import Environments
from lockgate.control.prompts import PromptCatalog
from lockgate.control.registry import ModelRegistry
from lockgate.control.releases import ReleaseService
from lockgate.security.apikeys import KeyService
from lockgate.security.audit import AuditLog
from lockgate.security.tenants import TenantService
from lockgate.security.users import UserService

if TYPE_CHECKING:
    from lockgate.evals.datasets import DatasetService
    from lockgate.evals.evidence import EvidenceService
    from lockgate.evals.gate import GateService
    from lockgate.evals.service import EvalService


@dataclass(frozen=True, slots=True)
class ControlPlane:
    engine: Engine
    audit: AuditLog
    users: UserService
    tenants: TenantService
    keys: KeyService
    registry: ModelRegistry
    prompts: PromptCatalog
    releases: ReleaseService
    environments: Environments
    datasets: DatasetService
    evals: EvalService
    gates: GateService
    evidence: EvidenceService
