"""The semantic index: the best match above the threshold, within one scope, never an expired one."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from lockgate.cache.semantic import Batcher, SemanticIndex, VectorIndex, unit


def v(*values: float) -> np.ndarray:
    return unit(values)


def test_the_most_similar_vector_above_the_threshold_is_the_match() -> None:
    index = VectorIndex(10, 3)
    index.add(v(1, 0, 0), "x", expires=100)
    index.add(v(0, 1, 0), "y", expires=100)
    match = index.best(v(0.9, 0.1, 0), 0.9, now=0)
    assert match.key == "x"
    assert match.similarity == pytest.approx(0.9 / np.hypot(0.9, 0.1))
    below = index.best(v(1, 1, 0), 0.9, now=0)
    assert below.key is None
    assert below.similarity == pytest.approx(2**-0.5)


def test_an_expired_vector_never_matches() -> None:
    index = VectorIndex(10, 2)
    index.add(v(1, 0), "old", expires=10)
    index.add(v(0.8, 0.6), "new", expires=100)
    assert index.best(v(1, 0), 0.5, now=5).key == "old"
    assert index.best(v(1, 0), 0.5, now=10).key == "new"


def test_a_full_index_replaces_its_oldest_vector_and_grows_as_needed() -> None:
    index = VectorIndex(40, 2)
    for i in range(40):
        index.add(v(1, i), f"k{i}", expires=100)
    assert len(index) == 40
    index.add(v(-1, 0), "newest", expires=100)
    assert len(index) == 40
    assert index.best(v(1, 0), 0.999, now=0).key is None  # k0 (1, 0) was the oldest, replaced
    assert index.best(v(-1, 0), 0.999, now=0).key == "newest"
    assert index.best(v(1, 1), 0.999, now=0).key == "k1"


def test_adding_a_key_again_replaces_its_vector_and_remove_forgets_it() -> None:
    index = VectorIndex(4, 2)
    index.add(v(1, 0), "k", expires=100)
    index.add(v(0, 1), "k", expires=100)
    assert len(index) == 1
    assert index.best(v(1, 0), 0.5, now=0).key is None
    index.remove("k")
    assert index.best(v(0, 1), 0.5, now=0).key is None


def test_scopes_never_match_each_other() -> None:
    semantic = SemanticIndex(max_entries=10, max_vectors=1000)
    semantic.add("tenant-a", v(1, 0), "a", expires=100)
    semantic.add("tenant-b", v(1, 0), "b", expires=100)
    assert semantic.best("tenant-a", v(1, 0), 0.9, now=0).key == "a"
    assert semantic.best("tenant-b", v(1, 0), 0.9, now=0).key == "b"
    assert semantic.best("tenant-c", v(1, 0), 0.9, now=0).key is None
    # Vectors of another model (another size) start the scope again rather than be compared.
    semantic.add("tenant-a", v(1, 0, 0), "a3", expires=100)
    assert semantic.best("tenant-a", v(1, 0), 0.9, now=0).key is None
    assert semantic.best("tenant-a", v(1, 0, 0), 0.9, now=0).key == "a3"


def test_beyond_max_vectors_the_least_recently_used_scopes_go() -> None:
    semantic = SemanticIndex(max_entries=100, max_vectors=40)  # a new scope holds 16 rows
    semantic.add("a", v(1, 0), "a", expires=100)
    semantic.add("b", v(1, 0), "b", expires=100)
    assert semantic.best("a", v(1, 0), 0.9, now=0).key == "a"  # b is now the least recently used
    semantic.add("c", v(1, 0), "c", expires=100)
    assert (len(semantic), semantic.allocated) == (2, 32)
    assert semantic.best("b", v(1, 0), 0.9, now=0).key is None
    assert semantic.best("a", v(1, 0), 0.9, now=0).key == "a"
    # A scope growing past the budget pushes the others out, never itself.
    for i in range(30):
        semantic.add("c", v(1, i), f"c{i}", expires=100)
    assert (len(semantic), semantic.allocated) == (1, 32)
    assert semantic.best("c", v(1, 29), 0.999, now=0).key == "c29"


async def test_concurrent_texts_are_embedded_in_one_batch() -> None:
    batches: list[list[str]] = []

    async def encode(texts: list[str]) -> list[list[float]]:
        batches.append(texts)
        await asyncio.sleep(0.01)
        return [[float(len(t))] for t in texts]

    batcher = Batcher(encode)
    first = await batcher.embed("a")
    together = await asyncio.gather(*(batcher.embed("x" * n) for n in range(1, 6)))
    assert first == [1.0]
    assert together == [[1.0], [2.0], [3.0], [4.0], [5.0]]
    assert [len(b) for b in batches] == [1, 5]


async def test_an_embedding_failure_reaches_every_waiter_and_the_next_batch_runs() -> None:
    calls = 0

    async def encode(texts: list[str]) -> list[list[float]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("model gone")
        return [[1.0] for _ in texts]

    batcher = Batcher(encode)
    results = await asyncio.gather(batcher.embed("a"), batcher.embed("b"), return_exceptions=True)
    assert [type(r) for r in results] == [RuntimeError, RuntimeError]
    assert await batcher.embed("c") == [1.0]
