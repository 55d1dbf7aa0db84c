"""Authentication and the body limit of the control API, before any route runs.

Every ``/api/`` request must carry a valid control token (``Authorization: Bearer lgc-...``); the one
exception is redeeming an invitation, which carries the invitation code instead. A request without a
valid credential is answered 401 (and audited) before its body is read, and no body larger than
``control.max_body_bytes`` is read at all (413).
"""

from __future__ import annotations

import asyncio
import uuid

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lockgate.security.tokens import TokenService
from lockgate.service_errors import ControlError, Unauthorized

REDEEM = "/api/v1/invitations/redeem"


class ControlAuth:
    def __init__(self, app: ASGIApp, tokens: TokenService, max_body_bytes: int) -> None:
        self._app = app
        self._tokens = tokens
        self._limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/api/"):
            await self._app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        request_id = f"req_{uuid.uuid4().hex}"
        client = scope.get("client")
        source = str(client[0]) if client else None
        credential = headers.get("authorization", "")
        scheme, _, secret = credential.partition(" ")
        secret = secret.strip() if scheme.lower() == "bearer" else ""
        state = scope.setdefault("state", {})
        try:
            if scope["path"] == REDEEM and secret.startswith("lgi-"):
                state["invitation"] = secret
            else:
                state["actor"] = await asyncio.to_thread(
                    self._tokens.authenticate, secret or None, source=source, request_id=request_id
                )
        except ControlError as exc:
            await _error(send, exc, {"www-authenticate": "Bearer"} if isinstance(exc, Unauthorized) else {})
            return
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self._limit):
            await _error(send, _TooLarge(f"request body exceeds the limit of {self._limit} bytes"), {})
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if len(body) > self._limit:
                await _error(send, _TooLarge(f"request body exceeds the limit of {self._limit} bytes"), {})
                return
        await self._app(scope, _replay(bytes(body), receive), send)


class _TooLarge(ControlError):
    status = 413


def _replay(body: bytes, then: Receive) -> Receive:
    """The body read already, in one message; afterwards the connection's own messages (disconnect)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await then()

    return receive


async def _error(send: Send, error: ControlError, extra: dict[str, str]) -> None:
    body = orjson.dumps({"error": {"message": error.message, "type": type(error).__name__.lstrip("_")}})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
