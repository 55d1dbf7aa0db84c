"""A complete answer, held once, given back as a body or as a stream.

An answer is kept only when it is complete: at least one choice, and every choice finished because the
model stopped (``stop``), hit its length limit (``length``) or called tools (``tool_calls``,
``function_call``). A stream is assembled chunk by chunk (text, refusals and tool-call fragments joined
per choice) into the same form as a body, so a streamed call and a plain one share one entry. Calls
that ask for ``logprobs`` are never cached (see the stage), so none are kept.

Replayed, an answer gets a new ``id``; ``created`` is when it was first generated and ``usage`` the
upstream's count for it. As a stream it is one chunk per choice with its whole message, one with its
finish reason, then a usage chunk (passed on only to callers who asked for usage).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

FINISHED = frozenset({"stop", "length", "tool_calls", "function_call"})
_MESSAGE_FIELDS = ("role", "content", "refusal", "tool_calls", "function_call")


@dataclass(slots=True)
class CachedAnswer:
    choices: list[dict[str, Any]]
    """``{"index", "message", "finish_reason"}`` per choice, in index order."""
    created: int
    usage: dict[str, Any] | None = None
    system_fingerprint: str | None = None
    stored_at: float = field(default_factory=time.time)
    """Wall-clock time it was stored: its age is comparable across replicas."""

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> CachedAnswer | None:
        """The answer in a chat completion body; None unless it is complete."""
        choices = []
        for choice in body.get("choices") or ():
            message = choice.get("message")
            if not isinstance(message, dict):
                return None
            kept = {k: message[k] for k in _MESSAGE_FIELDS if message.get(k) is not None}
            choices.append(
                {
                    "index": int(choice.get("index") or 0),
                    "message": kept,
                    "finish_reason": choice.get("finish_reason"),
                }
            )
        usage = body.get("usage")
        fingerprint = body.get("system_fingerprint")
        answer = cls(
            sorted(choices, key=lambda c: int(c["index"])),
            int(body.get("created") or time.time()),
            usage if isinstance(usage, dict) else None,
            fingerprint if isinstance(fingerprint, str) else None,
        )
        return answer if answer.complete else None

    @property
    def complete(self) -> bool:
        return bool(self.choices) and all(c.get("finish_reason") in FINISHED for c in self.choices)

    def texts(self) -> list[str]:
        return [str(c["message"].get("content") or "") for c in self.choices]

    def body(self, completion_id: str, model: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion",
            "created": self.created,
            "model": model,
            "choices": [
                {
                    "index": c["index"],
                    "message": {"role": "assistant", **c["message"]},
                    "logprobs": None,
                    "finish_reason": c["finish_reason"],
                }
                for c in self.choices
            ],
        }
        if self.system_fingerprint is not None:
            body["system_fingerprint"] = self.system_fingerprint
        if self.usage is not None:
            body["usage"] = self.usage
        return body

    async def chunks(self, completion_id: str, model: str) -> AsyncIterator[dict[str, Any]]:
        base: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": model,
        }
        if self.system_fingerprint is not None:
            base["system_fingerprint"] = self.system_fingerprint
        for c in self.choices:
            message = c["message"]
            delta: dict[str, Any] = {
                "role": message.get("role", "assistant"),
                "content": message.get("content"),
            }
            for name in ("refusal", "function_call"):
                if name in message:
                    delta[name] = message[name]
            if "tool_calls" in message:
                delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
            yield {**base, "choices": [{"index": c["index"], "delta": delta, "finish_reason": None}]}
            yield {
                **base,
                "choices": [{"index": c["index"], "delta": {}, "finish_reason": c["finish_reason"]}],
            }
        if self.usage is not None:
            yield {**base, "choices": [], "usage": self.usage}

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "choices": self.choices,
                "created": self.created,
                "usage": self.usage,
                "system_fingerprint": self.system_fingerprint,
                "stored_at": self.stored_at,
            }
        )

    @classmethod
    def loads(cls, data: bytes) -> CachedAnswer | None:
        """The answer stored as ``data``; None if it cannot be read (then it is a miss)."""
        try:
            raw = orjson.loads(data)
            answer = cls(
                list(raw["choices"]),
                int(raw["created"]),
                raw.get("usage"),
                raw.get("system_fingerprint"),
                float(raw["stored_at"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        return answer if answer.complete else None


class StreamAssembler:
    """Joins the chunks of a stream into the answer they spell, as they pass."""

    def __init__(self) -> None:
        self._choices: dict[int, dict[str, Any]] = {}
        self._created: int | None = None
        self._usage: dict[str, Any] | None = None
        self._fingerprint: str | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        if self._created is None and isinstance(chunk.get("created"), int):
            self._created = chunk["created"]
        if isinstance(chunk.get("system_fingerprint"), str):
            self._fingerprint = chunk["system_fingerprint"]
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            index = int(choice.get("index") or 0)
            state = self._choices.setdefault(index, {"message": {}, "finish_reason": None, "tools": {}})
            delta = choice.get("delta") or {}
            message = state["message"]
            if delta.get("role"):
                message["role"] = delta["role"]
            for name in ("content", "refusal"):
                if isinstance(delta.get(name), str):
                    message[name] = message.get(name, "") + delta[name]
            call = delta.get("function_call")
            if isinstance(call, dict):
                joined = message.setdefault("function_call", {"name": "", "arguments": ""})
                _join(joined, call)
            for fragment in delta.get("tool_calls") or ():
                if isinstance(fragment, dict):
                    self._tool(state["tools"], fragment)
            if choice.get("finish_reason"):
                state["finish_reason"] = choice["finish_reason"]

    def answer(self) -> CachedAnswer | None:
        choices = []
        for index in sorted(self._choices):
            state = self._choices[index]
            message = dict(state["message"])
            message.setdefault("role", "assistant")
            if state["tools"]:
                message["tool_calls"] = [state["tools"][i] for i in sorted(state["tools"])]
            choices.append({"index": index, "message": message, "finish_reason": state["finish_reason"]})
        answer = CachedAnswer(choices, self._created or int(time.time()), self._usage, self._fingerprint)
        return answer if answer.complete else None

    @staticmethod
    def _tool(tools: dict[int, dict[str, Any]], fragment: dict[str, Any]) -> None:
        index = int(fragment.get("index") or 0)
        call = tools.setdefault(
            index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
        )
        if fragment.get("id"):
            call["id"] = fragment["id"]
        if fragment.get("type"):
            call["type"] = fragment["type"]
        function = fragment.get("function")
        if isinstance(function, dict):
            _join(call["function"], function)


def _join(into: dict[str, Any], fragment: dict[str, Any]) -> None:
    for name in ("name", "arguments"):
        if isinstance(fragment.get(name), str):
            into[name] = into.get(name, "") + fragment[name]
