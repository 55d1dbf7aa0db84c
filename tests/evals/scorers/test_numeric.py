"""The numeric scorer: the first number in the answer against the expected one."""

from __future__ import annotations

import pytest

from lockgate.evals.scorers.numeric import first_number
from tests.evals.scorers.support import score


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("The answer is 42.", 42.0),
        ("Revenue was 1,234.5 million", 1234.5),
        ("It dropped to -3.25 degrees", -3.25),
        ("about 6.02e23 atoms", 6.02e23),
        ("between 3 and 5", 3.0),
        ("worth .5 of it", 0.5),
        ("version v2 then 7", 7.0),
        ("no number here", None),
    ],
)
def test_first_number(text: str, number: float | None) -> None:
    assert first_number(text) == number


async def test_exact_by_default() -> None:
    assert (await score({"type": "numeric"}, "It costs 42 dollars.", expected="42")).passed
    off = await score({"type": "numeric"}, "It costs 43 dollars.", expected="42")
    assert (off.value, off.passed, off.reason) == (0.0, False, "43 is off 42 by 1")


async def test_absolute_and_relative_tolerance() -> None:
    assert (await score({"type": "numeric", "tolerance": 0.5}, "3.4", expected="3")).passed
    assert not (await score({"type": "numeric", "tolerance": 0.5}, "3.6", expected="3")).passed
    assert (await score({"type": "numeric", "relative_tolerance": 0.01}, "1005", expected="1000")).passed
    assert not (await score({"type": "numeric", "relative_tolerance": 0.01}, "1011", expected="1000")).passed


async def test_value_overrides_the_case() -> None:
    assert (await score({"type": "numeric", "value": 7}, "7", expected="8")).passed


async def test_answers_without_numbers_and_cases_without_one() -> None:
    assert (await score({"type": "numeric"}, "I don't know", expected="42")).reason.startswith("no number")
    unscorable = await score({"type": "numeric"}, "42", expected="forty-two")
    assert (unscorable.passed, unscorable.reason.startswith("nothing to compare")) == (False, True)
