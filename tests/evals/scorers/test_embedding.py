"""Embedding similarity: the scorer's arithmetic with given vectors, and the local MiniLM model."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator, Sequence

import pytest

from lockgate.evals.cases import ScoringContext
from lockgate.evals.scorers import LocalEmbedder
from lockgate.service_errors import Invalid
from tests.evals.scorers.support import score

VECTORS = {"Paris": [1.0, 0.0], "It is Paris": [0.8, 0.6], "Lyon": [0.0, 1.0], "Not Paris": [-1.0, 0.0]}


class FixedEmbeddings:
    def __init__(self) -> None:
        self.models: list[str | None] = []

    async def __call__(self, model: str | None, texts: Sequence[str]) -> list[list[float]]:
        self.models.append(model)
        return [VECTORS[text] for text in texts]


async def test_cosine_similarity_against_the_threshold() -> None:
    embed = FixedEmbeddings()
    context = ScoringContext(embed=embed)
    close = await score({"type": "embedding"}, "It is Paris", scoring=context, expected="Paris")
    assert close.value == pytest.approx(0.8)
    assert close.passed
    assert close.reason == "similarity 0.800 to the expected answer (all-MiniLM-L6-v2)"
    far = await score({"type": "embedding"}, "Lyon", scoring=context, expected="Paris")
    assert (far.value, far.passed) == (0.0, False)
    opposite = await score({"type": "embedding"}, "Not Paris", scoring=context, expected="Paris")
    assert (opposite.value, opposite.details["similarity"]) == (0.0, -1.0)
    strict = await score(
        {"type": "embedding", "threshold": 0.9}, "It is Paris", scoring=context, expected="Paris"
    )
    assert not strict.passed


async def test_the_model_is_passed_through_and_value_overrides_the_case() -> None:
    embed = FixedEmbeddings()
    spec = {"type": "embedding", "model": "text-embed", "value": "Lyon"}
    result = await score(spec, "Lyon", scoring=ScoringContext(embed=embed), expected="Paris")
    assert (result.value, embed.models) == (1.0, ["text-embed"])
    assert result.details["embedding_model"] == "text-embed"


async def test_nothing_to_compare() -> None:
    result = await score(
        {"type": "embedding", "threshold": 0}, "Paris", scoring=ScoringContext(embed=FixedEmbeddings())
    )
    assert (result.passed, result.reason.startswith("nothing to compare")) == (False, True)


def test_importing_the_scorers_does_not_load_torch() -> None:
    code = "import sys, lockgate.evals.scorers; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


local_model = pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None, reason="needs lockgate[embeddings]"
)


@pytest.fixture(scope="module")
def embedder() -> Iterator[LocalEmbedder]:
    local = LocalEmbedder()
    yield local
    local.close()


@local_model
async def test_local_minilm_tells_a_paraphrase_from_an_unrelated_sentence(embedder: LocalEmbedder) -> None:
    context = ScoringContext(embed=embedder)
    expected = "You can return unused items within 30 days for a full refund."
    paraphrase = await score(
        {"type": "embedding"},
        "Unused products may be sent back within a month and fully refunded.",
        scoring=context,
        expected=expected,
    )
    assert paraphrase.passed, paraphrase.reason
    unrelated = await score(
        {"type": "embedding"},
        "The weather in Oslo is cold and windy in February.",
        scoring=context,
        expected=expected,
    )
    assert not unrelated.passed, unrelated.reason
    assert unrelated.value < paraphrase.value


@local_model
async def test_local_minilm_runs_beside_regopy(embedder: LocalEmbedder) -> None:
    """The gate's policy engine loads regopy in this process; torch must not, or the process aborts."""
    import regopy  # noqa: F401

    [vector] = await embedder(None, ["hello"])
    assert len(vector) == 384
    assert "torch" not in sys.modules


@local_model
async def test_local_embedder_serves_only_the_local_model(embedder: LocalEmbedder) -> None:
    with pytest.raises(Invalid, match="serves only all-MiniLM-L6-v2"):
        await embedder("text-embedding-3-small", ["hello"])
