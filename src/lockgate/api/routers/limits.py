"""Limit rules and budgets of a tenant (set by platform admins), and what each budget has spent."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter

from lockgate.api.deps import CurrentActor, ServicesDep
from lockgate.limits.service import BudgetRecord, BudgetStatus, RuleRecord
from lockgate.limits.spec import parse_budget, parse_rule
from lockgate.service_errors import Invalid

router = APIRouter(tags=["limits and budgets"])


def rule_view(record: RuleRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        **record.rule.model_dump(mode="json"),
        "updated_by": record.updated_by,
        "updated_at": record.updated_at.isoformat(),
    }


def budget_view(record: BudgetRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        **record.budget.model_dump(mode="json"),
        "updated_by": record.updated_by,
        "updated_at": record.updated_at.isoformat(),
    }


def status_view(status: BudgetStatus, now: datetime) -> dict[str, Any]:
    budget = status.record.budget
    return {
        "name": budget.name,
        "scope": budget.scope.model_dump(mode="json"),
        "period": budget.period,
        "period_start": status.period_start.isoformat(),
        "period_end": status.period_end.isoformat(),
        "resets_in_s": max(0.0, (status.period_end - now).total_seconds()),
        "amount_usd": budget.amount_usd,
        "soft_ratio": budget.soft_ratio,
        "soft_cap_usd": status.soft_cap_usd,
        "split": status.split,
        "spend": [
            {
                "subject": line.subject,
                "spent_usd": line.spent_usd,
                "used": line.spent_usd / budget.amount_usd,
                "alert_fired_at": line.alert_fired_at.isoformat() if line.alert_fired_at else None,
            }
            for line in status.lines
        ],
    }


def _named(kind: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """The body with the path's name; a body naming another is refused."""
    given = body.get("name", name)
    if given != name:
        raise Invalid(f"{kind}: name: the path names {name!r} but the body {given!r}")
    return {**body, "name": name}


@router.get("/tenants/{tenant}/limits", operation_id="limits.list")
def list_rules(tenant: str, services: ServicesDep, actor: CurrentActor) -> list[dict[str, Any]]:
    return [rule_view(r) for r in services.limits.rules(actor, tenant)]


@router.put("/tenants/{tenant}/limits/{name}", operation_id="limits.set")
def set_rule(
    tenant: str, name: str, rule: dict[str, Any], services: ServicesDep, actor: CurrentActor
) -> dict[str, Any]:
    """Create or replace the rule ``name`` (scope and limits; docs/quotas-and-budgets.md)."""
    parsed = parse_rule(_named("rule", name, rule), "rule")
    return rule_view(services.limits.set_rule(actor, tenant, parsed))


@router.delete("/tenants/{tenant}/limits/{name}", operation_id="limits.delete")
def delete_rule(tenant: str, name: str, services: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    return rule_view(services.limits.delete_rule(actor, tenant, name))


@router.get("/tenants/{tenant}/budgets", operation_id="budgets.list")
def list_budgets(tenant: str, services: ServicesDep, actor: CurrentActor) -> list[dict[str, Any]]:
    return [budget_view(b) for b in services.limits.budgets(actor, tenant)]


@router.get("/tenants/{tenant}/budgets/status", operation_id="budgets.status")
def budget_status(tenant: str, services: ServicesDep, actor: CurrentActor) -> list[dict[str, Any]]:
    """Each budget in its current period: spend (per team or key for `each`), soft cap, alerts."""
    now = datetime.now(UTC)
    return [status_view(s, now) for s in services.limits.budget_status(actor, tenant, at=now)]


@router.put("/tenants/{tenant}/budgets/{name}", operation_id="budgets.set")
def set_budget(
    tenant: str, name: str, budget: dict[str, Any], services: ServicesDep, actor: CurrentActor
) -> dict[str, Any]:
    """Create or replace the budget ``name`` (scope, period, amount_usd, soft_ratio)."""
    parsed = parse_budget(_named("budget", name, budget), "budget")
    return budget_view(services.limits.set_budget(actor, tenant, parsed))


@router.delete("/tenants/{tenant}/budgets/{name}", operation_id="budgets.delete")
def delete_budget(tenant: str, name: str, services: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    return budget_view(services.limits.delete_budget(actor, tenant, name))
