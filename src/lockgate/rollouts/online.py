"""Online quality: a sampled share of a rollout's live answers, scored the way an eval scores a case.

A rollout spec may ask for it::

    analysis:
      online_quality:
        sample: 0.1               # share of answers scored, both arms and mirrored (shadow) calls
        scorers:                  # scorer specs, as in a dataset file
          - {type: contains, value: "order number"}
          - {type: judge, model: judge-llm, rubric: "Is the answer polite and correct?"}

The gateway tells the ``OnlineScorer`` (its ``AnswerObserver``, installed by the server) of every
complete answer of such a rollout. Whether an answer is scored depends only on its request id (a keyed
hash with the rollout's salt, below ``sample``), so the choice is deterministic and independent of the
arm. Scoring runs in background tasks, never on the client's path: at most ``limit`` answers are being
scored at once per process, and answers beyond that are dropped and counted
(``lockgate_online_scores_total{outcome="dropped"}``). A judge or a gateway-served embedding model is
called through the gateway pipeline like an eval's (``PipelineClient``: priced, logged, within the
tenant's allow-list). The case an answer is scored as has the caller's variables and conversation and
no expected answer, so online scorers compare against their own ``value`` (contains, regex, ...), a
rubric (judge), or the answer alone (json_valid, refusal, safety).

Each scored answer writes one row to ``online_scores``: the request id, the rollout, the arm and the
weighted mean of its quality scores (as an eval case's quality). The controller reads them with user
feedback as the arm's quality. An answer whose scorers broke (a judge that could not be reached) is
counted as ``failed`` and not written: a measurement that did not happen is not a zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from prometheus_client import Counter
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from lockgate.errors import InvalidRequest
from lockgate.evals.cases import Case, CaseResult, Outcome
from lockgate.evals.client import PipelineClient
from lockgate.evals.scorers import Scorer, build_scorers
from lockgate.evals.scoring import ScoringServices
from lockgate.gateway.assignment import bucket
from lockgate.gateway.pipeline import Call
from lockgate.gateway.routebook import LiveRollout, OnlineQuality, ServingRelease
from lockgate.gateway.runtime import Gateway
from lockgate.service_errors import Invalid
from lockgate.store.database import store_unreachable
from lockgate.store.outage import Outage
from lockgate.store.tables import online_scores
from lockgate.wire import prompt_variables

log = logging.getLogger(__name__)

MAX_CACHED_ROLLOUTS = 64


@dataclass(frozen=True, slots=True)
class Answer:
    """What scoring needs of a call, copied off it (the call itself is not kept)."""

    request_id: str
    rollout_id: str
    arm: str
    tenant_id: str
    tenant: str
    raw: bytes
    text: str
    latency_ms: float


def sampled(rollout: LiveRollout, request_id: str) -> bool:
    """Whether the answer to ``request_id`` is scored: a hash of the id, below the rollout's sample."""
    online = rollout.online
    return online is not None and bucket(rollout.salt, f"online:{request_id}") < online.sample


