"""Groundedness: answers supported by the case's context, by word overlap or by a judge."""

from __future__ import annotations

import pytest

from lockgate.evals.scorers.grounded import content_words, sentences
from tests.evals.scorers.support import ScriptedModel, score

CONTEXT = (
    "Our return policy: customers may return unused items within 30 days of delivery for a full refund. "
    "Refunds are issued to the original payment method within 5 business days."
)


def test_sentences_and_content_words() -> None:
    assert sentences("One. Two!  Three?\nFour") == ["One.", "Two!", "Three?", "Four"]
    assert content_words("The refunds were issued to the customers") == {"refund", "issu", "customer"}


async def test_a_supported_answer_passes() -> None:
    answer = "You can return unused items within 30 days. The refund goes to your original payment method."
    result = await score({"type": "groundedness"}, answer, context=CONTEXT)
    assert (result.value, result.passed) == (1.0, True)


async def test_an_invented_claim_is_named() -> None:
    answer = "You can return unused items within 30 days. Shipping labels are free for premium members."
    result = await score({"type": "groundedness"}, answer, context=CONTEXT)
    assert (result.value, result.passed) == (0.5, False)
    assert result.reason == "1 of 2 unsupported, first: 'Shipping labels are free for premium members.'"
    assert result.details == {"sentences": 2, "unsupported": 1}


async def test_min_overlap_sets_how_much_of_a_sentence_must_be_in_the_context() -> None:
    answer = (
        "Unused items can be returned within 30 days, no questions asked, even on public holidays, "
        "with free courier pickup."
    )
    assert not (await score({"type": "groundedness"}, answer, context=CONTEXT)).passed
    assert (await score({"type": "groundedness", "min_overlap": 0.3}, answer, context=CONTEXT)).passed


@pytest.mark.parametrize(
    ("answer", "context"), [("Anything.", None), ("", CONTEXT), ("The of and.", CONTEXT)]
)
async def test_nothing_to_ground_fails(answer: str, context: str | None) -> None:
    result = await score({"type": "groundedness", "threshold": 0}, answer, context=context)
    assert (result.value, result.passed) == (0.0, False)


async def test_judge_mode_shows_the_judge_the_context_and_the_answer() -> None:
    judge = ScriptedModel('{"score": 2, "reason": "the 60 days claim is not in the context"}')
    spec = {"type": "groundedness", "judge_model": "judge-m"}
    result = await score(spec, "Returns are accepted for 60 days.", scoring=judge.scoring, context=CONTEXT)
    assert (result.value, result.passed) == (0.25, False)
    assert result.reason == "judge 2/5: the 60 days claim is not in the context"
    assert judge.calls[0][0] == "judge-m"
    assert CONTEXT in judge.prompt and "Returns are accepted for 60 days." in judge.prompt
