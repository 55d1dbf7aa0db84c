"""An answer is stored once, from a body or from a stream, and given back either way."""

from __future__ import annotations

from typing import Any

import pytest

from lockgate.cache.answers import CachedAnswer, StreamAssembler

BODY: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "upstream-m",
    "system_fingerprint": "fp_1",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"},
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
}

TOOL_STREAM: list[dict[str, Any]] = [
    {"created": 1, "choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]},
    {
        "created": 1,
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get", "arguments": ""},
                        }
                    ]
                },
            }
        ],
    },
    {
        "created": 1,
        "choices": [
            {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"q":'}}]}}
        ],
    },
    {
        "created": 1,
        "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"x"}'}}]}}],
    },
    {"created": 1, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    {"created": 1, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}},
]


async def collect(answer: CachedAnswer) -> list[dict[str, Any]]:
    return [chunk async for chunk in answer.chunks("chatcmpl-new", "m")]


async def test_a_body_replays_as_the_same_body_with_a_new_id() -> None:
    answer = CachedAnswer.from_body(BODY)
    assert answer is not None
    stored = CachedAnswer.loads(answer.dumps())
    assert stored is not None
    body = stored.body("chatcmpl-new", "m")
    assert body["id"] == "chatcmpl-new"
    assert body["model"] == "m"
    assert (body["created"], body["system_fingerprint"], body["usage"]) == (
        BODY["created"],
        "fp_1",
        BODY["usage"],
    )
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Paris."}
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_a_body_replays_as_a_stream_that_assembles_to_it() -> None:
    answer = CachedAnswer.from_body(BODY)
    assert answer is not None
    chunks = await collect(answer)
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-new" for c in chunks)
    assert chunks[-1] == {**chunks[-1], "choices": [], "usage": BODY["usage"]}
    assembler = StreamAssembler()
    for chunk in chunks:
        assembler.add(chunk)
    again = assembler.answer()
    assert again is not None
    assert again.body("x", "m")["choices"] == answer.body("x", "m")["choices"]


async def test_a_stream_of_tool_call_fragments_assembles_into_one_tool_call() -> None:
    assembler = StreamAssembler()
    for chunk in TOOL_STREAM:
        assembler.add(chunk)
    answer = assembler.answer()
    assert answer is not None
    message = answer.body("x", "m")["choices"][0]["message"]
    assert message["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "get", "arguments": '{"q":"x"}'}}
    ]
    assert answer.usage == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    replayed = await collect(answer)
    assert replayed[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] == '{"q":"x"}'


async def test_several_choices_keep_their_order() -> None:
    body = {
        **BODY,
        "choices": [
            {"index": 1, "message": {"role": "assistant", "content": "B"}, "finish_reason": "stop"},
            {"index": 0, "message": {"role": "assistant", "content": "A"}, "finish_reason": "length"},
        ],
    }
    answer = CachedAnswer.from_body(body)
    assert answer is not None
    assert answer.texts() == ["A", "B"]
    chunks = await collect(answer)
    assert [c["choices"][0]["index"] for c in chunks if c["choices"]] == [0, 0, 1, 1]


@pytest.mark.parametrize(
    "choices",
    [
        [],
        [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": None}],
        [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "content_filter"}],
        [
            {"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": "y"}, "finish_reason": None},
        ],
    ],
)
def test_an_incomplete_answer_is_not_kept(choices: list[dict[str, Any]]) -> None:
    assert CachedAnswer.from_body({**BODY, "choices": choices}) is None


def test_a_stream_without_its_end_is_not_kept() -> None:
    assembler = StreamAssembler()
    for chunk in TOOL_STREAM[:3]:
        assembler.add(chunk)
    assert assembler.answer() is None


@pytest.mark.parametrize("data", [b"not json", b"{}", b'{"choices": [], "created": 1, "stored_at": 1}'])
def test_an_unreadable_entry_is_a_miss(data: bytes) -> None:
    assert CachedAnswer.loads(data) is None
