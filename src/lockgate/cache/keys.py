"""What makes two calls the same: the exact key, and the scope and text of a semantic lookup.

The exact key hashes, with BLAKE2b, who may share the entry (the tenant, or the tenant and the key),
what answers (the release of a ``route:`` call, else the public model name) and the canonical JSON of
every request field that can change the answer. Canonical means sorted keys, ``null`` fields dropped
and integral floats written as integers (``temperature: 0`` and ``0.0`` are one key). Fields that
cannot change the answer are left out: ``model`` (already in the key), ``stream`` and
``stream_options`` (a streamed and a plain call share one entry), ``user``, ``metadata``, ``store``,
``safety_identifier`` and ``prompt_cache_key``. Everything else counts, vendor extensions such as
``top_k`` included: an unknown field is assumed to matter.

A semantic lookup compares only the last message, which must be a user message of text; everything
else (the system prompt, earlier turns, every parameter) must match exactly, so it goes into the scope
hash. A ``route:`` call that sends only prompt variables compares its question variable instead (see
``fingerprint``), so the words of the prompt template do not make every question look alike. The text
compared has its whitespace collapsed and is lower-cased.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from lockgate.wire import ChatCompletionRequest

KEY_VERSION = "v1"
"""Part of every key: a change in what is hashed or stored gets new keys, never a misread entry."""

IGNORED_FIELDS = frozenset(
    {
        "model",
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "safety_identifier",
        "prompt_cache_key",
    }
)


@dataclass(frozen=True, slots=True)
class Fingerprint:
    key: str
    """The exact key: hex digest."""
    scope: str | None
    """The semantic scope: hex digest of everything but the last user message; None: no semantic lookup."""
    text: str | None
    """The last user message, normalised, to embed; None when ``scope`` is None."""


def fingerprint(
    partition: str,
    target: str,
    body: dict[str, Any],
    *,
    prompt_messages: int = 0,
    variables: Any = None,
    variable: str | None = None,
) -> Fingerprint:
    """``partition``: who shares the entry; ``target``: ``release:<id>`` or ``model:<name>``.

    For a ``route:`` call, ``prompt_messages`` is how many leading messages the release's prompt rendered
    and ``variables`` the caller's prompt variables. When the caller sent no messages of its own, the
    text compared is the variable ``variable`` (or the only one), every other variable must match
    exactly, and the prompt's wording is left out of the comparison; without such a variable it is the
    rendered last user message.
    """
    fields = {k: v for k, v in body.items() if k not in IGNORED_FIELDS}
    key = _digest("exact", partition, target, canonical(fields))
    messages = fields.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return Fingerprint(key, None, None)
    if len(messages) <= prompt_messages and isinstance(variables, dict):
        name = variable if variable is not None else (next(iter(variables)) if len(variables) == 1 else None)
        value = variables.get(name) if name is not None else None
        if isinstance(value, str) and value.strip():
            others = {k: v for k, v in variables.items() if k != name}
            rest = {**{k: v for k, v in fields.items() if k != "messages"}, "variables": others}
            scope = _digest("semantic-variable", partition, target, canonical([name, rest]))
            return Fingerprint(key, scope, semantic_text(value))
    last = messages[-1]
    text = _text(last.get("content")) if last.get("role") == "user" else None
    if not text:
        return Fingerprint(key, None, None)
    rest = {**fields, "messages": [*messages[:-1], {k: v for k, v in last.items() if k != "content"}]}
    scope = _digest("semantic", partition, target, canonical(rest))
    return Fingerprint(key, scope, semantic_text(text))


def semantic_text(text: str) -> str:
    """What is embedded of a last user message: whitespace collapsed, lower-cased."""
    return " ".join(text.split()).lower()


def canonical(value: Any) -> bytes:
    return orjson.dumps(_normal(value), option=orjson.OPT_SORT_KEYS)


def samples(request: ChatCompletionRequest) -> bool:
    """Whether the call samples: the answer may differ each time. ``temperature: 0`` or a ``seed`` (the
    caller asks for a reproducible answer) do not; an absent temperature is the upstream's default, 1."""
    return request.temperature != 0 and request.seed is None


def _normal(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _normal(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _text(content: Any) -> str | None:
    """The text of a message's content; None if it holds anything but text (an image, audio)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        parts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                return None
            parts.append(part["text"])
        return "\n".join(parts)
    return None


def _digest(kind: str, partition: str, target: str, material: bytes) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in (KEY_VERSION.encode(), kind.encode(), partition.encode(), target.encode()):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    h.update(material)
    return h.hexdigest()
