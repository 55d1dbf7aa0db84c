"""Translation between the OpenAI chat wire format and Anthropic's Messages API, both ways.

Pure functions plus one small stateful stream translator, with no I/O: the provider module stays a thin
transport shell and every mapping rule can be tested without a server. A request this deployment cannot
express raises ``ProviderFailure``; upstream objects are read in their documented shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from lockgate.providers.base import FailureKind, ProviderFailure
from lockgate.wire import ChatCompletionRequest, ChatMessage, Tool, ToolCall

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
# The HTTP status each documented error type stands for; a stream reports errors only by type.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
_PROMPT_USAGE_KEYS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")

Block = dict[str, Any]


def _client_error(message: str) -> ProviderFailure:
    return ProviderFailure(message, kind=FailureKind.CLIENT, status=400)


def build_request(chat: ChatCompletionRequest, default_max_tokens: int) -> dict[str, Any]:
    """The ``/v1/messages`` body for ``chat``, without ``stream``."""
    if chat.n not in (None, 1) or (chat.response_format is not None and chat.response_format.type != "text"):
        # The router should have skipped this deployment; another one may still serve the request.
        raise ProviderFailure("n > 1 and response_format are not supported", kind=FailureKind.DEPLOYMENT)
    system, messages = translate_messages(chat.messages)
    payload: dict[str, Any] = {
        "model": chat.model,
        "messages": messages,
        "max_tokens": chat.output_limit or default_max_tokens,
    }
    if system:
        payload["system"] = system
    if chat.stop_list:
        payload["stop_sequences"] = chat.stop_list
    if chat.temperature is not None:
        # OpenAI accepts 0..2, Anthropic 0..1: the top of both ranges means "most random".
        payload["temperature"] = min(chat.temperature, 1.0)
    if chat.top_p is not None:
        payload["top_p"] = chat.top_p
    if chat.user:
        payload["metadata"] = {"user_id": chat.user}
    if chat.tools:
        payload["tools"] = [translate_tool(tool) for tool in chat.tools]
        choice = translate_tool_choice(chat.tool_choice, chat.parallel_tool_calls)
        if choice is not None:
            payload["tool_choice"] = choice
    return payload


def translate_messages(messages: Sequence[ChatMessage]) -> tuple[str, list[dict[str, Any]]]:
    """The joined system prompt and the alternating user/assistant messages Anthropic requires."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for position, message in enumerate(messages):
        if message.role in ("system", "developer"):
            text = _system_text(message.content, position)
            if text:
                system.append(text)
            continue
        role, blocks = _message_blocks(message, position)
        if not blocks:
            # An empty message (e.g. assistant content "") would be an empty Anthropic turn, which it rejects.
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return "\n\n".join(system), out


def translate_tool(tool: Tool) -> dict[str, Any]:
    spec = tool.function
    schema = spec.parameters or {"type": "object", "properties": {}}
    out: dict[str, Any] = {"name": spec.name, "input_schema": schema}
    if spec.description:
        out["description"] = spec.description
    return out


def translate_tool_choice(
    choice: str | Mapping[str, Any] | None, parallel_tool_calls: bool | None
) -> dict[str, Any] | None:
    """Anthropic's ``tool_choice``, or None where its default (auto, parallel allowed) is what was asked."""
    if choice is None or choice == "auto":
        mapped: dict[str, Any] = {"type": "auto"}
    elif choice == "required":
        mapped = {"type": "any"}
    elif choice == "none":
        mapped = {"type": "none"}
    elif isinstance(choice, Mapping) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        if not isinstance(name, str):
            raise _client_error("tool_choice.function.name is required")
        mapped = {"type": "tool", "name": name}
    else:
        raise _client_error(f"tool_choice {choice!r} is not supported by this deployment")
    if parallel_tool_calls is False and mapped["type"] != "none":
        mapped["disable_parallel_tool_use"] = True
    elif choice is None:
        return None
    return mapped


def _message_blocks(message: ChatMessage, position: int) -> tuple[str, list[Block]]:
    if message.role == "user":
        return "user", _content_blocks(message.content, position)
    if message.role == "assistant":
        blocks = _content_blocks(message.content, position)
        blocks.extend(_tool_use_block(call) for call in message.tool_calls or ())
        return "assistant", blocks
    if message.role == "tool":
        if not message.tool_call_id:
            raise _client_error(f"messages[{position}]: a tool message needs tool_call_id")
        result: Block = {"type": "tool_result", "tool_use_id": message.tool_call_id}
        parts = message.content
        content = _content_blocks(parts, position) if isinstance(parts, list) else parts
        if content:
            result["content"] = content
        return "user", [result]
    raise _client_error(f"messages[{position}]: role {message.role!r} is not supported; use tools")


def _content_blocks(content: str | list[dict[str, Any]] | None, position: int) -> list[Block]:
    # Anthropic rejects empty text blocks, which OpenAI clients send freely (e.g. beside tool calls).
    if content is None or isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[Block] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise _client_error(f"messages[{position}]: a text part needs a string 'text'")
            if text:
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            blocks.append(_image_block(part.get("image_url"), position))
        else:
            raise _client_error(f"messages[{position}]: content part type {kind!r} is not supported")
    return blocks


def _system_text(content: str | list[dict[str, Any]] | None, position: int) -> str:
    blocks = _content_blocks(content, position)
    if any(block["type"] != "text" for block in blocks):
        raise _client_error(f"messages[{position}]: system messages can only hold text")
    return "\n".join(str(block["text"]) for block in blocks)


