"""Rollouts in the store: the rollout row (stage, share, status, lease), its analyses, and its traffic.

A controller drives a rollout only while it holds the rollout's lease (an atomic conditional update, one
winner across processes and hosts), so exactly one process decides each rollout; when that process
dies the lease expires and another takes over at the stage recorded here. The measurements read the
request log: the calls of the rollout since its stage started, per arm.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, Engine, case, func, or_, select, update

from lockgate.rollouts.spec import RolloutSpec
from lockgate.service_errors import NotFound
from lockgate.store.tables import feedback, online_scores, request_log, rollout_analyses, rollouts

Status = Literal["running", "paused", "promoted", "rolled_back", "aborted", "completed", "inconclusive"]
LIVE = ("running", "paused")
CONTRACT_VIOLATION = "OutputContractViolation"


@dataclass(frozen=True, slots=True)
class Rollout:
    id: str
    tenant_id: str
    route: str
    environment: str
    strategy: str
    spec: RolloutSpec
    candidate_release_id: str
    baseline_release_id: str
    status: str
    stage: int
    stage_started_at: datetime
    candidate_share: float
    salt: str
    failures: dict[str, int]
    reason: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @property
    def live(self) -> bool:
        return self.status in LIVE


@dataclass(frozen=True, slots=True)
class ArmMetrics:
    requests: int
    errors: int
    error_rate: float
    p95_latency_ms: float
    cost_per_request: float
    contract_violation_rate: float
    quality: float | None
    quality_samples: int
    successes: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "p95_latency_ms": self.p95_latency_ms,
            "cost_per_request": self.cost_per_request,
            "contract_violation_rate": self.contract_violation_rate,
            "quality": self.quality,
            "quality_samples": self.quality_samples,
            "successes": self.successes,
        }


@dataclass(frozen=True, slots=True)
class Analysis:
    stage: int
    at: datetime
    verdict: str
    metrics: dict[str, Any]
    reasons: list[str]
    evidence_id: str | None


class RolloutStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(
        self,
        connection: Connection,
        *,
        tenant_id: str,
        route: str,
        environment: str,
        spec: RolloutSpec,
        candidate: str,
        baseline: str,
        created_by: str,
    ) -> str:
        now = datetime.now(UTC)
        rollout_id = f"rlt_{uuid.uuid4().hex[:24]}"
        connection.execute(
            rollouts.insert().values(
                id=rollout_id,
                tenant_id=tenant_id,
                route=route,
                environment=environment,
                strategy=spec.strategy,
                spec=spec.model_dump(mode="json"),
                candidate_release_id=candidate,
                baseline_release_id=baseline,
                status="running",
                stage=0,
                stage_started_at=now,
                candidate_share=spec.first_share(),
                salt=uuid.uuid4().hex,
                failures={},
                reason=None,
                created_by=created_by,
                created_at=now,
                updated_at=now,
            )
        )
        return rollout_id

    def get(self, rollout_id: str, connection: Connection | None = None) -> Rollout:
        query = select(rollouts).where(rollouts.c.id == rollout_id)
        if connection is not None:
            row = connection.execute(query).first()
        else:
            with self.engine.connect() as own:
                row = own.execute(query).first()
        if row is None:
            raise NotFound(f"unknown rollout {rollout_id!r}")
        return _rollout(row)

    def latest(self, tenant_id: str, route: str, environment: str) -> Rollout | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                select(rollouts)
                .where(
                    rollouts.c.tenant_id == tenant_id,
                    rollouts.c.route == route,
                    rollouts.c.environment == environment,
                )
                .order_by(rollouts.c.created_at.desc())
                .limit(1)
            ).first()
        return _rollout(row) if row is not None else None

    def live(self, connection: Connection, tenant_id: str, route: str, environment: str) -> Rollout | None:
        row = connection.execute(
            select(rollouts).where(
                rollouts.c.tenant_id == tenant_id,
                rollouts.c.route == route,
                rollouts.c.environment == environment,
                rollouts.c.status.in_(LIVE),
            )
        ).first()
        return _rollout(row) if row is not None else None

    def of_tenant(self, tenant_id: str, route: str | None = None) -> list[Rollout]:
        query = select(rollouts).where(rollouts.c.tenant_id == tenant_id)
        if route is not None:
            query = query.where(rollouts.c.route == route)
        with self.engine.connect() as connection:
            return [_rollout(row) for row in connection.execute(query.order_by(rollouts.c.created_at.desc()))]

    def update(self, connection: Connection, rollout_id: str, **values: Any) -> None:
        values["updated_at"] = datetime.now(UTC)
        connection.execute(update(rollouts).where(rollouts.c.id == rollout_id).values(**values))

    # --- leases -------------------------------------------------------------------------------------

    def claimable(self) -> list[str]:
        now = datetime.now(UTC)
        with self.engine.connect() as connection:
            query = select(rollouts.c.id).where(
                rollouts.c.status == "running",
                or_(rollouts.c.lease_until.is_(None), rollouts.c.lease_until < now),
            )
            return [str(rid) for rid in connection.execute(query).scalars()]

    def claim(self, rollout_id: str, owner: str, lease: timedelta) -> bool:
        """Take or renew ``owner``'s lease of a running rollout; False when another process holds it."""
        now = datetime.now(UTC)
        mine_or_free = or_(
            rollouts.c.lease_owner == owner, rollouts.c.lease_until.is_(None), rollouts.c.lease_until < now
        )
        with self.engine.begin() as connection:
            taken = connection.execute(
                update(rollouts)
                .where(rollouts.c.id == rollout_id, rollouts.c.status == "running", mine_or_free)
                .values(lease_owner=owner, lease_until=now + lease)
            )
        return taken.rowcount == 1

    def owned(self, owner: str) -> list[str]:
        now = datetime.now(UTC)
        with self.engine.connect() as connection:
            query = select(rollouts.c.id).where(
                rollouts.c.status == "running", rollouts.c.lease_owner == owner, rollouts.c.lease_until >= now
            )
            return [str(rid) for rid in connection.execute(query).scalars()]

    def release(self, owner: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(rollouts)
                .where(rollouts.c.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )

    # --- analyses -----------------------------------------------------------------------------------

    def record_analysis(
        self,
        connection: Connection,
        rollout: Rollout,
        verdict: str,
        metrics: dict[str, Any],
        reasons: Sequence[str],
        evidence_id: str | None,
    ) -> None:
        connection.execute(
            rollout_analyses.insert().values(
                rollout_id=rollout.id,
                stage=rollout.stage,
                at=datetime.now(UTC),
                verdict=verdict,
                metrics=metrics,
                reasons=list(reasons),
                evidence_id=evidence_id,
            )
        )

    def analyses(self, rollout_id: str, limit: int = 20) -> list[Analysis]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(rollout_analyses)
                .where(rollout_analyses.c.rollout_id == rollout_id)
                .order_by(rollout_analyses.c.id.desc())
                .limit(limit)
            ).all()
        return [Analysis(r.stage, r.at, r.verdict, r.metrics, list(r.reasons), r.evidence_id) for r in rows]

    # --- traffic ------------------------------------------------------------------------------------

    def measure(self, rollout: Rollout, arms: Sequence[str]) -> dict[str, ArmMetrics]:
        """Per arm, the rollout's calls since its stage started (a stage judges its own traffic)."""
        with self.engine.connect() as connection:
            return {arm: _measure(connection, rollout, arm) for arm in arms}

    def counts(self, rollout: Rollout) -> dict[str, int]:
        """Calls per arm since the stage started (for the sample-ratio check)."""
        log = request_log.c
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(log.arm, func.count())
                .where(log.rollout_id == rollout.id, log.created_at >= rollout.stage_started_at)
                .group_by(log.arm)
            ).all()
        return {str(arm): int(n) for arm, n in rows if arm is not None}

    def latencies(self, rollout: Rollout, arm: str) -> list[float]:
        """Latencies (ms) of an arm's successful calls over the whole rollout."""
        log = request_log.c
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(log.latency_ms).where(
                    log.rollout_id == rollout.id, log.arm == arm, log.status_code < 300
                )
            ).scalars()
            return [float(v) for v in rows]

    def scores(self, rollout: Rollout, arm: str) -> list[float]:
        """Quality scores (online and feedback) of an arm's calls over the whole rollout."""
        log = request_log.c
        ids = select(log.id).where(log.rollout_id == rollout.id, log.arm == arm)
        with self.engine.connect() as connection:
            online = connection.execute(
                select(online_scores.c.score).where(online_scores.c.request_id.in_(ids))
            )
            given = connection.execute(select(feedback.c.score).where(feedback.c.request_id.in_(ids)))
            return [float(v) for v in (*online.scalars(), *given.scalars())]

    def rewards(self, rollout: Rollout, arm: str, kind: str) -> tuple[float, float]:
        """(successes, failures) of an arm over the whole rollout, for a bandit: success is a 2xx answer
        within its contract; feedback and quality are scores in [0, 1] counted fractionally."""
        log = request_log.c
        where = (log.rollout_id == rollout.id, log.arm == arm)
        with self.engine.connect() as connection:
            if kind == "success":
                total, good = connection.execute(
                    select(func.count(), func.sum(case((log.status_code < 300, 1), else_=0))).where(*where)
                ).one()
                return float(good or 0), float((total or 0) - (good or 0))
            table = feedback if kind == "feedback" else online_scores
            column = table.c.score
            key = table.c.request_id
            total, score = connection.execute(
                select(func.count(column), func.sum(column))
                .select_from(table.join(request_log, key == log.id))
                .where(*where)
            ).one()
        return float(score or 0.0), float((total or 0) - (score or 0.0))


