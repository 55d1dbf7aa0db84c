"""The control plane of limits and budgets: what a platform admin sets per tenant, and what it has spent.

Rules and budgets (``limits.spec``) are stored per tenant by name; setting one with a name in use
replaces it. Only platform admins set or delete them (a tenant must not raise its own limits); the
tenant's own people read them and the spend of each budget. Every change is audited and bumps
``versions.LIMITS`` in the same transaction, so every gateway worker reloads its copy within a second.

A stored rule or budget keeps its id when it is replaced with the same scope (and, for a budget, the same
period), so its counters and this period's alert carry on; changing the scope or period makes it a new
one (a new id, counters from zero, the old alerts forgotten), since what it counted no longer applies.

**Spend** is what the upstreams billed, as the request log records it: the ``cost_usd`` of every logged
call of the tenant in the period that is not a shadow call (a mirrored call is the platform's
experiment, not the tenant's), whatever its status, since a call that failed or was cut off midway may
still have been billed. Cache hits are logged with cost 0. A call counts in the period it was logged in
(when it finished).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Connection, Engine, Table, delete, func, select

from lockgate.limits.spec import EACH, Budget, LimitRule, period_bounds
from lockgate.security.apikeys import check_team
from lockgate.security.audit import AuditEvent, AuditLog
from lockgate.security.permissions import Authorizer
from lockgate.security.rbac import Actor
from lockgate.security.tenants import ServedModels
from lockgate.service_errors import Invalid, NotFound
from lockgate.store import versions
from lockgate.store.tables import api_keys, budget_alerts, budgets, limit_rules, request_log
from lockgate.store.tenancy import require_tenant_id

Split = Literal["team", "key"]


@dataclass(frozen=True, slots=True)
class RuleRecord:
    id: str
    rule: LimitRule
    updated_by: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class BudgetRecord:
    id: str
    budget: Budget
    updated_by: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Spend:
    subject: str | None
    """The team or key this line is for (a budget's own team or key, or one of ``each``); None: the
    whole tenant."""
    spent_usd: float
    alert_fired_at: datetime | None = None
    """When the soft-cap alert of this line fired in the period (None: it has not)."""


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    record: BudgetRecord
    period_start: datetime
    period_end: datetime
    split: Split | None
    """``team`` or ``key`` for a budget over ``each`` team or key (one line per one that spent)."""
    lines: list[Spend]

    @property
    def soft_cap_usd(self) -> float | None:
        budget = self.record.budget
        return budget.amount_usd * budget.soft_ratio if budget.soft_ratio is not None else None


class LimitService:
    def __init__(self, engine: Engine, audit: AuditLog, authz: Authorizer, served: ServedModels) -> None:
        self._engine = engine
        self._audit = audit
        self._authz = authz
        self._served = served

    # --- limit rules ---------------------------------------------------------------------------------

    def set_rule(self, actor: Actor, tenant: str, rule: LimitRule) -> RuleRecord:
        """Create or replace the tenant's rule named ``rule.name`` (platform admins; audited)."""
        self._authz.require(actor, "limits.set", tenant, f"limit:{tenant}/{rule.name}")
        scope = rule.scope
        if scope.model is not None and scope.model != EACH and scope.model not in set(self._served()):
            offered = ", ".join(sorted(self._served())) or "none"
            raise Invalid(
                f"rule: scope.model: this gateway serves no model {scope.model!r}; it serves {offered}"
            )
        spec: dict[str, Any] = rule.model_dump(mode="json")
        record_id, updated_at = self._set(
            actor, tenant, limit_rules, "lim", "limit", "rule", spec, (scope.key, scope.team)
        )
        return RuleRecord(record_id, rule, actor.name, updated_at)

    def delete_rule(self, actor: Actor, tenant: str, name: str) -> RuleRecord:
        self._authz.require(actor, "limits.delete", tenant, f"limit:{tenant}/{name}")
        row = self._delete(actor, tenant, limit_rules, "limit", "limit rule", name)
        return RuleRecord(row.id, LimitRule.model_validate(row.spec), row.updated_by, row.updated_at)

    def rules(self, actor: Actor, tenant: str) -> list[RuleRecord]:
        """The tenant's rules, by name."""
        self._authz.require(actor, "limits.list", tenant)
        return [
            RuleRecord(row.id, LimitRule.model_validate(row.spec), row.updated_by, row.updated_at)
            for row in self._rows(tenant, limit_rules)
        ]

    # --- budgets -------------------------------------------------------------------------------------

    def set_budget(self, actor: Actor, tenant: str, budget: Budget) -> BudgetRecord:
        """Create or replace the tenant's budget named ``budget.name`` (platform admins; audited)."""
        self._authz.require(actor, "budgets.set", tenant, f"budget:{tenant}/{budget.name}")
        spec: dict[str, Any] = budget.model_dump(mode="json")
        record_id, updated_at = self._set(
            actor,
            tenant,
            budgets,
            "bud",
            "budget",
            "budget",
            spec,
            (budget.scope.key, budget.scope.team),
            same=("scope", "period"),
        )
        return BudgetRecord(record_id, budget, actor.name, updated_at)

    def delete_budget(self, actor: Actor, tenant: str, name: str) -> BudgetRecord:
        """Delete the tenant's budget and the alerts it fired (platform admins; audited)."""
        self._authz.require(actor, "budgets.delete", tenant, f"budget:{tenant}/{name}")
        row = self._delete(actor, tenant, budgets, "budget", "budget", name)
        return BudgetRecord(row.id, Budget.model_validate(row.spec), row.updated_by, row.updated_at)

    def budgets(self, actor: Actor, tenant: str) -> list[BudgetRecord]:
        """The tenant's budgets, by name."""
        self._authz.require(actor, "budgets.list", tenant)
        return [
            BudgetRecord(row.id, Budget.model_validate(row.spec), row.updated_by, row.updated_at)
            for row in self._rows(tenant, budgets)
        ]

    def budget_status(self, actor: Actor, tenant: str, *, at: datetime | None = None) -> list[BudgetStatus]:
        """Each budget of the tenant in the period that contains ``at`` (now): its bounds and what was
        spent in it, per team or key for a budget over ``each``, and whether its soft-cap alert fired."""
        self._authz.require(actor, "budgets.status", tenant)
        at = at or datetime.now(UTC)
        found: list[BudgetStatus] = []
        with self._engine.connect() as connection:
            tenant_id = require_tenant_id(connection, tenant)
            rows = connection.execute(
                select(budgets).where(budgets.c.tenant_id == tenant_id).order_by(budgets.c.name)
            ).all()
            for row in rows:
                record = BudgetRecord(row.id, Budget.model_validate(row.spec), row.updated_by, row.updated_at)
                found.append(_status(connection, tenant_id, record, at))
        return found

    # --- shared --------------------------------------------------------------------------------------

    def _set(
        self,
        actor: Actor,
        tenant: str,
        table: Table,
        id_prefix: str,
        noun: str,
        where: str,
        spec: dict[str, Any],
        scope: tuple[str | None, str | None],
        same: tuple[str, ...] = ("scope",),
    ) -> tuple[str, datetime]:
        name = str(spec["name"])
        key, team = scope
        if team is not None and team != EACH:
            check_team(team, f"{where}: scope.team")
        now = datetime.now(UTC)
        with self._engine.begin() as connection:
            tenant_id = require_tenant_id(connection, tenant, lock=True)
            if key is not None and key != EACH:
                _check_key(connection, tenant_id, tenant, key, where)
            before = connection.execute(
                select(table.c.id, table.c.spec).where(table.c.tenant_id == tenant_id, table.c.name == name)
            ).first()
            values = {"spec": spec, "updated_by": actor.name, "updated_at": now}
            if before is None:
                record_id = _new_id(id_prefix)
                connection.execute(
                    table.insert().values(id=record_id, tenant_id=tenant_id, name=name, **values)
                )
            else:
                # Same scope (and period): the same counters carry on. Otherwise a new one.
                kept = all(before.spec.get(field) == spec.get(field) for field in same)
                record_id = before.id if kept else _new_id(id_prefix)
                if not kept and table is budgets:
                    connection.execute(delete(budget_alerts).where(budget_alerts.c.budget_id == before.id))
                connection.execute(
                    table.update().where(table.c.id == before.id).values(id=record_id, **values)
                )
            versions.bump(connection, versions.LIMITS)
            event = AuditEvent(
                f"{noun}.set",
                f"{noun}:{tenant}/{name}",
                before=before.spec if before is not None else None,
                after={"id": record_id, **spec},
            )
            self._audit.append(connection, actor, event)
        return record_id, now

    def _delete(self, actor: Actor, tenant: str, table: Table, noun: str, what: str, name: str) -> Any:
        with self._engine.begin() as connection:
            tenant_id = require_tenant_id(connection, tenant, lock=True)
            row = connection.execute(
                select(table).where(table.c.tenant_id == tenant_id, table.c.name == name)
            ).first()
            if row is None:
                raise NotFound(f"tenant {tenant!r} has no {what} {name!r}")
            if table is budgets:
                connection.execute(delete(budget_alerts).where(budget_alerts.c.budget_id == row.id))
            connection.execute(delete(table).where(table.c.id == row.id))
            versions.bump(connection, versions.LIMITS)
            event = AuditEvent(f"{noun}.delete", f"{noun}:{tenant}/{name}", before={"id": row.id, **row.spec})
            self._audit.append(connection, actor, event)
        return row

    def _rows(self, tenant: str, table: Table) -> list[Any]:
        with self._engine.connect() as connection:
            tenant_id = require_tenant_id(connection, tenant)
            return list(
                connection.execute(
                    select(table).where(table.c.tenant_id == tenant_id).order_by(table.c.name)
                ).all()
            )


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def _check_key(connection: Connection, tenant_id: str, tenant: str, key: str, where: str) -> None:
    found = connection.execute(
        select(api_keys.c.id).where(api_keys.c.id == key, api_keys.c.tenant_id == tenant_id)
    ).first()
    if found is None:
        raise Invalid(
            f"{where}: scope.key: tenant {tenant!r} has no key {key!r} (give a key id, key_..., from "
            "`lockgate keys list`, or `each`)"
        )


def _status(connection: Connection, tenant_id: str, record: BudgetRecord, at: datetime) -> BudgetStatus:
    budget = record.budget
    start, end = period_bounds(budget.period, at)
    conditions: list[ColumnElement[bool]] = [
        request_log.c.tenant_id == tenant_id,
        request_log.c.created_at >= start,
        request_log.c.created_at < end,
        request_log.c.shadow.is_(False),
    ]
    spent = func.coalesce(func.sum(request_log.c.cost_usd), 0.0)
    alerts = {
        row.scope: row.fired_at
        for row in connection.execute(
            select(budget_alerts.c.scope, budget_alerts.c.fired_at).where(
                budget_alerts.c.budget_id == record.id, budget_alerts.c.period_start == start
            )
        )
    }
    scope = budget.scope
    split: Split | None = "team" if scope.team == EACH else "key" if scope.key == EACH else None
    if split is None:
        subject = scope.team if scope.team is not None else scope.key
        if scope.team is not None:
            conditions.append(request_log.c.team == scope.team)
        elif scope.key is not None:
            conditions.append(request_log.c.key_id == scope.key)
        total = float(connection.execute(select(spent).where(*conditions)).scalar_one())
        fired = min(alerts.values()) if alerts else None
        return BudgetStatus(record, start, end, None, [Spend(subject, total, fired)])
    column = request_log.c.team if split == "team" else request_log.c.key_id
    grouped = connection.execute(
        select(column.label("subject"), spent.label("spent"))
        .where(*conditions, column.is_not(None))
        .group_by(column)
    ).all()
    by_subject = _alerts_by_subject(alerts, split)
    lines = [Spend(row.subject, float(row.spent), by_subject.get(row.subject)) for row in grouped]
    lines.sort(key=lambda line: (-line.spent_usd, line.subject or ""))
    return BudgetStatus(record, start, end, split, lines)


def _alerts_by_subject(alerts: Mapping[str, datetime], split: Split) -> dict[str, datetime]:
    """The alerts of a budget over ``each`` team or key, by team or key. An alert's scope is the split of
    the budget's counter: ``KEY:TEAM:MODEL``, ``*`` where every call shares it."""
    position = 0 if split == "key" else 1
    found: dict[str, datetime] = {}
    for scope, fired_at in alerts.items():
        parts = scope.split(":")
        if len(parts) == 3 and parts[position] != "*":
            found[parts[position]] = fired_at
    return found
