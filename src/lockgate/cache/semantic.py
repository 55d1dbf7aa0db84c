"""The semantic cache's vector index, in the worker's memory, and the embedders that feed it.

A scope (one tenant, or tenant and key; one release or model; one exact system prompt, conversation
and parameter set: see ``keys``) holds up to ``max_entries`` unit vectors, each pointing at the exact
key of a stored answer. A lookup is a brute-force cosine similarity (one matrix-vector product over
the scope's vectors) that returns the best match at or above the threshold: at 1000 vectors of 384
dimensions that is 1.5 MB and well under a millisecond. When a scope is full the oldest vector is
replaced; beyond ``max_vectors`` rows in all scopes together, the least recently used scopes are
dropped (100,000 rows of 384 float32 dimensions are about 150 MB). Vectors carry their answer's expiry,
so an expired answer is never matched.

The index is per worker process, and is not shared between replicas even when the answers are in
Redis: a worker only matches questions it answered itself (the exact cache, in Redis, is shared).

Embedders: the local all-MiniLM-L6-v2 (``evals.scorers.embedding.LocalEmbedder``, its own process;
about 10 ms a sentence on a CPU), or a gateway embeddings model called through the gateway's own
pipeline on the caller's behalf (so it is authorised, accounted and logged like any call). Concurrent
lookups are embedded together, one batch at a time.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson
from numpy.typing import NDArray

from lockgate.gateway.pipeline import Call, Handler
from lockgate.wire import EmbeddingRequest, validate

log = logging.getLogger(__name__)

Vector = NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Match:
    similarity: float
    key: str | None
    """The exact key of the best stored answer at or above the threshold; None: no hit."""


def unit(values: Sequence[float] | NDArray[Any]) -> Vector:
    vector = np.asarray(values, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else vector


class VectorIndex:
    """The vectors of one scope: a ring of at most ``capacity`` rows, grown as needed."""

    def __init__(self, capacity: int, dimensions: int) -> None:
        self._capacity = capacity
        self._vectors = np.zeros((min(16, capacity), dimensions), dtype=np.float32)
        self._expires = np.zeros(min(16, capacity), dtype=np.float64)
        self._keys: list[str | None] = [None] * min(16, capacity)
        self._rows: dict[str, int] = {}
        self._size = 0
        self._next = 0

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def allocated(self) -> int:
        return len(self._keys)

    @property
    def dimensions(self) -> int:
        return int(self._vectors.shape[1])

    def add(self, vector: Vector, key: str, expires: float) -> None:
        row = self._rows.get(key)
        if row is None:
            row = self._free_row()
            previous = self._keys[row]
            if previous is not None:
                self._rows.pop(previous, None)
            self._keys[row] = key
            self._rows[key] = row
        self._vectors[row] = vector
        self._expires[row] = expires

    def remove(self, key: str) -> None:
        row = self._rows.pop(key, None)
        if row is not None:
            self._keys[row] = None
            self._expires[row] = 0.0

    def best(self, vector: Vector, threshold: float, now: float) -> Match:
        if not self._size:
            return Match(0.0, None)
        similarities = self._vectors[: self._size] @ vector
        similarities[self._expires[: self._size] <= now] = -1.0
        row = int(np.argmax(similarities))
        similarity = float(similarities[row])
        key = self._keys[row] if similarity >= threshold else None
        return Match(max(similarity, 0.0), key)

    def _free_row(self) -> int:
        if self._size < self._capacity:
            if self._size == len(self._keys):
                self._grow()
            self._size += 1
            return self._size - 1
        row = self._next
        self._next = (self._next + 1) % self._capacity
        return row

    def _grow(self) -> None:
        rows = min(self._capacity, 2 * len(self._keys))
        extra = rows - len(self._keys)
        self._vectors = np.concatenate([self._vectors, np.zeros((extra, self.dimensions), np.float32)])
        self._expires = np.concatenate([self._expires, np.zeros(extra, np.float64)])
        self._keys.extend([None] * extra)


class SemanticIndex:
    """Every scope's ``VectorIndex``; beyond ``max_vectors`` rows in all, least recently used scopes go."""

    def __init__(self, max_entries: int, max_vectors: int) -> None:
        self._scopes: OrderedDict[str, VectorIndex] = OrderedDict()
        self._max_entries = max_entries
        self._max_vectors = max_vectors
        self.allocated = 0
        """Rows held by every scope together (a scope grows its rows in steps, up to ``max_entries``)."""

    def __len__(self) -> int:
        return len(self._scopes)

    def best(self, scope: str, vector: Vector, threshold: float, now: float) -> Match:
        index = self._scopes.get(scope)
        if index is None or index.dimensions != vector.shape[0]:
            return Match(0.0, None)
        self._scopes.move_to_end(scope)
        return index.best(vector, threshold, now)

    def add(self, scope: str, vector: Vector, key: str, expires: float) -> None:
        index = self._scopes.get(scope)
        if index is None or index.dimensions != vector.shape[0]:
            if index is not None:
                self.allocated -= index.allocated
            index = self._scopes[scope] = VectorIndex(self._max_entries, int(vector.shape[0]))
            self.allocated += index.allocated
        self._scopes.move_to_end(scope)
        before = index.allocated
        index.add(vector, key, expires)
        self.allocated += index.allocated - before
        while self.allocated > self._max_vectors and len(self._scopes) > 1:
            _, dropped = self._scopes.popitem(last=False)
            self.allocated -= dropped.allocated

    def remove(self, scope: str, key: str) -> None:
        index = self._scopes.get(scope)
        if index is not None:
            index.remove(key)


