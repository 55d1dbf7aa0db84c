"""The gateway's copy of every tenant's limit rules and budgets, swapped whole when the store changes.

Loaded off the request path (at start and whenever ``versions.LIMITS`` moves), so admitting a call reads
only this process's memory. A rule or budget whose stored spec no longer validates is skipped and logged,
never taking the others down with it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Engine, select

from lockgate.limits.spec import Budget, LimitRule
from lockgate.store import versions
from lockgate.store.tables import budgets, limit_rules

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredRule:
    id: str
    rule: LimitRule


@dataclass(frozen=True, slots=True)
class StoredBudget:
    id: str
    budget: Budget


@dataclass(frozen=True, slots=True)
class TenantLimits:
    rules: tuple[StoredRule, ...] = ()
    budgets: tuple[StoredBudget, ...] = ()


NONE = TenantLimits()


class LimitBook:
    def __init__(self) -> None:
        self._tenants: Mapping[str, TenantLimits] = {}
        self.version = -1

    def of(self, tenant_id: str) -> TenantLimits:
        return self._tenants.get(tenant_id, NONE)

    @property
    def budgets(self) -> list[tuple[str, StoredBudget]]:
        """Every (tenant id, budget): what the reconciler keeps in step with the store."""
        return [(tenant, b) for tenant, limits in self._tenants.items() for b in limits.budgets]

    def load(self, engine: Engine) -> None:
        with engine.connect() as connection:
            version = versions.current(connection, versions.LIMITS)
            rule_rows = connection.execute(
                select(limit_rules.c.id, limit_rules.c.tenant_id, limit_rules.c.spec).order_by(
                    limit_rules.c.name
                )
            ).all()
            budget_rows = connection.execute(
                select(budgets.c.id, budgets.c.tenant_id, budgets.c.spec).order_by(budgets.c.name)
            ).all()
        found: dict[str, tuple[list[StoredRule], list[StoredBudget]]] = {}
        for row in rule_rows:
            try:
                rule = LimitRule.model_validate(row.spec)
            except ValueError as exc:
                log.error("limit rule %s is skipped: %s", row.id, exc)
                continue
            found.setdefault(row.tenant_id, ([], []))[0].append(StoredRule(row.id, rule))
        for row in budget_rows:
            try:
                budget = Budget.model_validate(row.spec)
            except ValueError as exc:
                log.error("budget %s is skipped: %s", row.id, exc)
                continue
            found.setdefault(row.tenant_id, ([], []))[1].append(StoredBudget(row.id, budget))
        self._tenants = {t: TenantLimits(tuple(r), tuple(b)) for t, (r, b) in found.items()}
        self.version = version
