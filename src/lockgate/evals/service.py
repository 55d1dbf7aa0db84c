"""Eval runs end to end: plan (or resume) a run, execute it through the gateway, summarise, report.

``prepare`` finds an unfinished run of the same release, dataset version and repeat count and resumes
it unless asked for a fresh one; ``execute`` runs what is left; ``finalize`` marks the run complete,
computes its summary (the numbers gates read) and renders the JSON, HTML and JUnit reports, stored with
their sha256 so evidence can name them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from lockgate.control.environments import Environments
from lockgate.control.errors import ControlError, Invalid
from lockgate.control.releases import Release, ReleaseService
from lockgate.control.tenancy import require_tenant_id
from lockgate.evals.cases import Case, CaseResult, ScoringContext
from lockgate.evals.datasets import DatasetService, StoredDataset
from lockgate.evals.reports import Baseline, ReportFile, RunReport, render_all
from lockgate.evals.runner import CaseClient, RunLimits, Runner
from lockgate.evals.scorers import build_scorers
from lockgate.evals.store import EvalRun, EvalStore
from lockgate.evals.summary import compare, summarize
from lockgate.gateway.routebook import ServingRelease
from lockgate.security.audit import AuditEvent, AuditLog
from lockgate.security.rbac import Actor, Role

MAX_REPEATS = 20
MAX_CONCURRENCY = 64


@dataclass(frozen=True, slots=True)
class Planned:
    run: EvalRun
    release: Release
    dataset: StoredDataset
    todo: list[tuple[Case, int]]
    done: int
    resumed: bool

    @property
    def total(self) -> int:
        return len(self.dataset.cases) * self.run.repeats


@dataclass(frozen=True, slots=True)
class Finished:
    run: EvalRun
    summary: dict[str, Any]
    reports: list[ReportFile]
    baseline: Baseline | None
    against: str | None = None


class EvalService:
    def __init__(
        self,
        engine: Engine,
        audit: AuditLog,
        releases: ReleaseService,
        environments: Environments,
        datasets: DatasetService,
    ) -> None:
        self._engine = engine
        self._audit = audit
        self.releases = releases
        self.environments = environments
        self.datasets = datasets
        self.store = EvalStore(engine)

    def prepare(
        self,
        actor: Actor,
        tenant: str,
        release_id: str,
        dataset_ref: str,
        *,
        repeats: int = 1,
        concurrency: int = 4,
        fresh: bool = False,
    ) -> Planned:
        if not 1 <= repeats <= MAX_REPEATS:
            raise Invalid(f"--repeat must be between 1 and {MAX_REPEATS}")
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise Invalid(f"--concurrency must be between 1 and {MAX_CONCURRENCY}")
        event = AuditEvent("eval.run", f"release:{tenant}/{release_id}")
        self._audit.authorize(self._engine, actor, tenant, Role.EDITOR, event)
        release = self.releases.get(tenant, release_id)
        dataset = self.datasets.resolve(tenant, dataset_ref)
        existing = None if fresh else self.store.unfinished(release.id, dataset.id, repeats)
        if existing is None:
            with self._engine.connect() as connection:
                tenant_id = require_tenant_id(connection, tenant)
            settings = {"concurrency": concurrency, "dataset": dataset.ref}
            run = self.store.create_run(tenant_id, release.id, dataset, repeats, settings, actor.name)
        else:
            run = existing
        done = self.store.done(run.id)
        todo = [
            (case, repeat)
            for repeat in range(run.repeats)
            for case in dataset.cases
            if (case.id, repeat) not in done
        ]
        return Planned(run, release, dataset, todo, len(done), existing is not None)

    async def execute(
        self,
        planned: Planned,
        client: CaseClient,
        context: ScoringContext,
        stop: asyncio.Event,
        *,
        concurrency: int = 4,
        on_result: Callable[[CaseResult], None] = lambda _: None,
    ) -> bool:
        scorers = build_scorers(planned.dataset.spec.scorers, context)
        serving = ServingRelease(planned.release.id, planned.release.content)
        runner = Runner(client, scorers, self.store, RunLimits(concurrency=concurrency))
        complete = await runner.run(planned.run.id, serving, planned.todo, stop, on_result)
        if not complete:
            self.store.finish(planned.run.id, "interrupted", None)
        return complete

    def finalize(self, tenant: str, run_id: str, against: str | None = None) -> Finished:
        """Summarise a finished run and store its reports; ``against`` names an environment whose
        release is the baseline (its latest complete run on the same dataset version)."""
        run = self.store.get(run_id)
        dataset = self.datasets.by_id(run.dataset_id)
        results = self.store.results(run.id, dataset)
        if len(results) < len(dataset.cases) * run.repeats:
            raise Invalid(
                f"run {run.id} is not finished: {len(results)} of {len(dataset.cases) * run.repeats}"
            )
        summary = summarize(results, run.repeats)
        self.store.finish(run.id, "complete", summary.as_dict())
        run = self.store.get(run.id)
        release = self.releases.get(tenant, run.release_id)
        baseline = self.baseline(tenant, release, dataset, results, against) if against else None
        report = RunReport(
            run_id=run.id,
            release=release.summary(),
            dataset={"name": dataset.name, "version": dataset.version, "sha256": dataset.sha256},
            settings={"repeats": run.repeats, **run.settings},
            started_at=run.started_at,
            finished_at=run.finished_at or datetime.now(UTC),
            status=run.status,
            summary=summary,
            results=results,
            baseline=baseline,
        )
        files = render_all(report)
        self.store.save_reports(run.id, [(f.format, f.content, f.sha256) for f in files])
        return Finished(run, summary.as_dict(), files, baseline, against)

    def baseline(
        self,
        tenant: str,
        release: Release,
        dataset: StoredDataset,
        results: list[CaseResult],
        environment: str,
    ) -> Baseline | None:
        """The comparison with the release ``environment`` serves now, when it has a complete run."""
        try:
            pointer = self.environments.pointer(tenant, release.content.route, environment)
        except ControlError:
            return None
        if pointer.release_id == release.id:
            return None
        run = self.store.latest_complete(pointer.release_id, dataset.id)
        if run is None or run.summary is None:
            return None
        baseline_results = self.store.results(run.id, dataset)
        return Baseline(
            run_id=run.id,
            release_id=pointer.release_id,
            summary=run.summary,
            comparison=compare(results, baseline_results).as_dict(),
        )
