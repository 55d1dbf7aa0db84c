"""Pooled HTTP to an upstream: JSON calls, server-sent events and failure classification.

One ``aiohttp`` session per provider keeps connections alive across requests. Every transport error is
mapped onto a ``ProviderFailure`` whose message is safe to show: configured secrets are scrubbed and the
bodies of credential rejections are never passed on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp.http_exceptions import BadHttpMessage

from lockgate.providers.base import FailureKind, ProviderFailure

_MAX_ERROR_TEXT = 500


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str | None
    data: str


class HttpUpstream:
    """A keep-alive connection pool to one base URL."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        secrets: Iterable[str] = (),
        max_connections: int = 512,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = dict(headers)
        self._secrets = [s for s in secrets if s]
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                ttl_dns_cache=300,
                keepalive_timeout=60,
                enable_cleanup_closed=True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("HttpUpstream.start() was not awaited")
        return self._session

    async def post_json(self, path: str, payload: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        """POST ``payload`` and return the decoded JSON object of a 2xx answer."""
        try:
            async with self.session.post(
                self.base_url + path,
                data=orjson.dumps(payload),
                headers={"content-type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise self._status_failure(resp.status, raw, resp.headers)
        except ProviderFailure:
            raise
        except BaseException as exc:
            raise self._transport_failure(exc) from None
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ProviderFailure(
                "upstream sent a body that is not JSON", kind=FailureKind.TRANSIENT
            ) from None
        if not isinstance(answer, dict):
            raise ProviderFailure("upstream sent JSON that is not an object", kind=FailureKind.TRANSIENT)
        return answer

    async def post_sse(
        self, path: str, payload: Mapping[str, Any], timeout: float
    ) -> AsyncGenerator[SseEvent, None]:
        """POST ``payload`` and yield the server-sent events of the answer.

        ``timeout`` bounds the wait for the first byte and every later gap between reads. Failures before
        the first event raise ProviderFailure; so do failures later, which callers turn into an error event.
        """
        try:
            resp = await self.session.post(
                self.base_url + path,
                data=orjson.dumps(payload),
                headers={"content-type": "application/json", "accept": "text/event-stream"},
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=min(timeout, 10.0), sock_read=timeout),
            )
        except BaseException as exc:
            raise self._transport_failure(exc) from None
        try:
            if resp.status >= 400:
                raw = await resp.read()
                raise self._status_failure(resp.status, raw, resp.headers)
            event: str | None = None
            data: list[str] = []
            async for raw_line in resp.content:
                line = raw_line.decode("utf-8").rstrip("\r\n")
                if not line:
                    if data:
                        yield SseEvent(event, "\n".join(data))
                    event, data = None, []
                elif line.startswith("data:"):
                    value = line[5:]
                    data.append(value[1:] if value.startswith(" ") else value)
                elif line.startswith("event:"):
                    event = line[6:].strip()
            if data:
                yield SseEvent(event, "\n".join(data))
        except ProviderFailure:
            raise
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._transport_failure(exc) from None
        except (UnicodeDecodeError, BadHttpMessage):
            raise ProviderFailure(
                "upstream sent a malformed event stream", kind=FailureKind.TRANSIENT
            ) from None
        finally:
            resp.release()

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return text

    def _status_failure(self, status: int, raw: bytes, headers: Mapping[str, str]) -> ProviderFailure:
        retry_after = _retry_after(headers.get("retry-after"))
        if status in (401, 403):
            # Rejections of our credentials may echo part of the key: never pass their body on.
            return ProviderFailure.from_status(
                status, f"upstream refused the credentials ({status})", retry_after
            )
        detail = self.scrub(_error_text(raw))
        return ProviderFailure.from_status(status, f"upstream answered {status}: {detail}", retry_after)

    def _transport_failure(self, exc: BaseException) -> ProviderFailure:
        if isinstance(exc, asyncio.CancelledError):
            raise exc
        if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
            return ProviderFailure("upstream did not answer in time", kind=FailureKind.TIMEOUT)
        if isinstance(exc, aiohttp.ClientConnectorError):
            return ProviderFailure("could not connect to upstream", kind=FailureKind.TRANSIENT)
        if isinstance(exc, aiohttp.ClientError):
            return ProviderFailure(
                f"upstream connection failed: {type(exc).__name__}", kind=FailureKind.TRANSIENT
            )
        raise exc


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_text(raw: bytes) -> str:
    """The most useful line of an upstream error body: its ``error.message`` when it has one."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:_MAX_ERROR_TEXT].decode("utf-8", "replace").strip() or "(empty body)"
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:_MAX_ERROR_TEXT]
        if isinstance(error, str):
            return error[:_MAX_ERROR_TEXT]
        if isinstance(parsed.get("message"), str):
            return str(parsed["message"])[:_MAX_ERROR_TEXT]
    return raw[:_MAX_ERROR_TEXT].decode("utf-8", "replace")