def _image_block(image_url: object, position: int) -> Block:
    url = image_url.get("url") if isinstance(image_url, Mapping) else image_url
    if isinstance(url, str) and url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if comma and encoding == "base64" and media_type in _IMAGE_TYPES:
            return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
        raise _client_error(f"messages[{position}]: image data URLs must be base64 JPEG, PNG, GIF or WebP")
    if isinstance(url, str) and url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise _client_error(f"messages[{position}]: image_url.url must be a data: or http(s) URL")


def _tool_use_block(call: ToolCall) -> Block:
    raw, where = call.function.arguments, f"tool call {call.id!r} ({call.function.name})"
    try:
        # Some clients send "" for a function that takes no arguments.
        arguments = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        raise _client_error(f"{where}: function.arguments is not valid JSON") from None
    if not isinstance(arguments, dict):
        raise _client_error(f"{where}: function.arguments must be a JSON object")
    return {"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments}


def finish_reason(stop_reason: str | None) -> str:
    return _FINISH_REASONS.get(stop_reason or "", "stop")


def usage_numbers(usage: Mapping[str, Any]) -> dict[str, int]:
    """OpenAI ``usage``: cached prompt tokens are still prompt tokens."""
    prompt = sum(int(usage.get(key) or 0) for key in _PROMPT_USAGE_KEYS)
    completion = int(usage.get("output_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def translate_response(message: Mapping[str, Any], *, created: int, fallback_model: str) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` for an Anthropic ``message``."""
    texts = [block["text"] for block in message["content"] if block["type"] == "text"]
    tool_calls = [_tool_call(block) for block in message["content"] if block["type"] == "tool_use"]
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not tool_calls else None,
    }
    if tool_calls:
        reply["tool_calls"] = tool_calls
    finish = finish_reason(message.get("stop_reason"))
    return {
        "id": message["id"],
        "object": "chat.completion",
        "created": created,
        "model": message.get("model") or fallback_model,
        "choices": [{"index": 0, "message": reply, "finish_reason": finish, "logprobs": None}],
        "usage": usage_numbers(message.get("usage") or {}),
    }


def _tool_call(block: Mapping[str, Any]) -> dict[str, Any]:
    function = {"name": block["name"], "arguments": orjson.dumps(block.get("input") or {}).decode()}
    return {"id": block["id"], "type": "function", "function": function}


def stream_failure(error: object, scrub: Callable[[str], str]) -> ProviderFailure:
    """The failure for an ``error`` event, classified as its HTTP status would be."""
    kind = error.get("type") if isinstance(error, Mapping) else None
    detail = error.get("message") if isinstance(error, Mapping) else None
    # Unknown error types are treated like api_error: a fault on Anthropic's side, worth a retry.
    status = _ERROR_STATUS.get(kind, 500) if isinstance(kind, str) else 500
    if status in (401, 403):
        return ProviderFailure.from_status(status, f"upstream refused the credentials ({kind})")
    return ProviderFailure.from_status(status, f"upstream stream failed: {kind}: {scrub(str(detail))}")


class StreamTranslator:
    """Turns Anthropic stream events into OpenAI ``chat.completion.chunk`` objects, one event at a time."""

    def __init__(self, *, created: int, model: str, scrub: Callable[[str], str]) -> None:
        self.id = ""
        self.model = model
        self.created = created
        self.finished = False
        self._scrub = scrub
        self._usage: dict[str, int] = {}
        self._tool_positions: dict[int, int] = {}

    def feed(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        kind = event["type"]
        if kind == "message_start":
            message = event["message"]
            self.id = message.get("id") or self.id
            self.model = message.get("model") or self.model
            self._add_usage(message.get("usage"))
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(event["index"], event["content_block"])
        if kind == "content_block_delta":
            return self._block_delta(event["index"], event["delta"])
        if kind == "message_delta":
            self._add_usage(event.get("usage"))
            return [self._chunk({}, finish_reason(event["delta"].get("stop_reason")))]
        if kind == "message_stop":
            self.finished = True
            return [{**self._chunk({}), "choices": [], "usage": usage_numbers(self._usage)}]
        if kind == "error":
            raise stream_failure(event.get("error"), self._scrub)
        # ping, content_block_stop, and event types Anthropic may add later carry nothing for OpenAI.
        return []

    def _block_start(self, index: int, block: Mapping[str, Any]) -> list[dict[str, Any]]:
        if block["type"] == "tool_use":
            # OpenAI numbers tool calls among themselves; Anthropic numbers all content blocks.
            position = self._tool_positions[index] = len(self._tool_positions)
            function = {"name": block["name"], "arguments": ""}
            call = {"index": position, "id": block["id"], "type": "function", "function": function}
            return [self._chunk({"tool_calls": [call]})]
        if block["type"] == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        return []

    def _block_delta(self, index: int, delta: Mapping[str, Any]) -> list[dict[str, Any]]:
        if delta["type"] == "text_delta" and delta["text"]:
            return [self._chunk({"content": delta["text"]})]
        if delta["type"] == "input_json_delta" and delta["partial_json"] and index in self._tool_positions:
            call = {"index": self._tool_positions[index], "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [call]})]
        return []

    def _add_usage(self, usage: object) -> None:
        # message_delta counts are cumulative, so the latest value of each counter wins.
        if isinstance(usage, Mapping):
            self._usage.update({key: value for key, value in usage.items() if type(value) is int})

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
