"""Shadow rollouts through the real server: clients get exactly what they got before, while the mirrored
calls reach the upstream rendered by the candidate, are logged as shadow traffic and are priced apart from
the tenant's spend.

What "exactly" means here: the stub upstream names each completion ``chatcmpl-stub-<n>`` after a counter
of all the calls it received (mirrored ones included) and stamps it with the current second
(``created``). Those two values are the upstream's, unique per call; the comparison masks them in the raw
bytes and nothing else, so key order, every other value, the status and the release headers must be
identical.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa

from lockgate.store.tables import request_log
from tests.rollouts.live import ROUTE, Live, live_fixture, services_config, shadow, wait_for  # noqa: F401

UPSTREAM_UNIQUE = (re.compile(rb'"id":"chatcmpl-stub-\d+"'), re.compile(rb'"created":\d+'))
RELEASE_HEADERS = ("x-lockgate-release", "x-lockgate-prompt", "x-lockgate-model")


def masked(body: bytes) -> bytes:
    for pattern in UPSTREAM_UNIQUE:
        body = pattern.sub(lambda m: m.group(0).split(b":")[0] + b":<upstream>", body)
    return body


def seen_by_client(site: Live, question: str) -> dict[str, Any]:
    """What a client sees of one plain and one streamed call: status, release headers, masked bytes."""
    plain = site.client().chat.completions.with_raw_response.create(
        model=f"route:{ROUTE}", messages=[], user="ada", extra_body={"variables": {"q": question}}
    )
    with site.client().chat.completions.with_streaming_response.create(
        model=f"route:{ROUTE}",
        messages=[],
        user="ada",
        stream=True,
        extra_body={"variables": {"q": question}},
    ) as streamed:
        stream_bytes = b"".join(streamed.iter_bytes())
        stream_seen = (
            streamed.http_response.status_code,
            {h: streamed.headers.get(h) for h in RELEASE_HEADERS},
        )
    return {
        "plain": (
            plain.http_response.status_code,
            {h: plain.headers.get(h) for h in (*RELEASE_HEADERS, "x-lockgate-arm")},
            masked(plain.http_response.content),
        ),
        "stream": (*stream_seen, masked(stream_bytes)),
        "arm header": [plain.headers.get("x-lockgate-arm"), streamed.headers.get("x-lockgate-arm")],
    }


def calls(site: Live, **where: Any) -> list[Any]:
    with site.services.engine.connect() as connection:
        return list(
            connection.execute(
                sa.select(request_log).where(*(request_log.c[k] == v for k, v in where.items()))
            ).all()
        )


def test_clients_get_the_same_answers_with_and_without_shadowing(live: Live) -> None:
    baseline, candidate = live.release("1.0.0"), live.release("1.0.1")
    live.ship(baseline)
    live.settle()
    before = seen_by_client(live, "what does shadowing change?")
    assert before["plain"][0] == 200 and before["plain"][1]["x-lockgate-release"] == baseline

    live.strategy(shadow(100))
    live.ship(candidate)
    live.settle()
    rollout = live.rollout()
    assert (rollout.strategy, rollout.candidate_share) == ("shadow", 1.0)
    live.stub.reset()
    after = seen_by_client(live, "what does shadowing change?")
    assert after == before
    assert after["arm header"] == [None, None]  # a shadow run never tells the client

    # Both calls were mirrored, non-streaming, rendered by the candidate's prompt.
    def upstream_bodies() -> list[dict[str, Any]] | None:
        bodies = [r["body"] for r in live.stub.received()]
        return bodies if len(bodies) == 4 else None

    bodies = wait_for(upstream_bodies, "two client calls and two mirrored calls upstream")
    rendered = [(b["messages"], bool(b.get("stream"))) for b in bodies]
    question = "what does shadowing change?"
    mirrored = ([{"role": "user", "content": f"1.0.1: {question}"}], False)
    assert sorted(map(repr, rendered)) == sorted(
        map(
            repr,
            [
                ([{"role": "user", "content": f"1.0.0: {question}"}], False),
                ([{"role": "user", "content": f"1.0.0: {question}"}], True),
                mirrored,
                mirrored,
            ],
        )
    )
    assert all("stream_options" not in b for b in bodies if b["messages"][0]["content"].startswith("1.0.1"))


def test_mirrored_calls_are_logged_as_shadow_traffic_and_priced_apart(live: Live) -> None:
    baseline, candidate, rollout = live.roll_out(shadow(100))
    for i in range(6):
        live.ask(f"question {i}", user=f"user-{i}")

    def mirrored() -> list[Any] | None:
        found = calls(live, rollout_id=rollout.id, shadow=True)
        return found if len(found) == 6 else None

    shadows = wait_for(mirrored, "six mirrored calls logged")
    assert {(c.arm, c.release_id, c.status_code) for c in shadows} == {("shadow", candidate, 200)}
    assert all(c.id.startswith("shd_") for c in shadows)
    clients = calls(live, rollout_id=rollout.id, shadow=False)
    assert {(c.arm, c.release_id) for c in clients} == {("baseline", baseline)}
    assert len(clients) == 6

    metrics = live.metrics()
    labels = (("model", "m"), ("tenant", "default"))
    spent = sum(c.cost_usd for c in calls(live, tenant_id=live.tenant_id, shadow=False))
    experiment = sum(c.cost_usd for c in shadows)
    assert experiment > 0
    assert metrics[("lockgate_cost_usd_total", labels)] == pytest.approx(spent)
    assert metrics[("lockgate_shadow_cost_usd_total", labels)] == pytest.approx(experiment)
    assert spent == pytest.approx(sum(c.cost_usd for c in clients))  # nothing else spent
