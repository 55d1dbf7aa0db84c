"""Eval runs in the store: a run row, one result row per (case, repeat), and the rendered reports.

Results are written one by one as cases finish, under a primary key of (run, case, repeat), so an
interrupted run keeps everything it finished, a resumed run skips exactly those, and no case can be
recorded twice even if two runners raced on the same run.

Runs are executed by the server. A worker **claims** a queued or abandoned run by taking its lease (an
atomic conditional update: exactly one worker wins), renews the lease while it works and releases it
when it stops; a run whose lease expired (its server died) is claimed again and resumes. Only runs the
server executed (``origin = 'server'``) count for gates; rows from before schema 0004 were executed by
clients and say ``client``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Engine, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from lockgate.evals.cases import CaseResult, Outcome, Score
from lockgate.evals.datasets import StoredDataset
from lockgate.service_errors import NotFound
from lockgate.store.tables import eval_reports, eval_results, eval_runs

RunStatus = Literal["queued", "running", "cancelling", "cancelled", "complete", "failed"]
ACTIVE = ("queued", "running")
UNFINISHED = ("queued", "running", "cancelling")
SERVER = "server"


@dataclass(frozen=True, slots=True)
class EvalRun:
    id: str
    tenant_id: str
    release_id: str
    dataset_id: str
    repeats: int
    status: str
    settings: dict[str, Any]
    summary: dict[str, Any] | None
    created_by: str
    started_at: datetime
    finished_at: datetime | None
    origin: str = SERVER
    fingerprint: str | None = None
    deployments: list[dict[str, Any]] | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.status not in UNFINISHED


@dataclass(frozen=True, slots=True)
class StoredReport:
    run_id: str
    format: str
    sha256: str
    content: str


class EvalStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.engine = engine

    def create_run(
        self,
        tenant_id: str,
        release_id: str,
        dataset: StoredDataset,
        repeats: int,
        settings: dict[str, Any],
        created_by: str,
    ) -> EvalRun:
        values = {
            "id": f"run_{uuid.uuid4().hex[:24]}",
            "tenant_id": tenant_id,
            "release_id": release_id,
            "dataset_id": dataset.id,
            "repeats": repeats,
            "status": "queued",
            "origin": SERVER,
            "settings": settings,
            "summary": None,
            "created_by": created_by,
            "started_at": datetime.now(UTC),
            "finished_at": None,
        }
        with self._engine.begin() as connection:
            connection.execute(eval_runs.insert().values(**values))
        return self.get(str(values["id"]))

    def get(self, run_id: str) -> EvalRun:
        with self._engine.connect() as connection:
            row = connection.execute(select(eval_runs).where(eval_runs.c.id == run_id)).first()
        if row is None:
            raise NotFound(f"unknown eval run {run_id!r}")
        return _run(row)

    def unfinished(self, release_id: str, dataset_id: str, repeats: int) -> EvalRun | None:
        """The newest queued or running run of this release on this dataset version."""
        return self._newest(release_id, dataset_id, ACTIVE, repeats)

    def latest_complete(self, release_id: str, dataset_id: str) -> EvalRun | None:
        """The newest complete run the server executed; client-side runs never count."""
        return self._newest(release_id, dataset_id, ("complete",), None)

    def runs(self, tenant_id: str, release_id: str | None = None) -> list[EvalRun]:
        query = (
            select(eval_runs)
            .where(eval_runs.c.tenant_id == tenant_id)
            .order_by(eval_runs.c.started_at.desc())
        )
        if release_id is not None:
            query = query.where(eval_runs.c.release_id == release_id)
        with self._engine.connect() as connection:
            return [_run(row) for row in connection.execute(query)]

    def _newest(
        self, release_id: str, dataset_id: str, statuses: Sequence[str], repeats: int | None
    ) -> EvalRun | None:
        query = select(eval_runs).where(
            eval_runs.c.release_id == release_id,
            eval_runs.c.dataset_id == dataset_id,
            eval_runs.c.status.in_(statuses),
            eval_runs.c.origin == SERVER,
        )
        if repeats is not None:
            query = query.where(eval_runs.c.repeats == repeats)
        with self._engine.connect() as connection:
            row = connection.execute(query.order_by(eval_runs.c.started_at.desc()).limit(1)).first()
        return _run(row) if row is not None else None

    def claim(self, owner: str, lease: timedelta) -> EvalRun | None:
        """Take the lease of the oldest run waiting for a worker (queued, or running with an expired
        lease); None when there is none. Exactly one of several concurrent claimers wins a run."""
        now = datetime.now(UTC)
        free = or_(eval_runs.c.lease_until.is_(None), eval_runs.c.lease_until < now)
        waiting = (eval_runs.c.status.in_(UNFINISHED), eval_runs.c.origin == SERVER, free)
        with self._engine.connect() as connection:
            candidates = (
                connection.execute(
                    select(eval_runs.c.id).where(*waiting).order_by(eval_runs.c.started_at).limit(5)
                )
                .scalars()
                .all()
            )
        for run_id in candidates:
            with self._engine.begin() as connection:
                taken = connection.execute(
                    update(eval_runs)
                    .where(eval_runs.c.id == run_id, *waiting)
                    .values(lease_owner=owner, lease_until=now + lease)
                )
            if taken.rowcount == 1:
                with self._engine.begin() as connection:
                    connection.execute(
                        update(eval_runs)
                        .where(eval_runs.c.id == run_id, eval_runs.c.status == "queued")
                        .values(status="running")
                    )
                return self.get(run_id)
        return None

    def renew(
        self, run_id: str, owner: str, lease: timedelta, deployments: list[dict[str, Any]] | None = None
    ) -> str | None:
        """Extend ``owner``'s lease; the run's status, or None when the lease was lost to another worker."""
        values: dict[str, Any] = {"lease_until": datetime.now(UTC) + lease}
        if deployments is not None:
            values["deployments"] = deployments
        with self._engine.begin() as connection:
            renewed = connection.execute(
                update(eval_runs)
                .where(eval_runs.c.id == run_id, eval_runs.c.lease_owner == owner)
                .values(**values)
            )
            if renewed.rowcount != 1:
                return None
            return str(
                connection.execute(select(eval_runs.c.status).where(eval_runs.c.id == run_id)).scalar()
            )

    def status(self, run_id: str, owner: str) -> str | None:
        """The run's status while ``owner`` holds its lease; None once it does not."""
        with self._engine.connect() as connection:
            found = connection.execute(
                select(eval_runs.c.status).where(eval_runs.c.id == run_id, eval_runs.c.lease_owner == owner)
            ).scalar()
        return str(found) if found is not None else None

    def release(self, run_id: str, owner: str) -> None:
        """Give the lease back so the run resumes at once on the next claim (a graceful stop)."""
        with self._engine.begin() as connection:
            connection.execute(
                update(eval_runs)
                .where(eval_runs.c.id == run_id, eval_runs.c.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )

    def request_cancel(self, run_id: str) -> EvalRun:
        """Queued runs are cancelled at once; running ones when their worker next looks."""
        with self._engine.begin() as connection:
            connection.execute(
                update(eval_runs)
                .where(eval_runs.c.id == run_id, eval_runs.c.status == "queued")
                .values(status="cancelled", finished_at=datetime.now(UTC))
            )
            connection.execute(
                update(eval_runs)
                .where(eval_runs.c.id == run_id, eval_runs.c.status == "running")
                .values(status="cancelling")
            )
        return self.get(run_id)

    def count_done(self, run_id: str) -> int:
        with self._engine.connect() as connection:
            query = select(func.count()).select_from(eval_results).where(eval_results.c.run_id == run_id)
            return int(connection.execute(query).scalar() or 0)

    def done(self, run_id: str) -> set[tuple[str, int]]:
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(eval_results.c.case_id, eval_results.c.repeat).where(eval_results.c.run_id == run_id)
            ).all()
        return {(row.case_id, int(row.repeat)) for row in rows}

    def save_result(self, run_id: str, result: CaseResult) -> bool:
        """Record one finished case; False when it was already recorded (never stored twice)."""
        outcome = result.outcome
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    eval_results.insert().values(
                        run_id=run_id,
                        case_id=result.case.id,
                        repeat=result.repeat,
                        output=outcome.text,
                        error=outcome.error,
                        latency_ms=outcome.latency_ms,
                        cost_usd=outcome.cost_usd,
                        input_tokens=outcome.input_tokens,
                        output_tokens=outcome.output_tokens,
                        scores=[score.as_dict() for score in result.scores],
                        created_at=datetime.now(UTC),
                        deployment=outcome.deployment,
                    )
                )
        except IntegrityError:
            return False
        return True

    def results(self, run_id: str, dataset: StoredDataset) -> list[CaseResult]:
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(eval_results)
                .where(eval_results.c.run_id == run_id)
                .order_by(eval_results.c.case_id, eval_results.c.repeat)
            ).all()
        cases = {case.id: case for case in dataset.cases}
        return [
            CaseResult(
                case=cases[row.case_id],
                repeat=int(row.repeat),
                outcome=Outcome(
                    text=row.output or "",
                    latency_ms=float(row.latency_ms),
                    cost_usd=float(row.cost_usd),
                    input_tokens=int(row.input_tokens),
                    output_tokens=int(row.output_tokens),
                    error=row.error,
                    deployment=row.deployment,
                ),
                scores=tuple(_score(s) for s in row.scores),
            )
            for row in rows
            if row.case_id in cases
        ]

    def finish(
        self,
        run_id: str,
        status: RunStatus,
        summary: dict[str, Any] | None,
        *,
        fingerprint: str | None = None,
        deployments: list[dict[str, Any]] | None = None,
        error: str | None = None,
    ) -> None:
        values: dict[str, Any] = {
            "status": status,
            "summary": summary,
            "finished_at": datetime.now(UTC),
            "lease_owner": None,
            "lease_until": None,
            "error": error,
        }
        if fingerprint is not None:
            values["fingerprint"] = fingerprint
        if deployments is not None:
            values["deployments"] = deployments
        with self._engine.begin() as connection:
            connection.execute(eval_runs.update().where(eval_runs.c.id == run_id).values(**values))

    def save_reports(self, run_id: str, files: Iterable[tuple[str, str, str]]) -> None:
        """(format, content, sha256) per report; replaces what an earlier attempt rendered."""
        now = datetime.now(UTC)
        with self._engine.begin() as connection:
            connection.execute(eval_reports.delete().where(eval_reports.c.run_id == run_id))
            for format_, content, sha256 in files:
                connection.execute(
                    eval_reports.insert().values(
                        run_id=run_id, format=format_, sha256=sha256, content=content, created_at=now
                    )
                )

    def reports(self, run_id: str) -> list[StoredReport]:
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(eval_reports).where(eval_reports.c.run_id == run_id).order_by(eval_reports.c.format)
            ).all()
        return [StoredReport(r.run_id, r.format, r.sha256, r.content) for r in rows]


def _score(raw: dict[str, Any]) -> Score:
    return Score(
        scorer=raw["scorer"],
        kind=raw["kind"],
        value=float(raw["value"]),
        passed=bool(raw["passed"]),
        reason=raw["reason"],
        weight=float(raw.get("weight", 1.0)),
        details=raw.get("details") or {},
    )


def _run(row: Any) -> EvalRun:
    return EvalRun(
        id=row.id,
        tenant_id=row.tenant_id,
        release_id=row.release_id,
        dataset_id=row.dataset_id,
        repeats=int(row.repeats),
        status=row.status,
        settings=row.settings,
        summary=row.summary,
        created_by=row.created_by,
        started_at=row.started_at,
        finished_at=row.finished_at,
        origin=row.origin,
        fingerprint=row.fingerprint,
        deployments=row.deployments,
        error=row.error,
    )
