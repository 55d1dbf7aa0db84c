"""The promotion guard: the route's gate decides, and every attempt leaves signed evidence.

Installed on ``Environments`` when the services are built. ``decide`` evaluates the gate for the target
environment; ``record`` writes the evidence record: the release and its commit, the dataset versions,
the hashes of the candidate's and baseline's reports, the runs read with the fingerprint of the
deployments that answered them, the policy (hash and sources), the decision with its reasons and
warnings, who asked and who approved, and the gate input the policy saw. Rollbacks are recorded too.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection

from lockgate.control.environments import Action, Attempt, Environments, Verdict
from lockgate.control.releases import Release
from lockgate.evals.store import EvalStore
from lockgate.gates.evidence import DatasetRef, EvidenceDraft, EvidenceService, PolicyRef, ReportRef
from lockgate.gates.evidence_format import RunRef
from lockgate.gates.gate import GateResult, GateService
from lockgate.security.rbac import Actor


class GatePromotionGuard:
    def __init__(
        self, gates: GateService, evidence: EvidenceService, store: EvalStore, environments: Environments
    ) -> None:
        self._gates = gates
        self._evidence = evidence
        self._store = store
        self._environments = environments

    def decide(self, tenant: str, release: Release, environment: str) -> Verdict:
        return self._gates.decide(tenant, release, environment)

    def record(
        self,
        actor: Actor,
        tenant: str,
        release: Release,
        environment: str,
        verdict: Verdict | None,
        attempt: Attempt,
        reasons: list[str],
        connection: Connection | None,
        action: Action = "promote",
    ) -> None:
        result = verdict if isinstance(verdict, GateResult) else None
        draft = EvidenceDraft(
            route=release.content.route,
            environment=environment,
            release_id=release.id,
            git_commit=release.content.git_commit,
            decision=attempt,
            action=action,
            reasons=reasons,
            warnings=list(result.decision.warn) if result is not None else [],
            datasets=[
                DatasetRef(name=d.name, version=d.version, sha256=d.sha256)
                for d in (result.datasets if result is not None else [])
            ],
            reports=[
                ReportRef(
                    run_id=run.id,
                    dataset=str(run.settings.get("dataset", run.dataset_id)),
                    role=role,
                    format=report.format,
                    sha256=report.sha256,
                )
                for role, run in (result.runs if result is not None else [])
                for report in self._store.reports(run.id)
            ],
            runs=[
                RunRef(
                    run_id=run.id,
                    dataset=str(run.settings.get("dataset", run.dataset_id)),
                    role=role,
                    origin="server" if run.origin == "server" else "client",
                    fingerprint=run.fingerprint,
                    deployments=run.deployments or [],
                )
                for role, run in (result.runs if result is not None else [])
            ],
            policy=(
                PolicyRef(
                    sha256=result.policies.sha256,
                    engine=result.decision.engine,
                    modules=dict(result.policies.modules),
                )
                if result is not None and result.policies is not None
                else None
            ),
            approvers=self._environments.approvers(release.id, environment),
            requested_by=actor.name,
            requested_at=datetime.now(UTC),
            gate_input=result.input if result is not None and result.gated else None,
        )
        if connection is None:
            self._evidence.record(actor, tenant, draft)
        else:
            self._evidence.append(connection, actor, tenant, draft)
