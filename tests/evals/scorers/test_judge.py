"""LLM-as-judge with a scripted model: the request it sends and how it reads verdicts."""

from __future__ import annotations

import pytest

from lockgate.evals.scorers.judge import parse_ruling
from tests.evals.scorers.support import ScriptedModel, score

SPEC = {"type": "judge", "model": "judge-m", "rubric": "Correct and concise."}


async def test_a_good_verdict_passes_with_the_judges_reason() -> None:
    model = ScriptedModel('{"score": 4, "reason": "Correct, slightly terse."}')
    result = await score(SPEC, "Paris.", scoring=model.scoring, expected="Paris")
    assert (result.value, result.passed) == (0.75, True)
    assert result.reason == "judge 4/5: Correct, slightly terse."
    assert result.details == {"judge_model": "judge-m", "judge_score": 4}


async def test_a_low_verdict_fails() -> None:
    model = ScriptedModel('{"score": 2, "reason": "Names the wrong city."}')
    result = await score(SPEC, "Lyon.", scoring=model.scoring, expected="Paris")
    assert (result.value, result.passed) == (0.25, False)


async def test_the_request_asks_for_a_structured_verdict_and_shows_everything() -> None:
    model = ScriptedModel('{"score": 5, "reason": "ok"}')
    await score(
        {**SPEC, "scale": 10},
        "It is Paris.",
        scoring=model.scoring,
        variables={"question": "What is the capital of France?"},
        messages=[{"role": "user", "content": "Answer in one word."}],
        expected="Paris",
        facts=["Paris is the capital"],
    )
    [(name, messages, extra_body)] = model.calls
    assert name == "judge-m"
    assert extra_body["temperature"] == 0 and extra_body["max_tokens"] == 200
    response_format = extra_body["response_format"]
    assert response_format["type"] == "json_object"
    assert response_format["schema"]["properties"]["score"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 10,
    }
    assert response_format["schema"]["required"] == ["score", "reason"]
    assert [m["role"] for m in messages] == ["system", "user"]
    for shown in (
        "What is the capital of France?",
        "Answer in one word.",
        "It is Paris.",
        "Paris is the capital",
    ):
        assert shown in model.prompt
    assert "Correct and concise." in model.prompt
    assert "from 1 to 10" in model.prompt


async def test_scale_maps_onto_zero_to_one() -> None:
    model = ScriptedModel('{"score": 10, "reason": "perfect"}')
    assert (await score({**SPEC, "scale": 10}, "Paris", scoring=model.scoring)).value == 1.0
    model = ScriptedModel('{"score": 1, "reason": "wrong"}')
    assert (await score({**SPEC, "scale": 10}, "Lyon", scoring=model.scoring)).value == 0.0


@pytest.mark.parametrize(
    ("reply", "score_", "reason"),
    [
        ('{"score": 3, "reason": "fine"}', 3, "fine"),
        ('```json\n{"score": "4", "reason": "good"}\n```', 4, "good"),
        ('Here is my verdict: {"score": 5.0, "reason": "great"} Thanks.', 5, "great"),
        ("Score: 2. The answer is vague.", 2, "The answer is vague"),
        ('{"reason": "cut off by max_tokens", "score": 4', 4, None),
    ],
)
def test_verdicts_are_read_leniently(reply: str, score_: int, reason: str | None) -> None:
    ruling = parse_ruling(reply)
    assert ruling is not None
    assert ruling.score == score_
    assert reason is None or ruling.reason == reason


@pytest.mark.parametrize("reply", ["I think it is good.", '{"verdict": "good"}', "", '{"score": true}'])
def test_no_verdict(reply: str) -> None:
    assert parse_ruling(reply) is None


async def test_garbage_fails_whatever_the_threshold() -> None:
    model = ScriptedModel("The answer looks pretty good to me overall. " * 10)
    result = await score({**SPEC, "threshold": 0}, "Paris", scoring=model.scoring)
    assert (result.value, result.passed) == (0.0, False)
    assert result.reason == f"judge gave no verdict: {model.reply[:200]}"
    assert result.details == {"judge_model": "judge-m"}


async def test_a_score_outside_the_scale_is_no_verdict() -> None:
    model = ScriptedModel('{"score": 9, "reason": "amazing"}')
    result = await score({**SPEC, "threshold": 0}, "Paris", scoring=model.scoring)
    assert (result.value, result.passed, result.reason) == (0.0, False, "judge score 9 is outside 1..5")