def _measure(connection: Connection, rollout: Rollout, arm: str) -> ArmMetrics:
    log = request_log.c
    where = (log.rollout_id == rollout.id, log.arm == arm, log.created_at >= rollout.stage_started_at)
    rows = connection.execute(
        select(log.status_code, log.error_type, log.latency_ms, log.cost_usd).where(*where)
    ).all()
    requests = len(rows)
    violations = sum(1 for r in rows if r.error_type == CONTRACT_VIOLATION)
    errors = sum(1 for r in rows if r.status_code >= 500 and r.error_type != CONTRACT_VIOLATION)
    ok = [r for r in rows if r.status_code < 300]
    latencies = sorted(float(r.latency_ms) for r in ok)
    ids = select(log.id).where(*where)
    quality_rows = (
        connection.execute(select(online_scores.c.score).where(online_scores.c.request_id.in_(ids)))
        .scalars()
        .all()
    )
    feedback_rows = (
        connection.execute(select(feedback.c.score).where(feedback.c.request_id.in_(ids))).scalars().all()
    )
    scores = [float(s) for s in (*quality_rows, *feedback_rows)]
    return ArmMetrics(
        requests=requests,
        errors=errors,
        error_rate=errors / requests if requests else 0.0,
        p95_latency_ms=_percentile(latencies, 0.95),
        cost_per_request=sum(float(r.cost_usd) for r in ok) / len(ok) if ok else 0.0,
        contract_violation_rate=violations / requests if requests else 0.0,
        quality=sum(scores) / len(scores) if scores else None,
        quality_samples=len(scores),
        successes=len(ok),
    )


def _percentile(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return 0.0
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _rollout(row: Any) -> Rollout:
    return Rollout(
        id=row.id,
        tenant_id=row.tenant_id,
        route=row.route,
        environment=row.environment,
        strategy=row.strategy,
        spec=RolloutSpec.model_validate(row.spec),
        candidate_release_id=row.candidate_release_id,
        baseline_release_id=row.baseline_release_id,
        status=row.status,
        stage=int(row.stage),
        stage_started_at=row.stage_started_at,
        candidate_share=float(row.candidate_share),
        salt=row.salt,
        failures=dict(row.failures or {}),
        reason=row.reason,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
    )
