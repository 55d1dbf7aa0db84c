"""What scorers call besides the answer they judge: models through the gateway, and the local embedder.

The eval worker and the online quality scorer of one server process share one ``ScoringServices``: a
judge or a gateway embeddings model is called through the pipeline with the tenant's allow-list
(``PipelineClient``), and the embedding scorer without a model uses the local MiniLM embedder, a
subprocess started on first use and closed once, with the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import Engine, select

from lockgate.evals.cases import ScoringContext
from lockgate.evals.client import PipelineClient
from lockgate.evals.scorers import LocalEmbedder
from lockgate.store.tables import tenants


class ScoringServices:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._embedder: LocalEmbedder | None = None

    def allowed_models(self, tenant_id: str) -> frozenset[str] | None:
        """The tenant's model allow-list (None: every model); reads the store, so call it off the loop."""
        with self._engine.connect() as connection:
            models = connection.execute(
                select(tenants.c.allowed_models).where(tenants.c.id == tenant_id)
            ).scalar()
        return frozenset(models) if models is not None else None

    def context(self, client: PipelineClient) -> ScoringContext:
        """Scorers' services for calls made as ``client``'s tenant."""

        async def embed(model: str | None, texts: Sequence[str]) -> list[list[float]]:
            if model is not None:
                return await client.embed(model, texts)
            if self._embedder is None:
                self._embedder = LocalEmbedder()
            return await self._embedder(None, texts)

        return ScoringContext(complete=client.complete, embed=embed)

    async def close(self) -> None:
        """Stop the local embedder, if it was started."""
        if self._embedder is not None:
            embedder, self._embedder = self._embedder, None
            await asyncio.to_thread(embedder.close)
