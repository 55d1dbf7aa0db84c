"""Rollouts: how an environment with a strategy takes a new release, step by step, and how people steer it.

An admin sets a route environment's strategy (``set_strategy``; it constrains deployers, like a gate).
From then on, promoting into that environment (after its gate and, for prod, an approval) starts a
rollout instead of moving the pointer: the candidate gets a share of the traffic and the controller
(``controller.py``) judges it stage by stage until it serves 100% (the pointer moves) or is rolled back.
Deployers can pause, resume, abort (everything back to the current release at once) or promote it by
hand. Every change of a rollout is audited and leaves a signed evidence record (action ``rollout``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, select

from lockgate.control.environments import Environments
from lockgate.control.releases import Release, ReleaseService
from lockgate.gates.evidence import EvidenceDraft, EvidenceService
from lockgate.gates.policy import check_package
from lockgate.rollouts.policy import PACKAGE, analysis_policies
from lockgate.rollouts.spec import RolloutSpec
from lockgate.rollouts.store import Analysis, Rollout, RolloutStore
from lockgate.security.audit import AuditEvent, AuditLog
from lockgate.security.permissions import Authorizer
from lockgate.security.rbac import Actor
from lockgate.service_errors import Conflict, Invalid, NotFound
from lockgate.store import versions
from lockgate.store.tables import route_strategies
from lockgate.store.tenancy import require_tenant_id

ENVIRONMENTS = ("dev", "stage", "prod")


@dataclass(frozen=True, slots=True)
class StoredStrategy:
    route: str
    environment: str
    spec: RolloutSpec
    updated_by: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RolloutView:
    rollout: Rollout
    analyses: list[Analysis]
    counts: dict[str, int]


class RolloutService:
    def __init__(
        self,
        engine: Engine,
        audit: AuditLog,
        authz: Authorizer,
        releases: ReleaseService,
        environments: Environments,
        evidence: EvidenceService,
    ) -> None:
        self._engine = engine
        self._audit = audit
        self._authz = authz
        self._releases = releases
        self._environments = environments
        self._evidence = evidence
        self.store = RolloutStore(engine)

    # --- strategies ----------------------------------------------------------------------------------

    def set_strategy(
        self, actor: Actor, tenant: str, route: str, environment: str, spec: RolloutSpec
    ) -> StoredStrategy:
        """Install or replace how ``route`` takes releases in ``environment`` (admins; audited)."""
        resource = f"route:{tenant}/{route}/{environment}"
        self._authz.require(actor, "rollouts.set", tenant, resource)
        _check_environment(environment)
        check_package(analysis_policies(spec.policies, replace=spec.replace_default_policy), PACKAGE)
        now = datetime.now(UTC)
        stored: dict[str, Any] = spec.model_dump(mode="json")
        values = {"spec": stored, "updated_by": actor.name}
        with self._engine.begin() as connection:
            tenant_id = require_tenant_id(connection, tenant)
            key = _key(tenant_id, route, environment)
            before = connection.execute(select(route_strategies.c.spec).where(*key)).scalar()
            if before is None:
                connection.execute(
                    route_strategies.insert().values(
                        tenant_id=tenant_id, route=route, environment=environment, updated_at=now, **values
                    )
                )
            else:
                connection.execute(route_strategies.update().where(*key).values(updated_at=now, **values))
            event = AuditEvent("rollout.strategy", resource, before=before, after=stored)
            self._audit.append(connection, actor, event)
        return StoredStrategy(route, environment, spec, actor.name, now)

    def strategy(self, actor: Actor, tenant: str, route: str, environment: str) -> StoredStrategy:
        self._authz.require(actor, "rollouts.strategy", tenant)
        found = self.strategy_of(tenant, route, environment)
        if found is None:
            raise NotFound(f"route {route!r} has no rollout strategy in {environment}")
        return found

    def strategy_of(self, tenant: str, route: str, environment: str) -> StoredStrategy | None:
        with self._engine.connect() as connection:
            row = connection.execute(
                select(route_strategies).where(
                    *_key(require_tenant_id(connection, tenant), route, environment)
                )
            ).first()
        if row is None:
            return None
        spec = RolloutSpec.model_validate(row.spec)
        return StoredStrategy(row.route, row.environment, spec, row.updated_by, row.updated_at)

    # --- the environments' starter (promote calls these) --------------------------------------------

    def has_strategy(self, tenant: str, route: str, environment: str) -> bool:
        return self.strategy_of(tenant, route, environment) is not None

    def begin(
        self,
        connection: Connection,
        actor: Actor,
        tenant: str,
        route: str,
        environment: str,
        candidate: Release,
    ) -> str:
        stored = self.strategy_of(tenant, route, environment)
        if stored is None:
            raise Invalid(f"route {route!r} has no rollout strategy in {environment}")
        tenant_id = require_tenant_id(connection, tenant)
        if self.store.live(connection, tenant_id, route, environment) is not None:
            raise Conflict(
                f"route {route!r} already has a rollout under way in {environment}: "
                f"`lockgate rollout status {route} --env {environment}`"
            )
        pointer = self._environments.pointer(tenant, route, environment)
        rollout_id = self.store.create(
            connection,
            tenant_id=tenant_id,
            route=route,
            environment=environment,
            spec=stored.spec,
            candidate=candidate.id,
            baseline=pointer.release_id,
            created_by=actor.name,
        )
        versions.bump(connection, versions.ROUTES)  # the gateways start assigning arms
        rollout = self.store.get(rollout_id, connection)
        self.record(connection, actor, tenant, rollout, "start", [f"{stored.spec.strategy} rollout started"])
        return rollout_id

    # --- what people do --------------------------------------------------------------------------------

    def start(self, actor: Actor, tenant: str, route: str, environment: str) -> RolloutView:
        """Promote into ``environment`` through its gate, which starts the rollout of its strategy."""
        self._authz.require(actor, "rollouts.start", tenant, f"route:{tenant}/{route}/{environment}")
        if environment not in ("stage", "prod"):
            raise Invalid("rollouts run in stage or prod; dev moves with `releases point`")
        if not self.has_strategy(tenant, route, environment):
            raise Invalid(
                f"route {route!r} has no rollout strategy in {environment}: an admin sets one with "
                "`lockgate rollout set FILE`"
            )
        self._environments.promote(actor, tenant, route, environment)
        return self._view(tenant, route, environment)

    def status(self, actor: Actor, tenant: str, route: str, environment: str) -> RolloutView:
        self._authz.require(actor, "rollouts.get", tenant)
        return self._view(tenant, route, environment)

    def history(self, actor: Actor, tenant: str, route: str | None = None) -> list[Rollout]:
        """Rollouts, newest first."""
        self._authz.require(actor, "rollouts.list", tenant)
        with self._engine.connect() as connection:
            tenant_id = require_tenant_id(connection, tenant)
        return self.store.of_tenant(tenant_id, route)

    def pause(self, actor: Actor, tenant: str, route: str, environment: str) -> RolloutView:
        return self._steer(actor, "rollouts.pause", tenant, route, environment, "pause")

    def resume(self, actor: Actor, tenant: str, route: str, environment: str) -> RolloutView:
        return self._steer(actor, "rollouts.resume", tenant, route, environment, "resume")

    def abort(self, actor: Actor, tenant: str, route: str, environment: str) -> RolloutView:
        return self._steer(actor, "rollouts.abort", tenant, route, environment, "abort")

    def promote(self, actor: Actor, tenant: str, route: str, environment: str) -> RolloutView:
        return self._steer(actor, "rollouts.promote", tenant, route, environment, "promote")

    # --- transitions (people and the controller) ------------------------------------------------------

    def transition(
        self,
        connection: Connection,
        actor: Actor,
        rollout: Rollout,
        event: str,
        reasons: list[str],
        *,
        metrics: dict[str, Any] | None = None,
        **values: Any,
    ) -> str:
        """Change the rollout (status, stage, share, ...) in the caller's transaction, make the gateways
        reload, and record the event as evidence; returns the evidence id."""
        if values:
            self.store.update(connection, rollout.id, **values)
        if values.get("status") == "promoted":
            tenant = self.tenant_name(connection, rollout.tenant_id)
            self._environments.finish_rollout(
                connection, actor, tenant, rollout.route, rollout.environment, rollout.candidate_release_id
            )
        versions.bump(connection, versions.ROUTES)
        updated = self.store.get(rollout.id, connection)
        return self.record(
            connection,
            actor,
            self.tenant_name(connection, rollout.tenant_id),
            updated,
            event,
            reasons,
            metrics,
        )

    def record(
        self,
        connection: Connection,
        actor: Actor,
        tenant: str,
        rollout: Rollout,
        event: str,
        reasons: list[str],
        metrics: dict[str, Any] | None = None,
    ) -> str:
        release = self._releases.require(tenant, rollout.candidate_release_id)
        draft = EvidenceDraft(
            route=rollout.route,
            environment=rollout.environment,
            release_id=rollout.candidate_release_id,
            git_commit=release.content.git_commit,
            decision="deny" if event in ("rollback", "abort") else "allow",
            action="rollout",
            reasons=reasons,
            rollout={
                "id": rollout.id,
                "event": event,
                "strategy": rollout.strategy,
                "status": rollout.status,
                "stage": rollout.stage,
                "candidate_share": rollout.candidate_share,
                "baseline_release_id": rollout.baseline_release_id,
                "metrics": metrics,
                "thresholds": rollout.spec.analysis.thresholds.model_dump(mode="json"),
            },
            requested_by=actor.name,
            requested_at=datetime.now(UTC),
        )
        stored = self._evidence.append(connection, actor, tenant, draft)
        return stored.id

    def _steer(
        self, actor: Actor, operation: str, tenant: str, route: str, environment: str, event: str
    ) -> RolloutView:
        resource = f"route:{tenant}/{route}/{environment}"
        self._authz.require(actor, operation, tenant, resource)
        now = datetime.now(UTC)
        with self._engine.begin() as connection:
            rollout = self.store.live(connection, require_tenant_id(connection, tenant), route, environment)
            if rollout is None:
                raise NotFound(f"route {route!r} has no rollout under way in {environment}")
            reasons = [f"{event} by {actor.name}"]
            if event == "pause":
                if rollout.status == "paused":
                    return self._view(tenant, route, environment)
                self.transition(connection, actor, rollout, event, reasons, status="paused")
            elif event == "resume":
                if rollout.status == "running":
                    return self._view(tenant, route, environment)
                self.transition(connection, actor, rollout, event, reasons, status="running", reason=None)
            else:
                aborted = event == "abort"
                self.transition(
                    connection,
                    actor,
                    rollout,
                    event,
                    reasons,
                    status="aborted" if aborted else "promoted",
                    candidate_share=0.0 if aborted else 1.0,
                    finished_at=now,
                    reason=reasons[0],
                )
            after = {"rollout": rollout.id}
            self._audit.append(connection, actor, AuditEvent(f"rollout.{event}", resource, after=after))
        return self._view(tenant, route, environment)

    def _view(self, tenant: str, route: str, environment: str) -> RolloutView:
        with self._engine.connect() as connection:
            tenant_id = require_tenant_id(connection, tenant)
        rollout = self.store.latest(tenant_id, route, environment)
        if rollout is None:
            raise NotFound(f"route {route!r} has had no rollout in {environment}")
        return RolloutView(rollout, self.store.analyses(rollout.id), self.store.counts(rollout))

    def serving(self, rollout: Rollout) -> str | None:
        """The release the rollout's environment serves now."""
        with self._engine.connect() as connection:
            tenant = self.tenant_name(connection, rollout.tenant_id)
        try:
            return self._environments.pointer(tenant, rollout.route, rollout.environment).release_id
        except NotFound:
            return None

    @staticmethod
    def tenant_name(connection: Connection, tenant_id: str) -> str:
        from lockgate.store.tables import tenants

        name = connection.execute(select(tenants.c.name).where(tenants.c.id == tenant_id)).scalar()
        if name is None:
            raise NotFound(f"unknown tenant id {tenant_id!r}")
        return str(name)


def _key(tenant_id: str, route: str, environment: str) -> tuple[Any, ...]:
    c = route_strategies.c
    return (c.tenant_id == tenant_id, c.route == route, c.environment == environment)


def _check_environment(environment: str) -> None:
    if environment not in ("stage", "prod"):
        raise Invalid("rollout strategies apply to stage or prod")
