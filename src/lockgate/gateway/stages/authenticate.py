"""Who is calling: the API key, checked against the in-memory keyring."""

from __future__ import annotations

from lockgate.gateway.pipeline import Call, Handler, Reply
from lockgate.security.keyring import Keyring


class Authenticate:
    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring

    async def __call__(self, call: Call, call_next: Handler) -> Reply:
        # In-process callers (the eval runner) arrive already identified; HTTP calls never do.
        if call.principal is None:
            call.principal = self._keyring.authenticate(call.authorization)
        return await call_next(call)
