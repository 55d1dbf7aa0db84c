"""JSON validity and JSON Schema scorers."""

from __future__ import annotations

from typing import Any

from tests.evals.scorers.support import score

ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {"type": "object", "properties": {"price": {"type": "number"}}, "required": ["price"]},
        },
        "email": {"type": "string", "format": "email"},
    },
    "required": ["items"],
}


async def test_json_valid() -> None:
    assert (await score({"type": "json_valid"}, '{"a": 1}')).passed
    assert (await score({"type": "json_valid"}, "```json\n[1, 2]\n```")).passed
    assert (await score({"type": "json_valid"}, "```\n{}\n```\n")).passed
    broken = await score({"type": "json_valid"}, '{"a": 1')
    assert (broken.value, broken.passed) == (0.0, False)
    assert broken.reason.startswith("not valid JSON")
    # Prose around the JSON is not valid JSON.
    assert not (await score({"type": "json_valid"}, 'Sure! {"a": 1}')).passed


async def test_json_schema_from_the_spec() -> None:
    spec = {"type": "json_schema", "schema": ORDER_SCHEMA}
    assert (await score(spec, '```json\n{"items": [{"price": 9.5}]}\n```')).passed
    wrong = await score(spec, '{"items": [{"price": 9.5}, {"price": "cheap"}]}')
    assert (wrong.value, wrong.passed) == (0.0, False)
    assert wrong.reason == "at $.items[1].price: 'cheap' is not of type 'number'"
    assert (await score(spec, '{"orders": []}')).reason == "at $: 'items' is a required property"
    assert not (await score(spec, "no JSON here")).passed


async def test_json_schema_checks_formats() -> None:
    spec = {"type": "json_schema", "schema": ORDER_SCHEMA}
    assert (await score(spec, '{"items": [], "email": "a@example.com"}')).passed
    bad = await score(spec, '{"items": [], "email": "not-an-email"}')
    assert bad.reason == "at $.email: 'not-an-email' is not a 'email'"


async def test_json_schema_from_the_case() -> None:
    spec = {"type": "json_schema"}
    assert (await score(spec, '{"items": []}', schema=ORDER_SCHEMA)).passed
    assert not (await score(spec, '{"items": 3}', schema=ORDER_SCHEMA)).passed
    missing = await score(spec, '{"items": []}')
    assert missing.reason == "nothing to compare: set `schema` on the scorer or on the case"


async def test_an_invalid_case_schema_fails_the_case_and_says_so() -> None:
    result = await score({"type": "json_schema", "threshold": 0}, "{}", schema={"type": 5})
    assert not result.passed
    assert result.reason.startswith("the case's schema is not a valid JSON Schema")
