"""The control plane of limits and budgets, on SQLite and PostgreSQL: platform admins set, replace and
delete a tenant's rules and budgets (audited, and every change makes the gateways reload); references to
keys and models are checked; a tenant's own people read them, and what each budget has spent this period,
from the request log."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from lockgate.limits.service import BudgetStatus
from lockgate.limits.spec import Budget, LimitRule, parse_budget, parse_rule
from lockgate.security.rbac import SYSTEM, Actor, Role
from lockgate.service_errors import Forbidden, Invalid, NotFound
from lockgate.services import Services
from lockgate.store import versions
from lockgate.store.tables import audit_log, budget_alerts, request_log
from tests.support.people import person

AT = datetime(2026, 3, 18, 12, 0, tzinfo=UTC)  # a Wednesday; its week began on Monday the 16th


@dataclass
class Site:
    services: Services
    platform: Actor
    """Admin of `default` (the platform) and of acme, which they created."""
    olga: Actor
    """acme's own admin: administers acme's keys, not its limits."""
    vic: Actor
    """A viewer of acme."""
    acme_id: str

    def rule(self, **fields: Any) -> LimitRule:
        return parse_rule({"name": "per-key", "requests_per_minute": 60, **fields}, "rule")

    def budget(self, **fields: Any) -> Budget:
        return parse_budget({"name": "monthly", "period": "month", "amount_usd": 100, **fields}, "budget")

    def limits_version(self) -> int:
        with self.services.engine.connect() as connection:
            return versions.current(connection, versions.LIMITS)

    def audited(self, action: str) -> list[Any]:
        with self.services.engine.connect() as connection:
            return list(
                connection.execute(
                    sa.select(audit_log).where(audit_log.c.action == action).order_by(audit_log.c.seq)
                ).all()
            )

    def key(self, team: str | None = None) -> str:
        return self.services.keys.create(self.olga, "acme", team=team).info.id

    def log(self, cost: float, *, at: datetime = AT, tenant_id: str | None = None, **fields: Any) -> None:
        """One row of the request log, as the gateway writes it."""
        row = {
            "id": f"req_{uuid.uuid4().hex}",
            "created_at": at,
            "tenant_id": tenant_id or self.acme_id,
            "endpoint": "chat.completions",
            "model": "m",
            "stream": False,
            "status_code": 200,
            "latency_ms": 10.0,
            "input_tokens": 10,
            "output_tokens": 10,
            "usage_estimated": False,
            "cost_usd": cost,
            "attempts": 1,
            "fallback": False,
            "shadow": False,
            **fields,
        }
        with self.services.engine.begin() as connection:
            connection.execute(request_log.insert().values(**row))


@pytest.fixture
def site(services: Services, admin: Actor, admin_token: str) -> Site:
    services.tenants.create(admin, "acme")
    platform = services.tokens.authenticate(admin_token)  # now admin of acme too, as its creator
    olga = person(services, platform, "olga", Role.ADMIN, tenant="acme")
    vic = person(services, platform, "vic", Role.VIEWER, tenant="acme")
    return Site(services, platform, olga, vic, services.tenants.get("acme").id)


# --- rules -----------------------------------------------------------------------------------------------


def test_a_platform_admin_sets_replaces_and_deletes_rules(site: Site) -> None:
    limits = site.services.limits
    version = site.limits_version()
    created = limits.set_rule(site.platform, "acme", site.rule(scope={"key": "each"}))
    assert created.id.startswith("lim_")
    assert created.updated_by == "admin"
    assert site.limits_version() == version + 1

    # Same name, same scope: replaced in place (its counters carry on); the viewer sees the new limits.
    raised = limits.set_rule(
        site.platform, "acme", site.rule(scope={"key": "each"}, requests_per_minute=600, concurrent=4)
    )
    assert raised.id == created.id
    [listed] = limits.rules(site.vic, "acme")
    assert (listed.id, listed.rule.requests_per_minute, listed.rule.concurrent) == (created.id, 600, 4)
    assert site.limits_version() == version + 2

    # Another scope is another rule under the same name: a new id, so no counter carries over.
    narrowed = limits.set_rule(site.platform, "acme", site.rule(scope={"model": "m"}))
    assert narrowed.id != created.id
    limits.set_rule(site.platform, "acme", site.rule(name="big-calls", max_tokens=4096))
    assert [r.rule.name for r in limits.rules(site.vic, "acme")] == ["big-calls", "per-key"]

    deleted = limits.delete_rule(site.platform, "acme", "per-key")
    assert deleted.rule.scope.model == "m"
    assert [r.rule.name for r in limits.rules(site.vic, "acme")] == ["big-calls"]
    assert site.limits_version() == version + 5
    with pytest.raises(NotFound, match="tenant 'acme' has no limit rule 'per-key'"):
        limits.delete_rule(site.platform, "acme", "per-key")
    assert site.limits_version() == version + 5

    sets = site.audited("limit.set")
    assert [(e.actor, e.resource, e.outcome) for e in sets] == [
        ("admin", "limit:acme/per-key", "success")
    ] * 3 + [("admin", "limit:acme/big-calls", "success")]
    assert orjson.loads(sets[1].before)["requests_per_minute"] == 60
    assert orjson.loads(sets[1].after)["requests_per_minute"] == 600
    [removal] = site.audited("limit.delete")
    assert orjson.loads(removal.before)["scope"]["model"] == "m"


def test_rules_are_per_tenant(site: Site) -> None:
    limits = site.services.limits
    limits.set_rule(site.platform, "acme", site.rule())
    limits.set_rule(site.platform, "default", site.rule(requests_per_minute=5))
    assert [r.rule.requests_per_minute for r in limits.rules(site.vic, "acme")] == [60]
    assert [r.rule.requests_per_minute for r in limits.rules(site.platform, "default")] == [5]
    with pytest.raises(NotFound, match="unknown tenant 'nope'"):
        limits.set_rule(site.platform, "nope", site.rule())


def test_a_rule_names_only_keys_of_its_tenant_and_models_the_gateway_serves(site: Site) -> None:
    limits = site.services.limits
    version = site.limits_version()
    foreign = site.services.keys.create(site.platform, "default").info.id
    own = site.key()
    with pytest.raises(Invalid) as caught:
        limits.set_rule(site.platform, "acme", site.rule(scope={"key": foreign}))
    assert caught.value.message.startswith(f"rule: scope.key: tenant 'acme' has no key '{foreign}'")
    with pytest.raises(Invalid) as caught:
        limits.set_rule(site.platform, "acme", site.rule(scope={"model": "gpt-9"}))
    assert caught.value.message == (
        "rule: scope.model: this gateway serves no model 'gpt-9'; it serves m, other"
    )
    with pytest.raises(Invalid) as caught:
        limits.set_rule(site.platform, "acme", site.rule(scope={"team": "Research Team"}))
    assert caught.value.message.startswith("rule: scope.team: a team is 1-100 lower-case letters")
    assert limits.rules(site.vic, "acme") == []
    assert site.limits_version() == version

    stored = limits.set_rule(site.platform, "acme", site.rule(scope={"key": own, "model": "each"}))
    assert (stored.rule.scope.key, stored.rule.scope.model) == (own, "each")


def test_only_a_platform_admin_changes_limits_and_every_refusal_is_audited(site: Site) -> None:
    limits = site.services.limits
    version = site.limits_version()
    # A tenant's own admin administers its keys and people, but may not raise its own limits.
    refusals: list[tuple[Callable[[], object], str]] = [
        (lambda: limits.set_rule(site.olga, "acme", site.rule()), "limits.set"),
        (lambda: limits.set_budget(site.olga, "acme", site.budget()), "budgets.set"),
        (lambda: limits.delete_rule(site.olga, "acme", "per-key"), "limits.delete"),
        (lambda: limits.delete_budget(site.vic, "acme", "monthly"), "budgets.delete"),
    ]
    for attempt, operation in refusals:
        with pytest.raises(Forbidden) as caught:
            attempt()
        assert caught.value.message.endswith(f"may not {operation}: it needs admin of the platform tenant")
    assert site.limits_version() == version
    denied = [(e.actor, e.action) for e in site.audited("limits.set") + site.audited("budgets.set")]
    assert denied == [("olga", "limits.set"), ("olga", "budgets.set")]
    assert [e.outcome for e in site.audited("budgets.delete")] == ["denied"]

    # Everyone in the tenant reads them; nobody outside it does.
    limits.set_rule(site.platform, "acme", site.rule())
    assert [r.rule.name for r in limits.rules(site.vic, "acme")] == ["per-key"]
    outsider = person(site.services, site.platform, "otto", Role.ADMIN)  # admin of default only
    reads: list[tuple[Callable[[], object], str]] = [
        (lambda: limits.rules(outsider, "acme"), "limits.list"),
        (lambda: limits.budgets(outsider, "acme"), "budgets.list"),
        (lambda: limits.budget_status(outsider, "acme"), "budgets.status"),
    ]
    for read, operation in reads:
        with pytest.raises(Forbidden, match=f"otto may not {operation} in tenant 'acme'"):
            read()
        assert [(e.actor, e.outcome) for e in site.audited(operation)] == [("otto", "denied")]


# --- budgets ---------------------------------------------------------------------------------------------


def test_a_platform_admin_sets_replaces_and_deletes_budgets(site: Site) -> None:
    limits = site.services.limits
    version = site.limits_version()
    created = limits.set_budget(site.platform, "acme", site.budget(scope={"team": "research"}))
    assert created.id.startswith("bud_")
    raised = limits.set_budget(site.platform, "acme", site.budget(scope={"team": "research"}, amount_usd=250))
    assert raised.id == created.id
    [listed] = limits.budgets(site.vic, "acme")
    assert (listed.budget.amount_usd, listed.budget.soft_ratio, listed.budget.period) == (250, 0.8, "month")

    # A new period is a new budget: the alert it fired for the old one does not count for it.
    alert(site, created.id, "*:research:*", datetime(2026, 3, 1, tzinfo=UTC))
    weekly = limits.set_budget(
        site.platform, "acme", site.budget(scope={"team": "research"}, period="week", soft_ratio=None)
    )
    assert weekly.id != created.id
    with site.services.engine.connect() as connection:
        assert connection.execute(sa.select(budget_alerts)).all() == []

    alert(site, weekly.id, "*:research:*", datetime(2026, 3, 16, tzinfo=UTC))
    deleted = limits.delete_budget(site.platform, "acme", "monthly")
    assert deleted.id == weekly.id
    assert limits.budgets(site.vic, "acme") == []
    with pytest.raises(NotFound, match="tenant 'acme' has no budget 'monthly'"):
        limits.delete_budget(site.platform, "acme", "monthly")
    assert site.limits_version() == version + 4
    assert [e.resource for e in site.audited("budget.set")] == ["budget:acme/monthly"] * 3
    assert [e.resource for e in site.audited("budget.delete")] == ["budget:acme/monthly"]


def test_a_budget_names_only_keys_of_its_tenant_and_proper_teams(site: Site) -> None:
    limits = site.services.limits
    foreign = site.services.keys.create(site.platform, "default").info.id
    with pytest.raises(Invalid, match=rf"^budget: scope\.key: tenant 'acme' has no key '{foreign}'"):
        limits.set_budget(site.platform, "acme", site.budget(scope={"key": foreign}))
    with pytest.raises(Invalid, match=r"^budget: scope\.team: a team is"):
        limits.set_budget(site.platform, "acme", site.budget(scope={"team": "a:b"}))
    assert limits.budgets(site.vic, "acme") == []
    for scope in ({}, {"team": "each"}, {"key": "each"}, {"key": site.key()}, {"team": "ops"}):
        limits.set_budget(
            site.platform, "acme", site.budget(name=f"b{len(scope)}-{uuid.uuid4().hex[:6]}", scope=scope)
        )
    assert len(limits.budgets(site.vic, "acme")) == 5


# --- budget status ---------------------------------------------------------------------------------------


def alert(site: Site, budget_id: str, scope: str, period_start: datetime) -> None:
    """A soft-cap alert as the gateway records it: per budget, counter split and period."""
    with site.services.engine.begin() as connection:
        connection.execute(
            budget_alerts.insert().values(
                budget_id=budget_id,
                scope=scope,
                period_start=period_start,
                fired_at=period_start + timedelta(days=1),
                spent_usd=1.0,
            )
        )


def spend(status: BudgetStatus) -> dict[str | None, float]:
    return {line.subject: round(line.spent_usd, 6) for line in status.lines}


def test_budget_status_sums_the_tenants_billed_calls_of_the_period_by_scope(site: Site) -> None:
    limits = site.services.limits
    k1, k2, k3, k4 = site.key("research"), site.key("research"), site.key("ops"), site.key()
    site.log(1.0, key_id=k1, team="research")
    site.log(
        2.0, key_id=k2, team="research", at=datetime(2026, 3, 1, tzinfo=UTC)
    )  # the month's first instant
    site.log(4.0, key_id=k3, team="ops", at=datetime(2026, 3, 16, tzinfo=UTC))  # the week's first instant
    site.log(8.0, key_id=k4)  # no team
    site.log(0.5, key_id=k1, team="research", status_code=502, error_type="UpstreamBadGateway")  # billed
    site.log(0.0, key_id=k1, team="research", status_code=429)  # refused: nothing billed
    # Not the tenant's spend: a mirrored call, another tenant's call, calls outside the period.
    site.log(16.0, key_id=k1, team="research", shadow=True)
    site.log(32.0, key_id="key_elsewhere", team="research", tenant_id=site.services.tenants.get("default").id)
    site.log(
        64.0, key_id=k1, team="research", at=datetime(2026, 3, 1, tzinfo=UTC) - timedelta(microseconds=1)
    )
    site.log(128.0, key_id=k1, team="research", at=datetime(2026, 4, 1, tzinfo=UTC))

    def budget(name: str, **fields: Any) -> str:
        return limits.set_budget(site.platform, "acme", site.budget(name=name, **fields)).id

    budget("tenant", amount_usd=20)
    budget("research", scope={"team": "research"})
    teams = budget("teams", scope={"team": "each"}, amount_usd=4)
    budget("k1", scope={"key": k1}, soft_ratio=None)
    budget("keys", scope={"key": "each"})
    budget("weekly", period="week", amount_usd=1000)
    budget("daily", period="day", scope={"team": "research"})
    alert(site, teams, "*:research:*", datetime(2026, 3, 1, tzinfo=UTC))  # this period, research only
    alert(site, teams, "*:ops:*", datetime(2026, 2, 1, tzinfo=UTC))  # last month's

    found = {s.record.budget.name: s for s in limits.budget_status(site.vic, "acme", at=AT)}
    assert list(found) == ["daily", "k1", "keys", "research", "teams", "tenant", "weekly"]
    assert spend(found["tenant"]) == {None: 15.5}
    assert spend(found["research"]) == {"research": 3.5}
    assert spend(found["teams"]) == {"ops": 4.0, "research": 3.5}
    assert spend(found["k1"]) == {k1: 1.5}
    assert spend(found["keys"]) == {k4: 8.0, k3: 4.0, k2: 2.0, k1: 1.5}
    assert [line.subject for line in found["keys"].lines] == [k4, k3, k2, k1]  # biggest spender first
    assert spend(found["weekly"]) == {None: 13.5}
    assert spend(found["daily"]) == {"research": 1.5}

    tenant = found["tenant"]
    assert (tenant.period_start, tenant.period_end) == (
        datetime(2026, 3, 1, tzinfo=UTC),
        datetime(2026, 4, 1, tzinfo=UTC),
    )
    assert tenant.soft_cap_usd == pytest.approx(16.0)
    assert (found["weekly"].period_start, found["weekly"].period_end) == (
        datetime(2026, 3, 16, tzinfo=UTC),
        datetime(2026, 3, 23, tzinfo=UTC),
    )
    assert found["daily"].period_start == datetime(2026, 3, 18, tzinfo=UTC)
    assert found["k1"].soft_cap_usd is None
    assert (found["teams"].split, found["keys"].split, found["research"].split) == ("team", "key", None)
    fired = {line.subject: line.alert_fired_at for line in found["teams"].lines}
    assert fired == {"research": datetime(2026, 3, 2, tzinfo=UTC), "ops": None}
    assert all(
        line.alert_fired_at is None for s in found.values() if s.record.id != teams for line in s.lines
    )

    # Next month, only the call logged at its first instant counts.
    later = {
        s.record.budget.name: s
        for s in limits.budget_status(SYSTEM, "acme", at=datetime(2026, 4, 2, tzinfo=UTC))
    }
    assert spend(later["tenant"]) == {None: 128.0}
    assert spend(later["research"]) == {"research": 128.0}
    assert later["teams"].lines[0].alert_fired_at is None


def test_a_budget_with_nothing_spent_reports_zero(site: Site) -> None:
    limits = site.services.limits
    limits.set_budget(site.platform, "acme", site.budget(scope={"team": "each"}))
    limits.set_budget(site.platform, "acme", site.budget(name="all"))
    found = {s.record.budget.name: s for s in limits.budget_status(site.vic, "acme", at=AT)}
    assert found["monthly"].lines == []  # no team has spent anything
    assert spend(found["all"]) == {None: 0.0}