class Embedder(Protocol):
    ready: bool
    """False until the model answers (the local model loads for a few seconds after start)."""

    async def embed(self, call: Call, text: str) -> Vector: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


Encode = Callable[[list[str]], Awaitable[list[list[float]]]]


class Batcher:
    """Embeds texts asked for concurrently in one call of ``encode``, one batch at a time."""

    def __init__(self, encode: Encode, max_batch: int = 64) -> None:
        self._encode = encode
        self._max_batch = max_batch
        self._pending: list[tuple[str, asyncio.Future[list[float]]]] = []
        self._running = False
        self._task: asyncio.Task[None] | None = None

    async def embed(self, text: str) -> list[float]:
        future: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
        self._pending.append((text, future))
        if not self._running:
            self._running = True
            self._task = asyncio.create_task(self._drain(), name="cache-embedder")
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = [(t, f) for t, f in self._pending[: self._max_batch] if not f.done()]
                del self._pending[: self._max_batch]
                if not batch:
                    continue
                try:
                    vectors = await self._encode([text for text, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), vector in zip(batch, vectors, strict=True):
                    if not future.done():
                        future.set_result(vector)
        finally:
            self._running = False


class LocalModelEmbedder:
    """all-MiniLM-L6-v2 in its worker process, warmed up in the background when the gateway starts."""

    def __init__(self) -> None:
        from lockgate.evals.scorers.embedding import LocalEmbedder

        self._model = LocalEmbedder()
        self._batcher = Batcher(lambda texts: self._model(None, texts))
        self._warming: asyncio.Task[None] | None = None
        self.ready = False

    async def embed(self, call: Call, text: str) -> Vector:
        return unit(await self._batcher.embed(text))

    async def start(self) -> None:
        self._warming = asyncio.create_task(self._warm(), name="cache-embedder-warm-up")

    async def close(self) -> None:
        if self._warming is not None:
            self._warming.cancel()
        await asyncio.to_thread(self._model.close)

    async def _warm(self) -> None:
        try:
            await self._batcher.embed("warm up")
        except Exception:
            log.exception("the semantic cache's local embedding model did not load; semantic lookups are off")
            return
        self.ready = True


class GatewayModelEmbedder:
    """A gateway embeddings model, called through the whole pipeline as the caller."""

    def __init__(self, model: str) -> None:
        self._model = model
        self.handler: Handler | None = None
        """The gateway's pipeline; set once it is composed."""
        self.ready = True

    async def embed(self, call: Call, text: str) -> Vector:
        assert self.handler is not None, "the gateway sets the handler after composing the pipeline"
        body: dict[str, Any] = {"model": self._model, "input": text}
        inner = Call(
            request_id=f"cache_{uuid.uuid4().hex}",
            endpoint="embeddings",
            raw=orjson.dumps(body),
            body=body,
            request=validate(body, EmbeddingRequest),
            authorization=None,
            principal=call.principal,
        )
        reply = await self.handler(inner)
        data = (reply.body or {}).get("data") or ()
        if not data:
            raise RuntimeError(f"the embeddings model {self._model} answered no vector")
        return unit(data[0]["embedding"])

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
