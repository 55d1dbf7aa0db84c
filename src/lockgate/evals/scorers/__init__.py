"""Scorers: each turns a case and what the model answered into a ``Score``.

Build them from the specs a dataset stores with ``build_scorers``; check specs without building with
``validate_scorer_specs``. Importing this package never loads torch: the local embedding model is
loaded on first use, in its own process (see ``embedding``).
"""

from lockgate.evals.scorers.base import Scorer
from lockgate.evals.scorers.embedding import LocalEmbedder
from lockgate.evals.scorers.specs import (
    SCORER_TYPES,
    build_scorers,
    parse_scorer_specs,
    validate_scorer_specs,
)

__all__ = [
    "SCORER_TYPES",
    "LocalEmbedder",
    "Scorer",
    "build_scorers",
    "parse_scorer_specs",
    "validate_scorer_specs",
]
