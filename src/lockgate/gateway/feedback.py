"""User feedback on an answer: ``POST /v1/feedback`` rates one request the caller made.

```json
{"request_id": "req_5d0c...", "thumbs": "up", "label": "helpful", "comment": "short and right"}
{"request_id": "req_5d0c...", "score": 0.25}
```

``score`` is a number in [0, 1]; ``thumbs`` is ``up`` (1) or ``down`` (0); exactly one of the two.
``label`` (at most 100 characters) and ``comment`` (at most 2000) are optional. The request id is the
``x-request-id`` header (or the error body's ``request_id``) of the answer being rated.

Who may rate: only the API key that made the request. A request made with another key of the same
tenant is refused (403 ``not_your_request``); a request of another tenant is answered exactly like an
unknown id (404 ``request_not_found``, after the same wait), so nothing tells one tenant that another's
request exists. The request log is written in batches (every 200 ms by default), so a rating sent right
after its answer may arrive before the request's record: the lookup is retried for up to two seconds
before the id is called unknown.

One rating per request: rating again replaces the earlier rating (its score, label and comment, and
its time), and the answer says ``"replaced": true``. Ratings feed a rollout's analysis (quality) and
a bandit's ``feedback`` reward, and ``datasets capture`` copies them into the captured cases' labels.

Database work runs in worker threads (``asyncio.to_thread``); the event loop only waits.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError

from lockgate.errors import InvalidRequest, NotFound, PermissionDenied
from lockgate.security.keyring import Principal
from lockgate.store.tables import feedback, request_log

REQUEST_ID = re.compile(r"^req_[0-9a-f]{32}$")
MAX_LABEL = 100
MAX_COMMENT = 2000
FIELDS = ("request_id", "score", "thumbs", "label", "comment")
THUMBS = {"up": 1.0, "down": 0.0}


@dataclass(frozen=True, slots=True)
class Rating:
    request_id: str
    score: float
    label: str | None = None
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class Rated:
    rating: Rating
    created_at: datetime
    replaced: bool

    def body(self) -> dict[str, Any]:
        return {
            "object": "feedback",
            "request_id": self.rating.request_id,
            "score": self.rating.score,
            "label": self.rating.label,
            "comment": self.rating.comment,
            "created_at": self.created_at.isoformat(),
            "replaced": self.replaced,
        }


def parse_rating(body: dict[str, Any]) -> Rating:
    """The rating a feedback body asks for; an ``InvalidRequest`` naming the field otherwise."""
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise InvalidRequest(
            f"Unknown field '{unknown[0]}'. A rating has {', '.join(FIELDS)}.",
            param=unknown[0],
            code="unknown_parameter",
        )
    request_id = body.get("request_id")
    if request_id is None:
        raise _missing("request_id", "Give 'request_id': the x-request-id of the answer you rate.")
    if not isinstance(request_id, str):
        raise _wrong_type("request_id", "a string")
    if not REQUEST_ID.match(request_id):
        raise InvalidRequest(
            "'request_id' is a gateway request id: the x-request-id header of an answer (req_ and 32 hex "
            "digits).",
            param="request_id",
            code="invalid_value",
        )
    score, thumbs = body.get("score"), body.get("thumbs")
    if score is not None and thumbs is not None:
        raise InvalidRequest(
            "Give either 'score' or 'thumbs', not both.", param="thumbs", code="invalid_value"
        )
    if score is None and thumbs is None:
        raise _missing("score", "Give 'score' (a number from 0 to 1) or 'thumbs' ('up' or 'down').")
    if thumbs is not None:
        if thumbs not in THUMBS:
            raise InvalidRequest("'thumbs' is 'up' or 'down'.", param="thumbs", code="invalid_value")
        value = THUMBS[thumbs]
    else:
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise _wrong_type("score", "a number")
        if not 0.0 <= score <= 1.0:
            raise InvalidRequest(
                f"'score' must be between 0 and 1, got {score}.", param="score", code="invalid_value"
            )
        value = float(score)
    return Rating(
        request_id,
        value,
        _text(body, "label", MAX_LABEL, allow_empty=False),
        _text(body, "comment", MAX_COMMENT, allow_empty=True),
    )


def _text(body: dict[str, Any], name: str, limit: int, *, allow_empty: bool) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _wrong_type(name, "a string")
    if not value and not allow_empty:
        raise InvalidRequest(
            f"'{name}' must not be empty; leave it out instead.", param=name, code="invalid_value"
        )
    if len(value) > limit:
        raise InvalidRequest(
            f"'{name}' is {len(value)} characters long; at most {limit}.", param=name, code="invalid_value"
        )
    return value


def _missing(name: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, param=name, code="missing_required_parameter")


def _wrong_type(name: str, expected: str) -> InvalidRequest:
    return InvalidRequest(f"'{name}' must be {expected}.", param=name, code="invalid_type")


class FeedbackBook:
    """Stores ratings, each checked against the request log: the rater's key must have made the request."""

    def __init__(
        self,
        engine: Engine,
        registry: CollectorRegistry | None = None,
        *,
        wait: float = 2.0,
        every: float = 0.1,
    ) -> None:
        self._engine = engine
        self._wait = wait
        self._every = every
        self._ratings = Counter(
            "lockgate_feedback",
            "Ratings stored (a replaced rating counts again)",
            ["tenant"],
            registry=registry,
        )

    async def rate(self, principal: Principal, rating: Rating) -> Rated:
        deadline = time.monotonic() + self._wait
        owner = await asyncio.to_thread(self._owner, rating.request_id)
        while owner is None and time.monotonic() < deadline:
            await asyncio.sleep(min(self._every, max(0.0, deadline - time.monotonic())))
            owner = await asyncio.to_thread(self._owner, rating.request_id)
        if owner is None or owner[0] != principal.tenant_id:
            # Another tenant's request waits out the same deadline, so that it reads as an unknown id.
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            raise NotFound(
                f"Unknown request id '{rating.request_id}'. Rate a request made with this API key, "
                "by the x-request-id of its answer.",
                param="request_id",
                code="request_not_found",
            )
        if owner[1] != principal.key_id:
            raise PermissionDenied(
                f"Request '{rating.request_id}' was made with another API key; only that key may rate it.",
                param="request_id",
                code="not_your_request",
            )
        rated = await asyncio.to_thread(self._store, principal, rating)
        self._ratings.labels(principal.tenant).inc()
        return rated

    def _owner(self, request_id: str) -> tuple[str | None, str | None] | None:
        """(tenant id, key id) of the logged request, or None while it is not (yet) in the log."""
        with self._engine.connect() as connection:
            row = connection.execute(
                select(request_log.c.tenant_id, request_log.c.key_id).where(request_log.c.id == request_id)
            ).first()
        return (row.tenant_id, row.key_id) if row is not None else None

    def _store(self, principal: Principal, rating: Rating) -> Rated:
        now = datetime.now(UTC)
        values = {
            "tenant_id": principal.tenant_id,
            "key_id": principal.key_id,
            "score": rating.score,
            "label": rating.label,
            "comment": rating.comment,
            "created_at": now,
        }
        for _ in range(3):
            with self._engine.begin() as connection:
                replaced = connection.execute(
                    update(feedback).where(feedback.c.request_id == rating.request_id).values(**values)
                ).rowcount
            if replaced:
                return Rated(rating, now, replaced=True)
            try:
                with self._engine.begin() as connection:
                    connection.execute(feedback.insert().values(request_id=rating.request_id, **values))
            except IntegrityError:
                continue  # a concurrent first rating won the insert: replace it
            return Rated(rating, now, replaced=False)
        raise RuntimeError(f"could not store the rating of {rating.request_id}")
