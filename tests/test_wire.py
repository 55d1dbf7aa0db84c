"""The OpenAI request wire format: decoding, validation errors that name the field, pass-through of extras."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from lockgate.errors import InvalidRequest
from lockgate.wire import MAX_DEPTH, ChatCompletionRequest, EmbeddingRequest, decode_object, validate

USER = {"role": "user", "content": "hi"}


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [USER], **fields}


def chat_error(obj: dict[str, Any]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        validate(obj, ChatCompletionRequest)
    assert caught.value.status == 400
    assert caught.value.type == "invalid_request_error"
    return caught.value


def embedding_error(obj: dict[str, Any]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        validate(obj, EmbeddingRequest)
    return caught.value


@pytest.mark.parametrize("body", [b'{"model": "m",', b"", b"{'model': 'm'}", b'{"a": 1} trailing'])
def test_decode_object_rejects_invalid_json(body: bytes) -> None:
    with pytest.raises(InvalidRequest) as caught:
        decode_object(body)
    assert caught.value.code == "invalid_json"
    assert caught.value.message.startswith("We could not parse the JSON body")
    assert "`" not in caught.value.message


@pytest.mark.parametrize("body", [b"[1, 2]", b'"chat"', b"42", b"null", b"true"])
def test_decode_object_rejects_non_objects(body: bytes) -> None:
    with pytest.raises(InvalidRequest) as caught:
        decode_object(body)
    assert caught.value.code == "invalid_json"
    assert caught.value.message == "The request body must be a JSON object."


def test_decode_object_returns_plain_dict() -> None:
    obj = decode_object(b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "top_k": 40}')
    assert obj == {"model": "m", "messages": [USER], "top_k": 40}


def nested_body(depth: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    """A chat body whose deepest value sits ``depth`` levels down (the body itself is level 1)."""
    inner = opener * (depth - 1) + closer * (depth - 1)
    if opener == b"{":
        inner = b'{"a":' * (depth - 1) + b"1" + b"}" * (depth - 1)
    return b'{"model": "m", "messages": [], "extra": ' + inner + b"}"


def decode_error(body: bytes) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        decode_object(body)
    assert (caught.value.status, caught.value.type) == (400, "invalid_request_error")
    return caught.value


@pytest.mark.parametrize("depth", [100_000, 100, MAX_DEPTH + 1])
@pytest.mark.parametrize("brackets", ["arrays", "objects"])
def test_a_body_nested_too_deeply_is_a_400_saying_so(depth: int, brackets: str) -> None:
    body = nested_body(depth, b"[" if brackets == "arrays" else b"{")
    error = decode_error(body)
    assert error.code == "invalid_json"
    assert error.message == (
        f"The request body is nested too deeply; at most {MAX_DEPTH} levels of arrays and objects."
    )


def test_a_body_at_the_depth_limit_is_decoded() -> None:
    assert decode_object(nested_body(MAX_DEPTH))["model"] == "m"
    assert decode_object(nested_body(MAX_DEPTH, b"{"))["model"] == "m"


def test_many_shallow_brackets_are_not_mistaken_for_depth() -> None:
    wide = {"model": "m", "messages": [USER] * 200, "stop": ["a"], "extra": [[1]] * 100}
    assert decode_object(orjson.dumps(wide)) == wide


def test_a_deep_ish_tool_schema_passes() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(9):  # 18 levels of objects: properties -> field -> ...
        schema = {"type": "object", "properties": {"field": schema}}
    tool = {"type": "function", "function": {"name": "lookup", "parameters": schema}}
    body = orjson.dumps(chat(tools=[tool]))
    obj = decode_object(body)
    request = validate(obj, ChatCompletionRequest)
    assert request.tools is not None
    assert request.tools[0].function.parameters == schema


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "m", "messages": [{"role": "user", "content": "caf\xe9"}]}',
        b'{"model": "m", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
        b'{"model\xc3": "m"}',
        b'{"model": "m", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}',
    ],
)
def test_a_body_that_is_not_utf8_is_a_400_saying_so(body: bytes) -> None:
    error = decode_error(body)
    assert error.code == "invalid_encoding"
    assert error.message.startswith("The request body is not valid UTF-8")


def test_wrong_type_in_a_nested_field_names_its_path() -> None:
    error = chat_error(chat(messages=[USER, {"role": "user", "content": 5}]))
    assert error.param == "messages[1].content"
    assert error.code == "invalid_type"
    assert error.message.startswith("Invalid type for 'messages[1].content': expected ")
    assert error.message.endswith("but got int.")


def test_missing_nested_required_field_names_its_path() -> None:
    error = chat_error(chat(tools=[{"type": "function", "function": {"description": "no name"}}]))
    assert error.param == "tools[0].function.name"
    assert error.code == "missing_required_parameter"
    assert error.message == "Missing required parameter: 'tools[0].function.name'."


def test_missing_deeply_nested_field() -> None:
    message = {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "f"}}]}
    error = chat_error(chat(messages=[USER, message]))
    assert error.param == "messages[1].tool_calls[0].function.arguments"


def test_missing_top_level_field() -> None:
    error = chat_error({"messages": [USER]})
    assert error.param == "model"
    assert error.code == "missing_required_parameter"


def test_empty_messages_parse_because_routes_render_them() -> None:
    # A plain model call with no messages is refused later, by the Authorize stage (see test_errors).
    assert validate(chat(messages=[]), ChatCompletionRequest).messages == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("top_p", 1.5),
        ("top_p", -0.1),
        ("temperature", 2.5),
        ("n", 0),
        ("n", 129),
        ("max_tokens", 0),
        ("max_completion_tokens", -3),
        ("presence_penalty", 3),
        ("top_logprobs", 21),
        ("stop", ["a", "b", "c", "d", "e"]),
    ],
)
def test_out_of_range_values_are_invalid_value(field: str, value: Any) -> None:
    error = chat_error(chat(**{field: value}))
    assert error.param == field
    assert error.code == "invalid_value"
    assert error.message.startswith(f"Invalid value for '{field}': ")
    assert "`" not in error.message


def test_top_p_message_states_the_bound() -> None:
    error = chat_error(chat(top_p=1.5))
    assert "<= 1" in error.message


@pytest.mark.parametrize(
    ("obj", "param"),
    [
        (chat(messages=[{"role": "robot", "content": "x"}]), "messages[0].role"),
        (chat(tool_choice="sometimes"), "tool_choice"),
        (chat(response_format={"type": "yaml"}), "response_format.type"),
    ],
)
def test_invalid_enum_values(obj: dict[str, Any], param: str) -> None:
    error = chat_error(obj)
    assert error.param == param
    assert error.code == "invalid_value"


@pytest.mark.parametrize(
    ("field", "value", "got"),
    [
        ("max_tokens", "5", "str"),
        ("stream", "yes", "str"),
        ("messages", "hi", "str"),
        ("temperature", [1], "array"),
    ],
)
def test_wrong_top_level_types(field: str, value: Any, got: str) -> None:
    error = chat_error(chat(**{field: value}))
    assert error.param == field
    assert error.code == "invalid_type"
    assert error.message.endswith(f"but got {got}.")


def test_boundary_values_are_accepted() -> None:
    request = validate(
        chat(top_p=1, temperature=0, n=128, max_tokens=1, presence_penalty=-2, top_logprobs=20),
        ChatCompletionRequest,
    )
    assert (request.top_p, request.temperature, request.n, request.max_tokens) == (1, 0, 128, 1)


def test_unknown_fields_pass_through_untouched() -> None:
    message = {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "x"}}]}
    obj = chat(messages=[message, {**USER, "vendor_note": "n"}], top_k=40, repetition_penalty=1.1)
    before = copy.deepcopy(obj)
    request = validate(obj, ChatCompletionRequest)
    assert obj == before
    assert obj["top_k"] == 40
    assert not hasattr(request, "top_k")
    assert not hasattr(request.messages[1], "vendor_note")
    assert request.messages[0].content == message["content"]
    assert request.messages[1].content == "hi"
    assert request.model == "m"


@pytest.mark.parametrize(
    ("stop", "expected"),
    [("END", ["END"]), (["a", "b"], ["a", "b"]), (None, []), ([], [])],
)
def test_stop_as_string_or_list(stop: str | list[str] | None, expected: list[str]) -> None:
    request = validate(chat(stop=stop), ChatCompletionRequest)
    assert request.stop == stop
    assert request.stop_list == expected


def test_stop_of_wrong_type() -> None:
    error = chat_error(chat(stop=[1, 2]))
    assert error.param == "stop[0]"


@pytest.mark.parametrize(
    ("fields", "limit"),
    [
        ({"max_tokens": 10, "max_completion_tokens": 20}, 20),
        ({"max_completion_tokens": 20}, 20),
        ({"max_tokens": 10}, 10),
        ({"max_tokens": 10, "max_completion_tokens": None}, 10),
        ({}, None),
    ],
)
def test_output_limit_prefers_max_completion_tokens(fields: dict[str, Any], limit: int | None) -> None:
    assert validate(chat(**fields), ChatCompletionRequest).output_limit == limit


def test_stream_usage_flag() -> None:
    assert validate(
        chat(stream=True, stream_options={"include_usage": True}), ChatCompletionRequest
    ).wants_stream_usage
    assert not validate(chat(stream=True), ChatCompletionRequest).wants_stream_usage
    assert not validate(chat(stream_options={}), ChatCompletionRequest).wants_stream_usage


def test_embedding_inputs() -> None:
    assert validate({"model": "e", "input": "one"}, EmbeddingRequest).texts == ["one"]
    assert validate({"model": "e", "input": ["a", "b"]}, EmbeddingRequest).texts == ["a", "b"]
    tokens = validate({"model": "e", "input": [[1, 2], [3]]}, EmbeddingRequest)
    assert not tokens.is_text
    with pytest.raises(InvalidRequest) as caught:
        _ = tokens.texts
    assert caught.value.param == "input"


@pytest.mark.parametrize(
    ("value", "param"),
    [
        (["a", 1.5], "input[1]"),
        (["a", [1, True]], "input[1]"),
        ([], "input"),
        (True, "input"),
        ([None], "input[0]"),
    ],
)
def test_embedding_input_errors_name_the_item(value: Any, param: str) -> None:
    error = embedding_error({"model": "e", "input": value})
    assert error.param == param
    assert error.status == 400


def test_embedding_dimensions_must_be_positive() -> None:
    assert embedding_error({"model": "e", "input": "x", "dimensions": 0}).param == "dimensions"
    assert embedding_error({"model": "e", "input": "x", "encoding_format": "hex"}).param == "encoding_format"
