"""Which bump a prompt change needs, and the plain-words reason given for it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from lockgate.control.prompts import PromptSpec
from lockgate.control.semver import Bump, declared_bump, required_bump

BASE: dict[str, Any] = {
    "name": "support-answer",
    "version": "1.2.0",
    "description": "Answers a support question from the product docs.",
    "messages": [
        {
            "role": "system",
            "content": "You are a support agent for {{ product }}. "
            'Answer in {{ language | default("English") }}.',
        },
        {"role": "user", "content": "{{ question }}"},
    ],
    "variables": {
        "type": "object",
        "properties": {
            "product": {"type": "string"},
            "question": {"type": "string", "maxLength": 2000},
            "language": {"type": "string"},
        },
        "required": ["product", "question"],
    },
    "settings": {"model": "support-llm@champion", "temperature": 0.2, "max_tokens": 256, "stop": ["\n\n"]},
    "output_schema": {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
    },
    "tags": ["support"],
}

Mutation = Callable[[dict[str, Any]], None]


def variant(mutate: Mutation, **fields: Any) -> PromptSpec:
    data = copy.deepcopy(BASE)
    mutate(data)
    data.update(fields)
    return PromptSpec.model_validate(data)


def props(data: dict[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = data["variables"]["properties"]
    return properties


def _remove_question(d: dict[str, Any]) -> None:
    del d["variables"]["properties"]["question"]
    d["variables"]["required"] = ["product"]
    d["messages"][1]["content"] = "Please help."


def _rename_question(d: dict[str, Any]) -> None:
    d["variables"]["properties"]["query"] = d["variables"]["properties"].pop("question")
    d["variables"]["required"] = ["product", "query"]
    d["messages"][1]["content"] = "{{ query }}"


def _add_required_variable(d: dict[str, Any]) -> None:
    d["variables"]["properties"]["customer"] = {"type": "string"}
    d["variables"]["required"].append("customer")
    d["messages"][1]["content"] = "{{ customer }} asks: {{ question }}"


def _add_optional_variable(d: dict[str, Any]) -> None:
    d["variables"]["properties"]["tone"] = {"type": "string"}
    d["messages"][0]["content"] += " {{ tone | default('') }}"


@dataclass(frozen=True)
class Rule:
    id: str
    mutate: Mutation
    bump: Bump
    reason: str


RULES = [
    # MAJOR: a caller's or consumer's code can break.
    Rule("variable removed", _remove_question, Bump.MAJOR, "variable 'question' removed"),
    Rule("variable renamed", _rename_question, Bump.MAJOR, "variable 'question' renamed to 'query'"),
    Rule(
        "optional variable made required",
        lambda d: d["variables"]["required"].append("language"),
        Bump.MAJOR,
        "variable 'language' is now required",
    ),
    Rule("required variable added", _add_required_variable, Bump.MAJOR, "required variable 'customer' added"),
    Rule(
        "variable type changed",
        lambda d: props(d)["product"].update(type="integer"),
        Bump.MAJOR,
        "variable 'product' changed type from string to integer",
    ),
    Rule(
        "variable constraint tightened",
        lambda d: props(d)["question"].update(maxLength=500),
        Bump.MAJOR,
        "variable 'question': maxLength lowered from 2000 to 500, so fewer values are accepted",
    ),
    Rule(
        "output property removed",
        lambda d: d.update(output_schema={"type": "object", "properties": {}}),
        Bump.MAJOR,
        "output property 'answer' removed",
    ),
    Rule(
        "required output property added",
        lambda d: d["output_schema"].update(
            properties={"answer": {"type": "string"}, "confidence": {"type": "number"}},
            required=["answer", "confidence"],
        ),
        Bump.MAJOR,
        "required output property 'confidence' added",
    ),
    Rule(
        "output property type changed",
        lambda d: d["output_schema"]["properties"]["answer"].update(type="array"),
        Bump.MAJOR,
        "output property 'answer' changed type from string to array",
    ),
    Rule(
        "extra output properties forbidden",
        lambda d: d["output_schema"].update(additionalProperties=False),
        Bump.MAJOR,
        "the output schema no longer accepts properties it does not list",
    ),
    Rule(
        "output schema removed", lambda d: d.update(output_schema=None), Bump.MAJOR, "output schema removed"
    ),
    Rule(
        "unclassifiable schema change",
        lambda d: d["variables"].update({"$defs": {"name": {"type": "string"}}}),
        Bump.MAJOR,
        "cannot prove compatible",
    ),
    # MINOR: behaviour changes, nothing breaks.
    Rule("optional variable added", _add_optional_variable, Bump.MINOR, "optional variable 'tone' added"),
    Rule(
        "variable no longer required",
        lambda d: d["variables"].update(required=["product"]),
        Bump.MINOR,
        "variable 'question' is no longer required",
    ),
    Rule(
        "variable type widened",
        lambda d: props(d)["language"].update(type=["string", "null"]),
        Bump.MINOR,
        "variable 'language' now also accepts null",
    ),
    Rule(
        "variable constraint loosened",
        lambda d: props(d)["question"].update(maxLength=4000),
        Bump.MINOR,
        "variable 'question': maxLength raised from 2000 to 4000, so more values are accepted",
    ),
    Rule(
        "temperature changed",
        lambda d: d["settings"].update(temperature=0.5),
        Bump.MINOR,
        "settings.temperature changed from 0.2 to 0.5",
    ),
    Rule(
        "model changed",
        lambda d: d["settings"].update(model="support-llm@challenger"),
        Bump.MINOR,
        'settings.model changed from "support-llm@champion" to "support-llm@challenger"',
    ),
    Rule(
        "optional output property added",
        lambda d: d["output_schema"]["properties"].update(sources={"type": "array"}),
        Bump.MINOR,
        "optional output property 'sources' added",
    ),
    Rule(
        "output schema loosened",
        lambda d: d["output_schema"].update(required=[]),
        Bump.MINOR,
        "output property 'answer' is no longer required",
    ),
    # PATCH: wording only.
    Rule(
        "message wording",
        lambda d: d["messages"][1].update(content="Question: {{ question }}"),
        Bump.PATCH,
        "message 2 (user) wording changed",
    ),
    Rule(
        "description", lambda d: d.update(description="Answers questions."), Bump.PATCH, "description changed"
    ),
    Rule("tags", lambda d: d.update(tags=["support", "faq"]), Bump.PATCH, 'tags changed from ["support"] to'),
    Rule(
        "variable description",
        lambda d: props(d)["product"].update(description="The product's public name"),
        Bump.PATCH,
        "variable 'product': description changed",
    ),
]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_each_rule_names_its_bump_and_reason(rule: Rule) -> None:
    bump, reasons = required_bump(variant(lambda _: None), variant(rule.mutate, version="9.9.9"))
    assert bump is rule.bump
    assert any(rule.reason in reason for reason in reasons), reasons


def test_identical_content_needs_no_bump_whatever_the_version() -> None:
    assert required_bump(variant(lambda _: None), variant(lambda _: None, version="2.0.0")) == (Bump.NONE, [])


def test_adding_an_output_schema_is_major() -> None:
    bump, reasons = required_bump(variant(lambda d: d.update(output_schema=None)), variant(lambda _: None))
    assert bump is Bump.MAJOR
    assert reasons == ["output schema added: answers that were accepted before may be refused"]


def test_several_changes_give_the_largest_bump_and_every_reason_most_severe_first() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["settings"]["temperature"] = 0.7
        d["description"] = "Changed."
        _remove_question(d)

    bump, reasons = required_bump(variant(lambda _: None), variant(mutate))
    assert bump is Bump.MAJOR
    assert reasons == [
        "variable 'question' removed",
        "settings.temperature changed from 0.2 to 0.7",
        "message 2 (user) wording changed",
        "description changed",
    ]


def test_bumps_are_ordered() -> None:
    assert Bump.NONE < Bump.PATCH < Bump.MINOR < Bump.MAJOR
    assert max(Bump.PATCH, Bump.MAJOR, Bump.MINOR) is Bump.MAJOR


@pytest.mark.parametrize(
    ("old", "new", "bump"),
    [
        ("1.2.0", "1.2.0", Bump.NONE),
        ("1.2.0", "1.2.1", Bump.PATCH),
        ("1.2.9", "1.3.0", Bump.MINOR),
        ("1.2.0", "1.10.0", Bump.MINOR),
        ("1.9.3", "2.0.0", Bump.MAJOR),
        ("0.1.0", "3.4.5", Bump.MAJOR),
    ],
)
def test_declared_bump(old: str, new: str, bump: Bump) -> None:
    assert declared_bump(old, new) is bump


def test_declared_bump_refuses_going_backwards() -> None:
    with pytest.raises(ValueError, match=r"version 1\.9\.0 is lower than 1\.10\.0"):
        declared_bump("1.10.0", "1.9.0")
