"""Eval runs end to end, on the server: queue a run, execute it through the gateway, summarise, report.

``start`` queues a run (or returns the unfinished run of the same release, dataset version and repeat
count, which then resumes); a worker in the server (``worker.py``) claims it and calls ``plan``,
``execute`` and ``finalize``. ``finalize`` marks the run complete, computes its summary (the numbers
gates read), records the fingerprint of the deployments that answered and renders the JSON, HTML and
JUnit reports, stored with their sha256 so evidence can name them. There is no way to hand the server
results computed elsewhere: a gate only ever reads runs the server executed with its own gateway.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Engine, select

from lockgate.control.environments import Environments
from lockgate.control.releases import Release, ReleaseService
from lockgate.evals.cases import Case, CaseResult, ScoringContext
from lockgate.evals.datasets import DatasetService, StoredDataset
from lockgate.evals.reports import Baseline, ReportFile, RunReport, render_all
from lockgate.evals.runner import CaseClient, RunLimits, Runner
from lockgate.evals.scorers import build_scorers
from lockgate.evals.store import EvalRun, EvalStore, StoredReport
from lockgate.evals.summary import compare, summarize
from lockgate.gateway.routebook import ServingRelease
from lockgate.security.audit import AuditEvent, AuditLog
from lockgate.security.permissions import Authorizer
from lockgate.security.rbac import Actor
from lockgate.service_errors import ControlError, Invalid, NotFound
from lockgate.store.tables import tenants
from lockgate.store.tenancy import require_tenant_id

MAX_REPEATS = 20
MAX_CONCURRENCY = 64
ENVIRONMENTS = ("dev", "stage", "prod")


@dataclass(frozen=True, slots=True)
class Progress:
    run: EvalRun
    done: int
    total: int


@dataclass(frozen=True, slots=True)
class Planned:
    run: EvalRun
    tenant: str
    release: Release
    dataset: StoredDataset
    todo: list[tuple[Case, int]]
    done: int

    @property
    def total(self) -> int:
        return len(self.dataset.cases) * self.run.repeats


@dataclass(frozen=True, slots=True)
class Finished:
    run: EvalRun
    summary: dict[str, Any]
    reports: list[ReportFile]
    baseline: Baseline | None


def fingerprint(deployments: list[dict[str, Any]]) -> str:
    """SHA-256 of the canonical JSON of the deployments that answered, sorted: equal fingerprints mean
    the same upstreams, models and settings answered."""
    ordered = sorted(deployments, key=lambda d: orjson.dumps(d, option=orjson.OPT_SORT_KEYS))
    return hashlib.sha256(orjson.dumps(ordered, option=orjson.OPT_SORT_KEYS)).hexdigest()


class EvalService:
    def __init__(
        self,
        engine: Engine,
        audit: AuditLog,
        authz: Authorizer,
        releases: ReleaseService,
        environments: Environments,
        datasets: DatasetService,
    ) -> None:
        self._engine = engine
        self._audit = audit
        self._authz = authz
        self.releases = releases
        self.environments = environments
        self.datasets = datasets
        self.store = EvalStore(engine)

    # --- what clients ask for ---------------------------------------------------------------------

    def start(
        self,
        actor: Actor,
        tenant: str,
        release_id: str,
        dataset_ref: str,
        *,
        repeats: int = 1,
        concurrency: int = 4,
        fresh: bool = False,
        against: str | None = None,
    ) -> Progress:
        """Queue a run of ``release_id`` on ``dataset_ref`` for the server to execute; an unfinished run
        of the same release, dataset version and repeat count is returned instead (it resumes)."""
        self._authz.require(actor, "evals.start", tenant, f"release:{tenant}/{release_id}")
        if not 1 <= repeats <= MAX_REPEATS:
            raise Invalid(f"repeats must be between 1 and {MAX_REPEATS}")
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise Invalid(f"concurrency must be between 1 and {MAX_CONCURRENCY}")
        if against is not None and against not in ENVIRONMENTS:
            raise Invalid("against must be dev, stage or prod")
        release = self.releases.require(tenant, release_id)
        dataset = self.datasets.resolve(tenant, dataset_ref)
        existing = None if fresh else self.store.unfinished(release.id, dataset.id, repeats)
        if existing is not None:
            return self.progress(existing)
        with self._engine.connect() as connection:
            tenant_id = require_tenant_id(connection, tenant)
        settings = {"concurrency": concurrency, "dataset": dataset.ref, "against": against}
        run = self.store.create_run(tenant_id, release.id, dataset, repeats, settings, actor.name)
        after = {"run": run.id, "dataset": dataset.ref, "repeats": repeats}
        self._audit.record(
            self._engine, actor, AuditEvent("eval.start", f"release:{tenant}/{release.id}", after=after)
        )
        return self.progress(run)

    def cancel(self, actor: Actor, tenant: str, run_id: str) -> Progress:
        self._authz.require(actor, "evals.cancel", tenant, f"eval-run:{tenant}/{run_id}")
        run = self._run(tenant, run_id)
        if run.finished:
            raise Invalid(f"run {run_id} is already {run.status}")
        run = self.store.request_cancel(run.id)
        self._audit.record(self._engine, actor, AuditEvent("eval.cancel", f"eval-run:{tenant}/{run_id}"))
        return self.progress(run)

    def get(self, actor: Actor, tenant: str, run_id: str) -> Progress:
        self._authz.require(actor, "evals.get", tenant)
        return self.progress(self._run(tenant, run_id))

    def report(self, actor: Actor, tenant: str, run_id: str, format_: str) -> StoredReport:
        self._authz.require(actor, "evals.report", tenant)
        run = self._run(tenant, run_id)
        for stored in self.store.reports(run.id):
            if stored.format == format_:
                return stored
        raise NotFound(f"run {run_id} has no {format_} report (it is {run.status})")

    def progress(self, run: EvalRun) -> Progress:
        dataset = self.datasets.by_id(run.dataset_id)
        return Progress(run, self.store.count_done(run.id), len(dataset.cases) * run.repeats)

    # --- what the server's worker does -------------------------------------------------------------

    def plan(self, run: EvalRun) -> Planned:
        """What is left of ``run``: every (case, repeat) without a recorded result."""
        tenant = self.tenant_name(run.tenant_id)
        release = self.releases.require(tenant, run.release_id)
        dataset = self.datasets.by_id(run.dataset_id)
        done = self.store.done(run.id)
        todo = [
            (case, repeat)
            for repeat in range(run.repeats)
            for case in dataset.cases
            if (case.id, repeat) not in done
        ]
        return Planned(run, tenant, release, dataset, todo, len(done))

    async def execute(
        self,
        planned: Planned,
        client: CaseClient,
        context: ScoringContext,
        stop: asyncio.Event,
        on_result: Callable[[CaseResult], None] = lambda _: None,
    ) -> bool:
        """Run what is left; True when every case is recorded, False when ``stop`` cut it short."""
        scorers = build_scorers(planned.dataset.spec.scorers, context)
        serving = ServingRelease(planned.release.id, planned.release.content)
        concurrency = int(planned.run.settings.get("concurrency") or 4)
        runner = Runner(client, scorers, self.store, RunLimits(concurrency=concurrency))
        return await runner.run(planned.run.id, serving, planned.todo, stop, on_result)

    def finalize(self, run_id: str, deployments: list[dict[str, Any]]) -> Finished:
        """Summarise a finished run, record what answered it and store its reports; the baseline is the
        release the run's ``against`` environment serves, when that release has a complete run."""
        run = self.store.get(run_id)
        tenant = self.tenant_name(run.tenant_id)
        dataset = self.datasets.by_id(run.dataset_id)
        results = self.store.results(run.id, dataset)
        if len(results) < len(dataset.cases) * run.repeats:
            raise Invalid(
                f"run {run.id} is not finished: {len(results)} of {len(dataset.cases) * run.repeats}"
            )
        summary = summarize(results, run.repeats)
        self.store.finish(
            run.id,
            "complete",
            summary.as_dict(),
            fingerprint=fingerprint(deployments),
            deployments=deployments,
        )
        run = self.store.get(run.id)
        release = self.releases.require(tenant, run.release_id)
        against = run.settings.get("against")
        baseline = self.baseline(tenant, release, dataset, results, str(against)) if against else None
        report = RunReport(
            run_id=run.id,
            release=release.summary(),
            dataset={"name": dataset.name, "version": dataset.version, "sha256": dataset.sha256},
            settings={"repeats": run.repeats, **run.settings, "fingerprint": run.fingerprint},
            started_at=run.started_at,
            finished_at=run.finished_at or datetime.now(UTC),
            status=run.status,
            summary=summary,
            results=results,
            baseline=baseline,
        )
        files = render_all(report)
        self.store.save_reports(run.id, [(f.format, f.content, f.sha256) for f in files])
        return Finished(run, summary.as_dict(), files, baseline)

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

    def tenant_name(self, tenant_id: str) -> str:
        with self._engine.connect() as connection:
            name = connection.execute(select(tenants.c.name).where(tenants.c.id == tenant_id)).scalar()
        if name is None:
            raise NotFound(f"unknown tenant id {tenant_id!r}")
        return str(name)

    def _run(self, tenant: str, run_id: str) -> EvalRun:
        """The run, if it belongs to ``tenant``; another tenant's run is unknown."""
        with self._engine.connect() as connection:
            tenant_id = require_tenant_id(connection, tenant)
        try:
            run = self.store.get(run_id)
        except NotFound:
            run = None
        if run is None or run.tenant_id != tenant_id:
            raise NotFound(f"unknown eval run {run_id!r} in tenant {tenant!r}")
        return run

    def list(self, actor: Actor, tenant: str, release_id: str | None = None) -> list[EvalRun]:
        """Runs, newest first."""
        self._authz.require(actor, "evals.list", tenant)
        with self._engine.connect() as connection:
            tenant_id = require_tenant_id(connection, tenant)
        return self.store.runs(tenant_id, release_id)
