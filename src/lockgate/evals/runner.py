"""The eval runner: every (case, repeat) of a dataset through a release, scored, recorded as it finishes.

Concurrency is bounded by a fixed pool of workers pulling from one queue, so at most ``concurrency``
calls are in flight. Transient gateway errors (429, 5xx, timeouts) are retried with jittered backoff;
anything else is the release's answer and is scored as a failure. Each result is written the moment
it is scored, so stopping loses nothing finished: when ``stop`` is set (the server stopping, a
cancellation) no new case starts and the ones in flight finish and are recorded; a resumed run skips
every recorded pair.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from lockgate.errors import GatewayError
from lockgate.evals.cases import Case, CaseResult, Outcome, Score
from lockgate.evals.scorers import Scorer
from lockgate.gateway.routebook import ServingRelease


class CaseClient(Protocol):
    async def run_case(self, release: ServingRelease, case: Case) -> Outcome: ...


class ResultSink(Protocol):
    def save_result(self, run_id: str, result: CaseResult) -> bool: ...


@dataclass(frozen=True, slots=True)
class RunLimits:
    concurrency: int = 4
    retries: int = 3
    backoff_initial: float = 0.5
    backoff_max: float = 8.0


class Runner:
    def __init__(
        self,
        client: CaseClient,
        scorers: Sequence[Scorer],
        sink: ResultSink,
        limits: RunLimits = RunLimits(),
    ) -> None:
        self._client = client
        self._scorers = scorers
        self._sink = sink
        self._limits = limits

    async def run(
        self,
        run_id: str,
        release: ServingRelease,
        todo: Sequence[tuple[Case, int]],
        stop: asyncio.Event,
        on_result: Callable[[CaseResult], None] = lambda _: None,
    ) -> bool:
        """Run ``todo``; True when every item was recorded, False when ``stop`` cut the run short."""
        queue: asyncio.Queue[tuple[Case, int]] = asyncio.Queue()
        for item in todo:
            queue.put_nowait(item)

        async def worker() -> None:
            while not stop.is_set():
                try:
                    case, repeat = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                result = await self.run_one(release, case, repeat)
                if await asyncio.to_thread(self._sink.save_result, run_id, result):
                    on_result(result)

        workers = max(1, min(self._limits.concurrency, len(todo)))
        await asyncio.gather(*(worker() for _ in range(workers)))
        return queue.empty() and not stop.is_set()

    async def run_one(self, release: ServingRelease, case: Case, repeat: int) -> CaseResult:
        outcome = await self._call(release, case)
        scores = await asyncio.gather(*(self._score(scorer, case, outcome) for scorer in self._scorers))
        return CaseResult(case, repeat, outcome, tuple(scores))

    async def _call(self, release: ServingRelease, case: Case) -> Outcome:
        limits = self._limits
        for attempt in range(limits.retries + 1):
            try:
                return await self._client.run_case(release, case)
            except GatewayError as error:
                if attempt == limits.retries:
                    detail = f"{error.code or type(error).__name__}: {error.message}"
                    return Outcome("", 0.0, error=f"{detail} (after {attempt + 1} attempts)")
                ceiling = min(limits.backoff_max, limits.backoff_initial * 2**attempt)
                await asyncio.sleep(random.uniform(0, ceiling))
        raise AssertionError("unreachable")

    @staticmethod
    async def _score(scorer: Scorer, case: Case, outcome: Outcome) -> Score:
        try:
            return await scorer.score(case, outcome)
        except Exception as exc:
            # A scorer that breaks (a judge model down, say) fails its score; it does not lose the case.
            reason = f"scorer failed: {type(exc).__name__}: {exc}"
            return Score(scorer.name, scorer.kind, 0.0, False, reason[:500], scorer.weight)
