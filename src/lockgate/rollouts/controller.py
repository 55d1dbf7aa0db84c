"""The rollout controller: judges every running rollout on its live traffic and moves it on or back.

Every server process runs one. It takes the lease of each running rollout it can (exactly one process
drives a rollout; when that process dies its lease expires and another takes over at the stage the store
records) and, every ``analysis.interval``, analyses it:

1. **measure** both arms since the stage started, from the request log: requests, error rate, p95
   latency, cost per request, output-contract violations, quality (online scores and user feedback);
2. **check the split** (canary and A/B; a bandit's share moves within a stage): a sample-ratio mismatch
   (chi-square, p < 0.001) pauses the rollout and says so loudly: the assignment, not the candidate, is
   then in question;
3. **decide** with the analysis policy (Rego, ``policies/analysis.rego``): pass, fail or inconclusive;
4. **act** by strategy: a failure rolls back (the candidate's share drops to 0 on every gateway within
   a second); a pass with the stage's duration and traffic met advances the canary (the last step makes
   the candidate the environment's release); an A/B test or a bandit decides at its end; a shadow run
   completes. Inconclusive holds.

Each analysis is stored, and signed as evidence with the metrics, thresholds and verdict it was made on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from lockgate.ops.metrics import GatewayMetrics
from lockgate.rollouts.policy import analysis_policies, decide
from lockgate.rollouts.service import RolloutService
from lockgate.rollouts.statistics import (
    mann_whitney_u,
    prob_b_beats_a,
    sample_ratio_mismatch,
    thompson_weights,
    two_proportion_z,
    welch_t,
)
from lockgate.rollouts.store import ArmMetrics, Rollout
from lockgate.security.rbac import Actor
from lockgate.store.database import store_unreachable
from lockgate.store.outage import Outage, describe

log = logging.getLogger(__name__)

CONTROLLER = Actor(name="rollout-controller", source="server", system=True)
SRM_P = 0.001
SRM_MIN_REQUESTS = 200


class RolloutController:
    def __init__(
        self,
        rollouts: RolloutService,
        *,
        tick: float = 1.0,
        lease: timedelta = timedelta(seconds=15),
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self._rollouts = rollouts
        self.metrics = metrics
        self._store = rollouts.store
        self._tick = tick
        self._lease = lease
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._analysed: dict[str, float] = {}  # rollout id -> monotonic time of its last analysis here
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._outage = Outage(log, "the store (rollout controller)")

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="rollout-controller")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
        try:
            await asyncio.to_thread(self._store.release, self.owner)
        except Exception as exc:
            # The rest of the shutdown (the request log's drain) must still run; the leases expire.
            log.warning("rollout leases not given back (%s); they expire instead", describe(exc))

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await asyncio.to_thread(self.step)
                self._outage.recovered()
            except Exception as exc:
                if store_unreachable(exc):
                    self._outage.failed(exc, "rollouts wait; their leases may pass to another process")
                else:
                    log.exception("rollout controller step failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._tick)

    def step(self) -> None:
        """Renew or take the lease of every running rollout this process can drive; analyse those due."""
        for rollout_id in dict.fromkeys([*self._store.owned(self.owner), *self._store.claimable()]):
            if not self._store.claim(rollout_id, self.owner, self._lease):
                self._analysed.pop(rollout_id, None)
                continue
            rollout = self._store.get(rollout_id)
            last = self._analysed.get(rollout_id)
            if last is None or time.monotonic() - last >= rollout.spec.analysis.interval:
                self._analysed[rollout_id] = time.monotonic()
                self.analyse(rollout)

    def analyse(self, rollout: Rollout) -> str:
        """One analysis of ``rollout`` and what follows from it; returns the outcome: the verdict, or
        ``paused`` (sample ratio mismatch) or ``aborted`` (the environment moved under it)."""
        outcome = self._analyse(rollout)
        if self.metrics is not None:
            with self._store.engine.connect() as connection:
                tenant = self._rollouts.tenant_name(connection, rollout.tenant_id)
            labels = (tenant, rollout.route, rollout.environment, outcome)
            self.metrics.rollout_analyses.labels(*labels).inc()
        return outcome

    def _analyse(self, rollout: Rollout) -> str:
        serving = self._rollouts.serving(rollout)
        if serving != rollout.baseline_release_id:
            # Someone moved the environment (a rollback, say): the comparison no longer holds.
            reasons = [
                f"the environment now serves {serving}, not the baseline {rollout.baseline_release_id}"
            ]
            with self._store.engine.begin() as connection:
                self._end(connection, rollout, "abort", reasons, {}, "aborted")
            return "aborted"
        spec = rollout.spec
        candidate_arm = "shadow" if rollout.strategy == "shadow" else "candidate"
        measured = self._store.measure(rollout, ["baseline", candidate_arm])
        baseline, candidate = measured["baseline"], measured[candidate_arm]
        document = {
            "strategy": rollout.strategy,
            "stage": rollout.stage,
            "candidate_share": rollout.candidate_share,
            "arms": {"baseline": baseline.as_dict(), "candidate": candidate.as_dict()},
            "analysis": {
                "min_requests": spec.analysis.min_requests,
                "failure_limit": spec.analysis.failure_limit,
                "thresholds": spec.analysis.thresholds.model_dump(mode="json"),
            },
            "failures": rollout.failures,
        }
        policies = analysis_policies(spec.policies, replace=spec.replace_default_policy)
        verdict, failing, reasons = decide(policies, document)
        summary = {"arms": document["arms"], "verdict": verdict, "failing": failing}
        mismatch = self._mismatch(rollout)
        with self._store.engine.begin() as connection:
            tenant = self._rollouts.tenant_name(connection, rollout.tenant_id)
            evidence_id = self._rollouts.record(
                connection, CONTROLLER, tenant, rollout, "analysis", reasons or [verdict], summary
            )
            self._store.record_analysis(connection, rollout, verdict, summary, reasons, evidence_id)
            if failing:
                failures = {**rollout.failures}
                for metric in failing:
                    failures[metric] = failures.get(metric, 0) + 1
                self._store.update(connection, rollout.id, failures=failures)
            if mismatch is not None and verdict != "fail":
                log.error("rollout %s paused: %s", rollout.id, mismatch)
                self._rollouts.transition(
                    connection,
                    CONTROLLER,
                    rollout,
                    "pause",
                    [mismatch],
                    metrics=summary,
                    status="paused",
                    reason=mismatch,
                )
                return "paused"
            if verdict == "fail":
                self._end(connection, rollout, "rollback", reasons, summary, "rolled_back")
                return verdict
            self._act(connection, rollout, verdict, baseline, candidate, summary)
        return verdict

    def _act(
        self,
        connection: Any,
        rollout: Rollout,
        verdict: str,
        baseline: ArmMetrics,
        candidate: ArmMetrics,
        summary: dict[str, Any],
    ) -> None:
        spec = rollout.spec
        elapsed = (datetime.now(UTC) - rollout.stage_started_at).total_seconds()
        if rollout.strategy == "canary":
            stages = spec.canary.stages
            stage = stages[min(rollout.stage, len(stages) - 1)]
            if stage.weight >= 100:
                self._end(
                    connection,
                    rollout,
                    "promote",
                    ["the only stage sends everything to the candidate"],
                    summary,
                    "promoted",
                )
                return
            ready = (
                elapsed >= stage.min_duration
                and min(baseline.requests, candidate.requests) >= stage.min_requests
            )
            if verdict != "pass" or not ready:
                return
            following = stages[rollout.stage + 1]
            if following.weight >= 100:
                reasons = [
                    f"stage {rollout.stage + 1} of {len(stages)} passed at {stage.weight:g}%: "
                    "the candidate takes all traffic"
                ]
                self._end(connection, rollout, "promote", reasons, summary, "promoted")
                return
            reasons = [f"stage {rollout.stage + 1} passed at {stage.weight:g}%; now {following.weight:g}%"]
            self._rollouts.transition(
                connection,
                CONTROLLER,
                rollout,
                "stage",
                reasons,
                metrics=summary,
                stage=rollout.stage + 1,
                candidate_share=following.weight / 100,
                stage_started_at=datetime.now(UTC),
            )
        elif rollout.strategy == "shadow":
            shadow = spec.shadow
            if (
                verdict == "pass"
                and elapsed >= shadow.min_duration
                and candidate.requests >= shadow.min_requests
            ):
                reasons = [
                    f"{candidate.requests} mirrored calls within every threshold; "
                    "a shadow run does not promote the candidate"
                ]
                self._end(connection, rollout, "complete", reasons, summary, "completed")
        elif rollout.strategy == "ab":
            ab = spec.ab
            if elapsed < ab.min_duration or min(baseline.requests, candidate.requests) < ab.min_requests:
                return
            outcome, reasons = self._ab_decision(rollout, baseline, candidate)
            status = {"promote": "promoted", "rollback": "rolled_back"}.get(outcome, "inconclusive")
            self._end(connection, rollout, outcome, reasons, summary, status)
        else:
            self._bandit(connection, rollout, baseline, candidate, summary)

    def _ab_decision(
        self, rollout: Rollout, baseline: ArmMetrics, candidate: ArmMetrics
    ) -> tuple[str, list[str]]:
        ab = rollout.spec.ab
        if ab.metric == "success":
            result = two_proportion_z(
                baseline.successes, baseline.requests, candidate.successes, candidate.requests
            )
            better = result.effect > 0
            rates = (candidate.successes / candidate.requests, baseline.successes / baseline.requests)
            what = f"success rate {rates[0]:.4f} vs {rates[1]:.4f}"
        elif ab.metric == "latency":
            result = mann_whitney_u(
                self._store.latencies(rollout, "baseline"), self._store.latencies(rollout, "candidate")
            )
            better = result.effect < 0
            what = f"latency p95 {candidate.p95_latency_ms:.1f} ms vs {baseline.p95_latency_ms:.1f} ms"
        else:
            base, cand = self._store.scores(rollout, "baseline"), self._store.scores(rollout, "candidate")
            if len(base) < 2 or len(cand) < 2:
                return "inconclusive", ["not enough quality scores to compare"]
            result = welch_t(base, cand)
            better = result.effect > 0
            what = f"quality {sum(cand) / len(cand):.3f} vs {sum(base) / len(base):.3f}"
        detail = f"{what} (p = {result.p_value:.4g}, alpha {ab.alpha})"
        if result.p_value >= ab.alpha:
            return "inconclusive", [f"no significant difference: {detail}; the current release stays"]
        if better:
            return "promote", [f"the candidate is better: {detail}"]
        return "rollback", [f"the candidate is worse: {detail}"]

    def _bandit(
        self,
        connection: Any,
        rollout: Rollout,
        baseline: ArmMetrics,
        candidate: ArmMetrics,
        summary: dict[str, Any],
    ) -> None:
        bandit = rollout.spec.bandit
        rewards = {arm: self._store.rewards(rollout, arm, bandit.reward) for arm in ("baseline", "candidate")}
        age = (datetime.now(UTC) - rollout.created_at).total_seconds()
        if age >= bandit.horizon:
            (sa, fa), (sb, fb) = rewards["baseline"], rewards["candidate"]
            p = prob_b_beats_a(round(sa), round(sa + fa), round(sb), round(sb + fb))
            reasons = [f"P(candidate better) = {p:.3f} on {bandit.reward} after {age:.0f} s"]
            if p >= bandit.decide_at:
                self._end(connection, rollout, "promote", reasons, summary, "promoted")
            elif p <= 1 - bandit.decide_at:
                self._end(connection, rollout, "rollback", reasons, summary, "rolled_back")
            else:
                self._end(connection, rollout, "inconclusive", reasons, summary, "inconclusive")
            return
        if min(baseline.requests, candidate.requests) < bandit.burn_in:
            return
        share = thompson_weights(rewards, min_share=bandit.min_share, seed=int(time.time()))["candidate"]
        if abs(share - rollout.candidate_share) >= 0.01:
            reasons = [
                f"Thompson sampling on {bandit.reward}: "
                f"the candidate's share {rollout.candidate_share:.2f} -> {share:.2f}"
            ]
            self._rollouts.transition(
                connection, CONTROLLER, rollout, "share", reasons, metrics=summary, candidate_share=share
            )

    def _end(
        self,
        connection: Any,
        rollout: Rollout,
        event: str,
        reasons: list[str],
        summary: dict[str, Any],
        status: str,
    ) -> None:
        share = 1.0 if status == "promoted" else 0.0
        self._rollouts.transition(
            connection,
            CONTROLLER,
            rollout,
            event,
            reasons,
            metrics=summary,
            status=status,
            candidate_share=share,
            finished_at=datetime.now(UTC),
            reason="; ".join(reasons)[:2000],
            lease_owner=None,
            lease_until=None,
        )
        log.info(
            "rollout %s of %s/%s ended %s: %s",
            rollout.id,
            rollout.route,
            rollout.environment,
            status,
            reasons,
        )

    def _mismatch(self, rollout: Rollout) -> str | None:
        # A bandit moves its split without starting a new stage, so its counts mix shares: not checked.
        if rollout.strategy not in ("canary", "ab") or rollout.candidate_share in (0.0, 1.0):
            return None
        counts = self._store.counts(rollout)
        observed = {"baseline": counts.get("baseline", 0), "candidate": counts.get("candidate", 0)}
        if sum(observed.values()) < SRM_MIN_REQUESTS:
            return None
        expected = {"baseline": 1 - rollout.candidate_share, "candidate": rollout.candidate_share}
        result = sample_ratio_mismatch(observed, expected)
        if result.p_value >= SRM_P:
            return None
        return (
            f"sample ratio mismatch: {observed['candidate']} of {sum(observed.values())} calls went to the "
            f"candidate against an expected {rollout.candidate_share:.0%} "
            f"(chi-square p = {result.p_value:.2g}); "
            "the rollout is paused until someone resumes it"
        )
