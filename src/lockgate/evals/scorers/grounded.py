"""Groundedness: is every sentence of the answer supported by the case's context?

By default a cheap lexical check: the answer is split into sentences; a sentence is supported when at
least ``min_overlap`` of its content words (lowercased, stop words dropped, plural and verb endings
stemmed) occur in the context. value = the supported fraction of sentences with content words. It
catches invented names, numbers and claims; it cannot catch a contradiction worded with the context's
own words, which is what ``judge_model`` is for: the judge then grades support on a 1..5 scale instead.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from lockgate.evals.cases import Case, Complete, Outcome, ScoringContext
from lockgate.evals.scorers.base import BaseScorer, ScorerSpec, Verdict, snippet, unscorable
from lockgate.evals.scorers.judge import ask_judge, judge_messages, require_complete

JUDGE_SCALE = 5
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"\w+")
_SUFFIXES = ("ing", "ies", "es", "ed", "ly", "s")
_STOP_WORDS = """
    a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had has
    have having he her here hers herself him himself his how i if in into is it its itself just me more
    most my myself no nor not now of off on once only or other our ours ourselves out over own same she
    should so some such than that the their theirs them themselves then there these they this those
    through to too under until up very was we were what when where which while who whom why will with
    would you your yours yourself yourselves yes
"""
STOP_WORDS = frozenset(_STOP_WORDS.split())


def stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def content_words(text: str) -> set[str]:
    return {stem(w) for w in _WORD.findall(text.lower()) if w not in STOP_WORDS}


def sentences(text: str) -> list[str]:
    return [part.strip() for part in _SENTENCE_END.split(text) if part.strip()]


class GroundednessSpec(ScorerSpec):
    type: Literal["groundedness"]
    min_overlap: float = Field(default=0.5, gt=0, le=1)
    judge_model: str | None = Field(default=None, min_length=1)
    threshold: float = Field(default=0.8, ge=0, le=1)

    def build(self, context: ScoringContext) -> GroundednessScorer:
        complete = require_complete(context, "judge_model") if self.judge_model is not None else None
        return GroundednessScorer(self, complete)


class GroundednessScorer(BaseScorer[GroundednessSpec]):
    def __init__(self, spec: GroundednessSpec, complete: Complete | None) -> None:
        super().__init__(spec)
        self._complete = complete

    async def evaluate(self, case: Case, outcome: Outcome) -> Verdict:
        if not case.context:
            return unscorable("the case has no `context` to ground the answer in")
        if self._complete is not None and self.spec.judge_model is not None:
            return await _ask_judge(self._complete, self.spec.judge_model, case.context, outcome.text)
        return self._overlap(case.context, outcome.text)

    def _overlap(self, context: str, answer: str) -> Verdict:
        known = content_words(context)
        claims = [(s, words) for s in sentences(answer) if (words := content_words(s))]
        if not claims:
            return Verdict(0.0, "the answer states nothing to check", failed=True)
        unsupported = [s for s, words in claims if len(words & known) / len(words) < self.spec.min_overlap]
        value = 1 - len(unsupported) / len(claims)
        details = {"sentences": len(claims), "unsupported": len(unsupported)}
        if unsupported:
            first = snippet(unsupported[0])
            return Verdict(value, f"{len(unsupported)} of {len(claims)} unsupported, first: {first}", details)
        return Verdict(value, f"all {len(claims)} sentences supported by the context", details)


async def _ask_judge(complete: Complete, model: str, context: str, answer: str) -> Verdict:
    instructions = (
        "You check whether an answer is grounded in a source text. Score 5 when every claim in the "
        "answer is stated in the context, 1 when the answer's claims are missing from or contradict it."
    )
    sections = [("Context", context), ("Answer", answer or "(empty)")]
    return await ask_judge(complete, model, judge_messages(instructions, sections, JUDGE_SCALE), JUDGE_SCALE)
