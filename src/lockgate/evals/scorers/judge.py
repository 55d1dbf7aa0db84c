"""LLM-as-judge: a gateway model grades the answer against a rubric on a 1..scale score.

The judge is asked for a structured verdict ``{"score": int, "reason": str}``. The request carries
``response_format`` with that JSON Schema, which llama.cpp's server (and other OpenAI-compatible servers)
enforce with a grammar, so even a small model answers in shape; ``score`` comes first so a reason cut
off by ``max_tokens`` still leaves a score. Parsing is lenient all the same: JSON (fenced or inside
prose), else a ``score: N`` pattern. A verdict that cannot be read, or a score outside the scale, fails
the case: a judge that cannot judge must not pass anything.

``ask_judge`` is shared with the groundedness and safety scorers; value = (score - 1) / (scale - 1).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import Field

from lockgate.evals.cases import Case, Complete, Outcome, ScoringContext
from lockgate.evals.scorers.base import BaseScorer, ScorerSpec, SpecError, Verdict, shorten

JUDGE_MAX_TOKENS = 200
_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
_SCORE_PATTERN = re.compile(r"\bscore\W{0,3}(\d+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Ruling:
    score: int
    reason: str


def verdict_schema(scale: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "score": {"type": "integer", "minimum": 1, "maximum": scale},
            "reason": {"type": "string"},
        },
        "required": ["score", "reason"],
    }


def judge_extra_body(scale: int) -> dict[str, Any]:
    return {
        "response_format": {"type": "json_object", "schema": verdict_schema(scale)},
        "temperature": 0,
        "max_tokens": JUDGE_MAX_TOKENS,
    }


def judge_messages(
    instructions: str, sections: Sequence[tuple[str, str]], scale: int
) -> list[dict[str, str]]:
    """A system message with the task and the verdict format; a user message with titled sections."""
    system = (
        f"{instructions}\nReply with a JSON object only: "
        f'{{"score": <integer from 1 to {scale}>, "reason": "<one short sentence>"}}.'
    )
    user = "\n\n".join(f"## {title}\n{body}" for title, body in sections)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def parse_ruling(text: str) -> Ruling | None:
    """The judge's score and reason; None when the text holds neither a verdict object nor a score."""
    found = _OBJECT.search(text)
    if found is not None:
        try:
            data = orjson.loads(found.group(0))
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            score = _integer(data.get("score"))
            if score is not None:
                return Ruling(score, str(data.get("reason") or "").strip())
    pattern = _SCORE_PATTERN.search(text)
    if pattern is None:
        return None
    rest = (text[: pattern.start()] + text[pattern.end() :]).strip(" \n\t.,;:-")
    return Ruling(int(pattern.group(1)), rest)


def _integer(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


async def ask_judge(
    complete: Complete, model: str, messages: Sequence[dict[str, str]], scale: int
) -> Verdict:
    text = await complete(model, messages, judge_extra_body(scale))
    ruling = parse_ruling(text)
    details: dict[str, Any] = {"judge_model": model}
    if ruling is None:
        return Verdict(0.0, f"judge gave no verdict: {text[:200]}", details, failed=True)
    details["judge_score"] = ruling.score
    if not 1 <= ruling.score <= scale:
        return Verdict(0.0, f"judge score {ruling.score} is outside 1..{scale}", details, failed=True)
    reason = f"judge {ruling.score}/{scale}: {shorten(ruling.reason, 300) or '(no reason given)'}"
    return Verdict((ruling.score - 1) / (scale - 1), reason, details)


def require_complete(context: ScoringContext, field_name: str) -> Complete:
    if context.complete is None:
        raise SpecError(field_name, "a judge model needs a model service, and none is configured here")
    return context.complete


def question_text(case: Case) -> str:
    """What the model was asked: the case's variables as JSON, then its extra conversation turns."""
    parts = []
    if case.variables:
        parts.append(json.dumps(case.variables, indent=2, ensure_ascii=False, default=str))
    parts.extend(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in case.messages)
    return "\n".join(parts) or "(no input)"


class JudgeSpec(ScorerSpec):
    type: Literal["judge"]
    model: str = Field(min_length=1)
    rubric: str = Field(min_length=1)
    scale: int = Field(default=5, ge=2, le=100)
    threshold: float = Field(default=0.5, ge=0, le=1)

    def build(self, context: ScoringContext) -> JudgeScorer:
        return JudgeScorer(self, require_complete(context, "model"))


class JudgeScorer(BaseScorer[JudgeSpec]):
    def __init__(self, spec: JudgeSpec, complete: Complete) -> None:
        super().__init__(spec)
        self._complete = complete

    async def evaluate(self, case: Case, outcome: Outcome) -> Verdict:
        spec = self.spec
        sections = [("Question", question_text(case)), ("Answer", outcome.text or "(empty)")]
        if case.expected is not None:
            sections.append(("Expected answer", case.expected))
        if case.facts:
            sections.append(("Facts the answer should state", "\n".join(f"- {f}" for f in case.facts)))
        sections.append(("Rubric", spec.rubric))
        instructions = (
            f"You grade an answer to a question. Score it from 1 (worst) to {spec.scale} (best) "
            "by the rubric."
        )
        messages = judge_messages(instructions, sections, spec.scale)
        return await ask_judge(self._complete, spec.model, messages, spec.scale)
