"""Sticky arm assignment: the share of users on the candidate is the share asked for, a user keeps their
arm within a stage and stays on the candidate when the share rises, and a split the gateway does not
serve as the store records trips the sample-ratio check, which pauses the rollout.

The first tests simulate 10,000 users against ``gateway.assignment`` (pure functions); the others send
real traffic through the server with the openai SDK."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from lockgate.gateway.assignment import bucket, subject
from lockgate.rollouts.controller import CONTROLLER
from lockgate.store.tables import request_log, rollouts
from tests.rollouts.live import (  # noqa: F401 - fixtures
    ROUTE,
    Live,
    canary,
    live_fixture,
    services_config,
    wait_for,
)

USERS = [f"user-{i}" for i in range(10_000)]
SALTS = ["5f0c0a7e4b2d4c1e9a3b6d8f7e6a5b4c", "rollout-two", "00000000000000000000000000000000"]


def on_candidate(salt: str, share: float, users: list[str] = USERS) -> set[str]:
    return {u for u in users if bucket(salt, subject(u, None, "req_unused")) < share}


@pytest.mark.parametrize("salt", SALTS)
@pytest.mark.parametrize("share", [0.01, 0.05, 0.25, 0.5, 0.9])
def test_the_candidates_share_of_10000_users_is_the_share_asked_for(salt: str, share: float) -> None:
    observed = len(on_candidate(salt, share)) / len(USERS)
    standard_error = math.sqrt(share * (1 - share) / len(USERS))
    assert abs(observed - share) <= 3 * standard_error, (observed, share)


@pytest.mark.parametrize("salt", SALTS)
def test_a_rising_share_keeps_every_candidate_on_the_candidate(salt: str) -> None:
    stages = [on_candidate(salt, share) for share in (0.05, 0.25, 0.5, 1.0)]
    for earlier, later in itertools.pairwise(stages):
        assert earlier < later  # strictly more users, and every earlier one still there
    assert stages[-1] == set(USERS)


def test_a_new_rollout_reshuffles_users_independently_of_the_last() -> None:
    first, second = on_candidate(SALTS[0], 0.5), on_candidate(SALTS[1], 0.5)
    both = len(first & second) / len(USERS)
    assert abs(both - 0.25) <= 3 * math.sqrt(0.25 * 0.75 / len(USERS))


def test_the_subject_is_the_user_then_the_session_then_the_request() -> None:
    assert subject("ada", "s-1", "req_1") == "user:ada"
    assert subject(None, "s-1", "req_1") == "session:s-1"
    assert subject(None, None, "req_1") == "request:req_1"
    assert subject("", "", "req_1") == "request:req_1"
    # A user id that looks like a session id is still a different subject.
    assert bucket("salt", subject("s-1", None, "r")) != bucket("salt", subject(None, "s-1", "r"))


# --- through the gateway ---------------------------------------------------------------------------


def arms_of(site: Live, callers: list[str], by: str, calls: int = 3) -> dict[str, set[str]]:
    """caller -> the arms their ``calls`` calls were served by; ``by`` is "user" or "session"."""
    seen: dict[str, set[str]] = {}
    for caller in callers:
        for _ in range(calls):
            answer = site.ask(**{by: caller})
            seen.setdefault(caller, set()).add(answer.headers["x-lockgate-arm"])
    return seen


def test_a_caller_keeps_their_arm_on_every_call_and_keeps_the_candidate_when_the_share_rises(
    live: Live,
) -> None:
    baseline, candidate, rollout = live.roll_out(canary(30, 80))
    users = [f"user-{i}" for i in range(16)]
    sessions = [f"session-{i}" for i in range(16)]
    by_user = arms_of(live, users, "user")
    by_session = arms_of(live, sessions, "session")
    for caller, arms in [*by_user.items(), *by_session.items()]:
        assert len(arms) == 1, f"{caller} was served by {arms}"
    first = {caller: arms.pop() for caller, arms in [*by_user.items(), *by_session.items()]}
    # The arm is the one the bucket predicts, and the answer comes from that arm's release.
    buckets = {u: bucket(rollout.salt, f"user:{u}") for u in users}
    buckets |= {s: bucket(rollout.salt, f"session:{s}") for s in sessions}
    assert {c: arm == "candidate" for c, arm in first.items()} == {c: b < 0.3 for c, b in buckets.items()}
    assert set(first.values()) == {"baseline", "candidate"}
    answer = live.ask(user=next(u for u in users if first[u] == "candidate"))
    assert answer.headers["x-lockgate-release"] == candidate
    answer = live.ask(user=next(u for u in users if first[u] == "baseline"))
    assert answer.headers["x-lockgate-release"] == baseline

    # The next stage (what the controller does when a stage passes): 30% -> 80%.
    with live.services.engine.begin() as connection:
        live.services.rollouts.transition(
            connection,
            CONTROLLER,
            live.services.rollouts.store.get(rollout.id),
            "stage",
            ["test: next stage"],
            stage=1,
            candidate_share=0.8,
            stage_started_at=datetime.now(UTC),
        )
    live.settle()
    again = [*arms_of(live, users, "user").items(), *arms_of(live, sessions, "session").items()]
    assert all(len(arms) == 1 for _, arms in again)
    later = {caller: arms.pop() for caller, arms in again}
    stayed = {c for c, arm in first.items() if arm == "candidate"}
    assert {c for c in stayed if later[c] == "candidate"} == stayed
    assert any(first[c] == "baseline" and later[c] == "candidate" for c in first)  # 80% now: some moved
    assert {c: arm == "candidate" for c, arm in later.items()} == {c: b < 0.8 for c, b in buckets.items()}


def test_without_a_user_or_session_each_call_is_assigned_on_its_own(live: Live) -> None:
    live.roll_out(canary(50))
    arms = {live.ask().headers["x-lockgate-arm"] for _ in range(30)}
    assert arms == {"baseline", "candidate"}


def test_a_gateway_serving_another_share_than_the_store_records_is_paused(live: Live) -> None:
    """The store says 10% while the gateway still serves the 50% it loaded (its reload never came, the way
    a worker cut off from the store would): the controller of the server sees 50/50 traffic against an
    expected 90/10 and pauses the rollout."""
    _, candidate, rollout = live.roll_out(canary(50, interval=1, min_requests=20))
    with live.services.engine.begin() as connection:  # no routes version bump: the gateway keeps 50%
        connection.execute(sa.update(rollouts).where(rollouts.c.id == rollout.id).values(candidate_share=0.1))
    live_rollout = live.running.gateway.routes.rollout(rollout.id)
    assert live_rollout is not None and live_rollout.share == 0.5
    for i in range(260):
        live.ask(f"question {i}")

    def paused() -> str | None:
        found = live.services.rollouts.store.get(rollout.id)
        return found.reason if found.status == "paused" else None

    reason = wait_for(paused, "the rollout paused", timeout=20)
    assert "sample ratio mismatch" in reason
    with live.services.engine.connect() as connection:
        rows = connection.execute(
            sa.select(request_log.c.arm, sa.func.count())
            .where(request_log.c.rollout_id == rollout.id)
            .group_by(request_log.c.arm)
        ).all()
    served = {str(arm): int(n) for arm, n in rows}
    assert served["candidate"] > 260 * 0.3  # the gateway did serve about half to the candidate
    records = live.services.evidence.list(live.admin, "default", release_id=candidate)
    pauses = [r.record for r in records if (r.record.get("rollout") or {}).get("event") == "pause"]
    assert len(pauses) == 1
    assert "sample ratio mismatch" in pauses[0]["reasons"][0]
