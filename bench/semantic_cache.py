"""Semantic cache quality: hit rate on paraphrases and false-hit rate on unrelated questions, per threshold.

The data set (``bench/data/semantic-cache-pairs.jsonl``) holds pairs written for this measurement across
14 domains: ``paraphrase`` pairs ask the same thing in other words (a hit is right), ``unrelated``
pairs ask something else about the same subject, often with most words in common ("How do I reset my
password?" / "How do I reset my router?"), where a hit would serve a wrong answer. Both questions of a
pair are embedded with the local all-MiniLM-L6-v2, as the cache does (whitespace collapsed,
lower-cased), and two measures are taken per threshold:

- **pairs**: the share of paraphrase pairs whose cosine similarity reaches the threshold (hit rate), and
  the share of unrelated pairs that do (false-hit rate);
- **index**: the cache's own index (``cache.semantic.SemanticIndex``) is filled with every first question
  of both kinds in one scope, then every second question is looked up, as a stream of live questions
  would be. For a paraphrase the hit is right only if it returns its own pair (``wrong`` counts hits on
  another question); for an unrelated question any hit is false.

``--template`` also runs both measures with each question inside a prompt template's user message:
what the cache compares for a ``route:`` call whose question it cannot single out as one prompt
variable (see ``cache.keys``). The template's shared words raise every similarity.

Raw results go to ``bench/results/semantic-cache-<UTC timestamp>.json``; Markdown tables to stdout.

    python -m bench.semantic_cache [--template]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from lockgate.cache.keys import semantic_text
from lockgate.cache.semantic import SemanticIndex, unit
from lockgate.evals.scorers.embedding import LocalEmbedder

DATA = Path(__file__).with_name("data") / "semantic-cache-pairs.jsonl"
RESULTS = Path(__file__).with_name("results")
THRESHOLDS = (0.70, 0.75, 0.80, 0.82, 0.84, 0.86, 0.88, 0.90, 0.92, 0.94, 0.96)
TEMPLATE = "You are the support assistant of an online shop. Answer the customer briefly.\n\nCustomer: {q}"


def load() -> list[dict[str, str]]:
    return [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]


async def embed_all(embedder: LocalEmbedder, texts: list[str]) -> dict[str, np.ndarray]:
    unique = sorted(set(texts))
    vectors = await embedder(None, unique)
    return {t: unit(v) for t, v in zip(unique, vectors, strict=True)}


def pair_rates(pairs: list[dict[str, str]], vectors: dict[str, np.ndarray], wrap: str) -> dict[str, Any]:
    sims: dict[str, list[float]] = {"paraphrase": [], "unrelated": []}
    scored = []
    for pair in pairs:
        a, b = (semantic_text(wrap.format(q=pair[k])) for k in ("a", "b"))
        similarity = float(vectors[a] @ vectors[b])
        sims[pair["kind"]].append(similarity)
        scored.append((similarity, pair))
    rows = []
    for t in THRESHOLDS:
        hit = sum(s >= t for s in sims["paraphrase"]) / len(sims["paraphrase"])
        false = sum(s >= t for s in sims["unrelated"]) / len(sims["unrelated"])
        rows.append({"threshold": t, "hit_rate": hit, "false_hit_rate": false})
    paraphrases = sorted((s, p) for s, p in scored if p["kind"] == "paraphrase")
    unrelated = sorted(((s, p) for s, p in scored if p["kind"] == "unrelated"), reverse=True)
    return {
        "rows": rows,
        "paraphrase_similarity": _summary(sims["paraphrase"]),
        "unrelated_similarity": _summary(sims["unrelated"]),
        "hardest_paraphrases": [{"similarity": s, "a": p["a"], "b": p["b"]} for s, p in paraphrases[:5]],
        "closest_unrelated": [{"similarity": s, "a": p["a"], "b": p["b"]} for s, p in unrelated[:5]],
    }


def index_rates(
    pairs: list[dict[str, str]], vectors: dict[str, np.ndarray], wrap: str
) -> list[dict[str, Any]]:
    stored = sorted({semantic_text(wrap.format(q=p["a"])) for p in pairs})
    rows = []
    for t in THRESHOLDS:
        index = SemanticIndex(max_entries=len(stored), max_vectors=len(stored))
        for text in stored:
            index.add("scope", vectors[text], text, expires=float("inf"))
        right = wrong = false = 0
        counts = {"paraphrase": 0, "unrelated": 0}
        for pair in pairs:
            a, b = (semantic_text(wrap.format(q=pair[k])) for k in ("a", "b"))
            match = index.best("scope", vectors[b], t, now=0.0)
            counts[pair["kind"]] += 1
            if pair["kind"] == "paraphrase":
                right += match.key == a
                wrong += match.key is not None and match.key != a
            else:
                false += match.key is not None
        rows.append(
            {
                "threshold": t,
                "hit_rate": right / counts["paraphrase"],
                "wrong_answer_rate": wrong / counts["paraphrase"],
                "false_hit_rate": false / counts["unrelated"],
                "stored": len(stored),
            }
        )
    return rows


async def latency(embedder: LocalEmbedder, texts: list[str]) -> dict[str, float]:
    """Milliseconds to embed one question at a time, as a lone lookup does."""
    timings = []
    for text in texts:
        started = time.perf_counter()
        await embedder(None, [text])
        timings.append((time.perf_counter() - started) * 1000)
    return {"median_ms": statistics.median(timings), "p90_ms": float(np.percentile(timings, 90))}


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
    }


def table(title: str, rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    lines = [f"**{title}**", "", "| threshold | " + " | ".join(name for name, _ in columns) + " |"]
    lines.append("|--:|" + "--:|" * len(columns))
    for row in rows:
        cells = [f"{100 * row[key]:.1f}%" for _, key in columns]
        lines.append(f"| {row['threshold']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def run(template: bool) -> dict[str, Any]:
    pairs = load()
    variants = {"bare": "{q}", **({"template": TEMPLATE} if template else {})}
    texts = [semantic_text(w.format(q=p[k])) for w in variants.values() for p in pairs for k in ("a", "b")]
    embedder = LocalEmbedder()
    try:
        vectors = await embed_all(embedder, texts)
        timing = await latency(embedder, [p["b"] for p in pairs[:60]])
    finally:
        embedder.close()
    results: dict[str, Any] = {
        "model": "all-MiniLM-L6-v2",
        "pairs": {k: sum(p["kind"] == k for p in pairs) for k in ("paraphrase", "unrelated")},
        "embedding_latency": timing,
        "load_average": os.getloadavg()[0],
    }
    for name, wrap in variants.items():
        results[name] = {
            "pairs": pair_rates(pairs, vectors, wrap),
            "index": index_rates(pairs, vectors, wrap),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--template", action="store_true", help="also measure questions inside a template")
    args = parser.parse_args()
    results = asyncio.run(run(args.template))
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"semantic-cache-{stamp}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    counts = results["pairs"]
    print(
        f"{counts['paraphrase']} paraphrase pairs, {counts['unrelated']} unrelated pairs; raw results: {path}"
    )
    timing = results["embedding_latency"]
    print(
        f"embedding one question: median {timing['median_ms']:.1f} ms, p90 {timing['p90_ms']:.1f} ms "
        f"(load average {results['load_average']:.1f})\n"
    )
    for name in ("bare", "template"):
        if name not in results:
            continue
        variant = results[name]
        print(
            table(
                f"{name}: pairs",
                variant["pairs"]["rows"],
                [("paraphrase hit rate", "hit_rate"), ("unrelated false-hit rate", "false_hit_rate")],
            )
        )
        print()
        print(
            table(
                f"{name}: index of every first question",
                variant["index"],
                [
                    ("paraphrase hit (right answer)", "hit_rate"),
                    ("paraphrase hit on another question", "wrong_answer_rate"),
                    ("unrelated false hit", "false_hit_rate"),
                ],
            )
        )
        print()


if __name__ == "__main__":
    main()
