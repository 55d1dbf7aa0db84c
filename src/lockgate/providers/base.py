"""The provider contract.

A provider speaks one upstream API. Requests and answers cross this seam in the OpenAI wire format
(plain dicts), so a provider that speaks another dialect (Anthropic, a local model) owns its translation
and nothing else in lockgate needs to know about it. Capability flags let the router skip deployments
that cannot serve a request instead of failing it.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from lockgate.wire import ChatCompletionRequest, EmbeddingRequest


class ProviderSettings(BaseModel):
    """Base of each provider's settings block in the configuration file; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str


SettingsT = TypeVar("SettingsT", bound=ProviderSettings)


class FailureKind(enum.Enum):
    TRANSIENT = "transient"
    """429, 5xx or a connection error: retried on the same deployment, then the next one is tried."""
    TIMEOUT = "timeout"
    """No answer in time: retried like TRANSIENT; the client sees 504 if nothing else answers."""
    DEPLOYMENT = "deployment"
    """The upstream refuses us (401/403/404): our configuration is wrong, so try the next deployment."""
    CLIENT = "client"
    """The request itself is bad (400/413/422): no other deployment will do better; the client gets 400."""


class ProviderFailure(Exception):
    """An upstream call failed. The message must never contain credentials."""

    def __init__(
        self,
        message: str,
        *,
        kind: FailureKind,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.kind in (FailureKind.TRANSIENT, FailureKind.TIMEOUT)

    @classmethod
    def from_status(cls, status: int, message: str, retry_after: float | None = None) -> ProviderFailure:
        if status == 429 or status >= 500:
            kind = FailureKind.TRANSIENT
        elif status in (401, 403, 404):
            kind = FailureKind.DEPLOYMENT
        elif status == 408:
            kind = FailureKind.TIMEOUT
        else:
            kind = FailureKind.CLIENT
        return cls(message, kind=kind, status=status, retry_after=retry_after)


@dataclass(frozen=True, slots=True)
class ChatInvocation:
    """One chat call to one deployment.

    ``body`` is the client's OpenAI-format body with ``model`` replaced by the upstream model name;
    ``chat`` is its validated, typed view for providers that translate.
    """

    body: dict[str, Any]
    chat: ChatCompletionRequest
    timeout: float
    request_id: str


@dataclass(frozen=True, slots=True)
class EmbeddingInvocation:
    body: dict[str, Any]
    embedding: EmbeddingRequest
    timeout: float
    request_id: str


class Provider(ABC, Generic[SettingsT]):
    """An upstream API. Subclasses set ``kind``, ``Settings`` and the capability flags they support."""

    kind: ClassVar[str]
    Settings: ClassVar[type[ProviderSettings]]

    supports_tools: ClassVar[bool] = False
    supports_response_format: ClassVar[bool] = False
    supports_n: ClassVar[bool] = False
    supports_embeddings: ClassVar[bool] = False

    def __init__(self, name: str, settings: SettingsT) -> None:
        self.name = name
        self.settings = settings

    async def start(self) -> None:
        """Open pools or load weights. Called once before the first request."""

    async def close(self) -> None:
        """Release pools and files. Called once at shutdown."""

    @abstractmethod
    async def chat(self, call: ChatInvocation) -> dict[str, Any]:
        """Return an OpenAI ``chat.completion`` object, or raise ProviderFailure."""

    @abstractmethod
    def chat_stream(self, call: ChatInvocation) -> AsyncIterator[dict[str, Any]]:
        """Yield OpenAI ``chat.completion.chunk`` objects; the last one carries ``usage`` when known.

        A failure before the first chunk must raise ProviderFailure from the first ``__anext__``.
        """

    async def embed(self, call: EmbeddingInvocation) -> dict[str, Any]:
        """Return an OpenAI embeddings ``list`` object, or raise ProviderFailure."""
        raise ProviderFailure(f"provider kind {self.kind!r} has no embeddings", kind=FailureKind.CLIENT)
