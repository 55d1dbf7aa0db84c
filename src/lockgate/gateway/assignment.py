"""Which arm of a rollout serves a call: deterministic, sticky, and cheap.

A call's subject is the OpenAI ``user`` field, else the ``x-lockgate-session`` header, else the request
itself. Its bucket is a number in [0, 1) from a keyed hash of the rollout's salt and the subject, so the
same user lands in the same bucket for the whole rollout (and a new rollout, with a new salt, reshuffles
everyone). A call goes to the candidate when its bucket is below the candidate's share: raising the
share from 5% to 25% keeps every user who was on the candidate there.
"""

from __future__ import annotations

import hashlib

_SCALE = float(1 << 64)


def bucket(salt: str, subject: str) -> float:
    digest = hashlib.blake2b(subject.encode("utf-8"), key=salt.encode("utf-8")[:64], digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def subject(user: str | None, session: str | None, request_id: str) -> str:
    if user:
        return f"user:{user}"
    if session:
        return f"session:{session}"
    return f"request:{request_id}"