class OnlineScorer:
    """The gateway's ``AnswerObserver``: scores sampled answers of rollouts with online quality."""

    def __init__(
        self,
        gateway: Gateway,
        engine: Engine,
        *,
        limit: int = 32,
        timeout: float = 120.0,
        scoring: ScoringServices | None = None,
    ) -> None:
        self._gateway = gateway
        self._engine = engine
        self._own_scoring = scoring is None
        self._scoring = scoring or ScoringServices(engine)
        self.limit = limit
        """Answers being scored at once, at most; more are dropped (and counted)."""
        self._timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()
        self._scorers: dict[str, list[Scorer] | Invalid] = {}
        self._stopping = False
        self._outage = Outage(log, "the store (online quality)")
        self.outcomes = Counter(
            "lockgate_online_scores",
            "Live answers sampled for online quality, by what became of them "
            "(scored, unscored: no quality scorer applied, failed, dropped: too many in flight)",
            ["outcome"],
            registry=gateway.metrics.registry,
        )

    # --- the gateway's side: never blocks, never raises -------------------------------------------

    def answered(self, call: Call, release: ServingRelease, rollout: LiveRollout, text: str) -> None:
        try:
            self._answered(call, rollout, text)
        except Exception:
            log.exception("online quality: could not take the answer of %s", call.request_id)

    def _answered(self, call: Call, rollout: LiveRollout, text: str) -> None:
        online = rollout.online
        principal = call.principal
        if self._stopping or online is None or principal is None or call.arm is None:
            return
        if not sampled(rollout, call.request_id):
            return
        if len(self._tasks) >= self.limit:
            self.outcomes.labels("dropped").inc()
            return
        answer = Answer(
            request_id=call.request_id,
            rollout_id=rollout.id,
            arm=call.arm,
            tenant_id=principal.tenant_id,
            tenant=principal.tenant,
            raw=call.raw,
            text=text,
            latency_ms=(time.perf_counter() - call.started) * 1000.0,
        )
        task = asyncio.get_running_loop().create_task(self._score(online, answer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- scoring, in the background ------------------------------------------------------------------

    async def _score(self, online: OnlineQuality, answer: Answer) -> None:
        try:
            quality = await asyncio.wait_for(self._quality(online, answer), self._timeout)
            if quality is None:
                self.outcomes.labels("unscored").inc()
                return
            await asyncio.to_thread(self._write, answer, quality)
            self._outage.recovered()
        except asyncio.CancelledError:
            self.outcomes.labels("failed").inc()
            raise
        except Exception as exc:
            self.outcomes.labels("failed").inc()
            if store_unreachable(exc):
                self._outage.failed(exc, "online scores are lost until it answers (counted as failed)")
                return
            log.warning(
                "online quality: scoring %s of rollout %s failed: %s: %s",
                answer.request_id,
                answer.rollout_id,
                type(exc).__name__,
                exc,
            )
            return
        self.outcomes.labels("scored").inc()

    async def _quality(self, online: OnlineQuality, answer: Answer) -> float | None:
        scorers = await self._built(online, answer)
        case = _case(answer)
        outcome = Outcome(answer.text, answer.latency_ms)
        results = await asyncio.gather(*(s.score(case, outcome) for s in scorers), return_exceptions=True)
        broken = [r for r in results if isinstance(r, BaseException)]
        if broken:
            raise broken[0]
        scores = tuple(r for r in results if not isinstance(r, BaseException))
        return CaseResult(case, 0, outcome, scores).quality

    async def _built(self, online: OnlineQuality, answer: Answer) -> list[Scorer]:
        """The rollout's scorers, built once per rollout (a bad spec is reported once, then skipped)."""
        found = self._scorers.get(answer.rollout_id)
        if found is None:
            allowed = await asyncio.to_thread(self._scoring.allowed_models, answer.tenant_id)
            client = PipelineClient(self._gateway, answer.tenant_id, answer.tenant, allowed)
            context = self._scoring.context(client)
            try:
                found = build_scorers(online.scorers, context)
            except Invalid as exc:
                log.error("online quality of rollout %s cannot be scored: %s", answer.rollout_id, exc.message)
                found = exc
            if len(self._scorers) >= MAX_CACHED_ROLLOUTS:
                self._scorers.pop(next(iter(self._scorers)))
            self._scorers[answer.rollout_id] = found
        if isinstance(found, Invalid):
            raise found
        return found

    def _write(self, answer: Answer, quality: float) -> None:
        row = {
            "request_id": answer.request_id,
            "rollout_id": answer.rollout_id,
            "arm": answer.arm,
            "score": quality,
            "created_at": datetime.now(UTC),
        }
        with contextlib.suppress(IntegrityError), self._engine.begin() as connection:
            connection.execute(online_scores.insert().values(**row))

    # --- lifecycle -----------------------------------------------------------------------------------

    def in_flight(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait (at most ``timeout`` seconds) for the answers being scored."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def stop(self, timeout: float = 10.0) -> None:
        """Take no more answers; let those being scored finish for ``timeout`` seconds, cancel the rest."""
        self._stopping = True
        await self.drain(timeout)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._own_scoring:
            await self._scoring.close()


def _case(answer: Answer) -> Case:
    """The answer as an eval case: the caller's variables and conversation, nothing expected."""
    try:
        body = orjson.loads(answer.raw)
    except orjson.JSONDecodeError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    try:
        variables = prompt_variables(body)
    except InvalidRequest:
        variables = None
    messages = body.get("messages")
    turns = [
        {"role": str(m.get("role") or "user"), "content": m["content"]}
        for m in messages or ()
        if isinstance(m, dict) and isinstance(m.get("content"), str)
    ]
    try:
        return Case(
            id=answer.request_id,
            variables=variables if isinstance(variables, dict) else {},
            messages=turns,
            tags=["online", answer.arm],
        )
    except ValidationError:
        return Case(id=answer.request_id, tags=["online", answer.arm])
