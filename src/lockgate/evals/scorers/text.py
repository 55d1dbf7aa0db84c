"""Text scorers: exact match, substring presence or absence, and regular expressions.

Each compares against the spec's own ``value`` when given, else against the case (its ``expected``
answer, or its ``facts`` for the substring scorers), so one dataset-level scorer serves every case while
a spec can still pin a constant. ``not_contains`` has no sensible case fallback (an answer that must
not contain the expected answer?), so it requires ``value``. Regular expressions compile when the spec
is validated, so a bad pattern is reported with the dataset rather than in the middle of a run.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from lockgate.evals.cases import Case, Outcome, ScoringContext
from lockgate.evals.scorers.base import BaseScorer, ScorerSpec, Verdict, snippet, unscorable


class ExactSpec(ScorerSpec):
    type: Literal["exact"]
    value: str | None = None
    ignore_case: bool = False
    strip: bool = True

    def build(self, context: ScoringContext) -> ExactScorer:
        return ExactScorer(self)


class ExactScorer(BaseScorer[ExactSpec]):
    async def evaluate(self, case: Case, outcome: Outcome) -> Verdict:
        expected = self.spec.value if self.spec.value is not None else case.expected
        if expected is None:
            return unscorable("set `value` on the scorer or `expected` on the case")
        if self._normal(outcome.text) == self._normal(expected):
            return Verdict(1.0, "exact match")
        return Verdict(0.0, f"expected {snippet(expected)}, got {snippet(outcome.text)}")

    def _normal(self, text: str) -> str:
        text = text.strip() if self.spec.strip else text
        return text.casefold() if self.spec.ignore_case else text


Text = Annotated[str, Field(min_length=1)]


class ContainsSpec(ScorerSpec):
    type: Literal["contains", "icontains", "not_contains"]
    value: Annotated[list[Text], Field(min_length=1)] | None = Field(default=None, validate_default=True)

    @field_validator("value", mode="before")
    @classmethod
    def _one_text_is_a_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("value")
    @classmethod
    def _needed_for_not_contains(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is None and info.data.get("type") == "not_contains":
            raise ValueError("not_contains needs the text (or list of texts) the answer must not contain")
        return value

    def build(self, context: ScoringContext) -> ContainsScorer:
        return ContainsScorer(self)


class ContainsScorer(BaseScorer[ContainsSpec]):
    """value = the fraction of texts found (``contains``, ``icontains``) or absent (``not_contains``)."""

    async def evaluate(self, case: Case, outcome: Outcome) -> Verdict:
        needles = self._needles(case)
        if not needles:
            return unscorable("set `value` on the scorer, or `facts` or `expected` on the case")
        fold = self.spec.type == "icontains"
        haystack = outcome.text.casefold() if fold else outcome.text
        found = [needle for needle in needles if (needle.casefold() if fold else needle) in haystack]
        if self.spec.type == "not_contains":
            if found:
                return Verdict(1 - len(found) / len(needles), f"contains {_listed(found)}")
            return Verdict(1.0, f"none of {len(needles)} forbidden text(s) found")
        missing = [needle for needle in needles if needle not in found]
        if missing:
            return Verdict(len(found) / len(needles), f"missing {_listed(missing)}")
        return Verdict(1.0, f"found all {len(needles)}")

    def _needles(self, case: Case) -> list[str]:
        if self.spec.value is not None:
            return self.spec.value
        if case.facts:
            return case.facts
        return [case.expected] if case.expected is not None else []


class RegexSpec(ScorerSpec):
    type: Literal["regex"]
    pattern: str = Field(min_length=1)
    must_match: bool = True

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return pattern

    def build(self, context: ScoringContext) -> RegexScorer:
        return RegexScorer(self)


class RegexScorer(BaseScorer[RegexSpec]):
    def __init__(self, spec: RegexSpec) -> None:
        super().__init__(spec)
        self._pattern = re.compile(spec.pattern)

    async def evaluate(self, case: Case, outcome: Outcome) -> Verdict:
        match = self._pattern.search(outcome.text)
        if match is not None:
            reason = f"matches {snippet(match.group(0))}"
            return Verdict(1.0 if self.spec.must_match else 0.0, reason)
        reason = f"no match for /{self.spec.pattern}/"
        return Verdict(0.0 if self.spec.must_match else 1.0, reason)


def _listed(texts: list[str]) -> str:
    return ", ".join(snippet(text) for text in texts)
