"""Eval runs in the store: a run row, one result row per (case, repeat), and the rendered reports.

Results are written one by one as cases finish, under a primary key of (run, case, repeat), so an
interrupted run keeps everything it finished, a resumed run skips exactly those, and no case can be
recorded twice even if two runners raced on the same run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from lockgate.control.errors import NotFound
from lockgate.evals.cases import CaseResult, Outcome, Score
from lockgate.evals.datasets import StoredDataset
from lockgate.store.tables import eval_reports, eval_results, eval_runs

RunStatus = Literal["running", "interrupted", "complete"]


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


@dataclass(frozen=True, slots=True)
class StoredReport:
    run_id: str
    format: str
    sha256: str
    content: str


class EvalStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

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
            "status": "running",
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
        """The newest run of this release on this dataset version that did not complete."""
        return self._newest(release_id, dataset_id, ("running", "interrupted"), repeats)

    def latest_complete(self, release_id: str, dataset_id: str) -> EvalRun | None:
        return self._newest(release_id, dataset_id, ("complete",), None)

    def runs(self, release_id: str | None = None) -> list[EvalRun]:
        query = select(eval_runs).order_by(eval_runs.c.started_at.desc())
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
        )
        if repeats is not None:
            query = query.where(eval_runs.c.repeats == repeats)
        with self._engine.connect() as connection:
            row = connection.execute(query.order_by(eval_runs.c.started_at.desc()).limit(1)).first()
        return _run(row) if row is not None else None

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
                ),
                scores=tuple(_score(s) for s in row.scores),
            )
            for row in rows
            if row.case_id in cases
        ]

    def finish(self, run_id: str, status: RunStatus, summary: dict[str, Any] | None) -> None:
        with self._engine.begin() as connection:
            connection.execute(
                eval_runs.update()
                .where(eval_runs.c.id == run_id)
                .values(status=status, summary=summary, finished_at=datetime.now(UTC))
            )

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
    )
