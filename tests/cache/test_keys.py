"""Which calls share an exact entry and a semantic scope."""

from __future__ import annotations

from typing import Any

import pytest

from lockgate.cache.keys import fingerprint, samples
from lockgate.wire import ChatCompletionRequest, validate

BODY: dict[str, Any] = {
    "model": "m",
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is DNS?"}],
    "temperature": 0,
}


def key(body: dict[str, Any], partition: str = "t1", target: str = "model:m") -> str:
    return fingerprint(partition, target, body).key


@pytest.mark.parametrize(
    "same",
    [
        {"stream": True, "stream_options": {"include_usage": True}},
        {"user": "u-1", "metadata": {"trace": "x"}, "store": True},
        {"temperature": 0.0},
        {"top_p": None},
        {"model": "another-name"},  # the model is the target, not part of the request's material
    ],
)
def test_fields_that_cannot_change_the_answer_share_the_key(same: dict[str, Any]) -> None:
    assert key({**BODY, **same}) == key(BODY)


def test_key_order_of_the_json_does_not_matter() -> None:
    assert key(dict(reversed(list(BODY.items())))) == key(BODY)


@pytest.mark.parametrize(
    "other",
    [
        {"temperature": 0.2},
        {"max_tokens": 10},
        {"seed": 1},
        {"n": 2},
        {"stop": ["\n"]},
        {"top_k": 5},  # a vendor extension may change the answer
        {"response_format": {"type": "json_object"}},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"messages": [{"role": "user", "content": "What is DNS?"}]},
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is DNS ?"},
            ]
        },
    ],
)
def test_anything_that_can_change_the_answer_is_another_key(other: dict[str, Any]) -> None:
    assert key({**BODY, **other}) != key(BODY)


def test_tenants_keys_and_targets_never_share_a_key() -> None:
    keys = {key(BODY), key(BODY, partition="t2"), key(BODY, partition="t1/k1"), key(BODY, target="release:r")}
    assert len(keys) == 4


def test_the_semantic_scope_is_everything_but_the_last_user_message() -> None:
    paraphrase = {**BODY, "messages": [BODY["messages"][0], {"role": "user", "content": "Explain DNS"}]}
    first, second = fingerprint("t1", "model:m", BODY), fingerprint("t1", "model:m", paraphrase)
    assert first.scope == second.scope
    assert first.key != second.key
    assert (first.text, second.text) == ("what is dns?", "explain dns")
    other_prompt = {
        **paraphrase,
        "messages": [{"role": "system", "content": "Be long."}, paraphrase["messages"][1]],
    }
    assert fingerprint("t1", "model:m", other_prompt).scope != first.scope
    assert fingerprint("t2", "model:m", BODY).scope != first.scope
    assert fingerprint("t1", "model:m", {**BODY, "max_tokens": 5}).scope != first.scope


def test_the_semantic_text_is_normalised_and_joins_text_parts() -> None:
    parts = {
        **BODY,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "  What IS\n DNS? "}]}],
    }
    assert fingerprint("t", "model:m", parts).text == "what is dns?"


@pytest.mark.parametrize(
    "last",
    [
        {"role": "assistant", "content": "Hello"},
        {"role": "tool", "content": "42", "tool_call_id": "c1"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]},
        {"role": "user", "content": ""},
    ],
)
def test_no_semantic_lookup_without_a_last_user_message_of_text(last: dict[str, Any]) -> None:
    found = fingerprint("t", "model:m", {**BODY, "messages": [BODY["messages"][0], last]})
    assert (found.scope, found.text) == (None, None)
    assert found.key


@pytest.mark.parametrize(
    ("options", "sampling"),
    [
        ({}, True),
        ({"temperature": 0.7}, True),
        ({"temperature": 0}, False),
        ({"temperature": 1, "seed": 3}, False),
    ],
)
def test_which_calls_sample(options: dict[str, Any], sampling: bool) -> None:
    request = validate({"model": "m", "messages": [], **options}, ChatCompletionRequest)
    assert samples(request) is sampling


RENDERED: dict[str, Any] = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "You answer customers."},
        {"role": "user", "content": "Customer Ann asks: How do I reset my password?"},
    ],
    "temperature": 0,
}


def route_fingerprint(variables: dict[str, Any], variable: str | None = None, **body: Any) -> Any:
    rendered = dict(RENDERED, **body)
    return fingerprint("t", "release:r1", rendered, prompt_messages=2, variables=variables, variable=variable)


def test_a_route_call_with_one_variable_compares_that_variable_not_the_template() -> None:
    found = route_fingerprint({"q": "How do I reset my password?"})
    assert found.text == "how do i reset my password?"
    # The same question rendered into another message is the same scope: only the variable is compared.
    assert route_fingerprint({"q": "Reset password?"}).scope == found.scope


def test_a_route_call_compares_the_named_variable_and_the_others_must_match() -> None:
    ann = route_fingerprint({"name": "Ann", "q": "How do I reset my password?"}, variable="q")
    bob = route_fingerprint({"name": "Bob", "q": "How do I reset my password?"}, variable="q")
    assert ann.text == bob.text == "how do i reset my password?"
    assert ann.scope != bob.scope
    # Without naming one among several, the rendered last message is compared.
    unnamed = route_fingerprint({"name": "Ann", "q": "How do I reset my password?"})
    assert unnamed.text == "customer ann asks: how do i reset my password?"


def test_a_route_call_with_its_own_conversation_compares_its_last_message() -> None:
    own = {"role": "user", "content": "And my username?"}
    found = route_fingerprint({"q": "x"}, messages=[*RENDERED["messages"], own])
    assert found.text == "and my username?"
