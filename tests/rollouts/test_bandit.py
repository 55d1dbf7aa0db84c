"""Bandit rollouts on live traffic: the better arm gets the traffic, then the bandit decides.

``lockgate serve`` on two stub upstreams (see ``test_simulation``), one arm clearly better than the
other by the bandit's reward: with reward ``success`` the current release's upstream fails 30% of its
calls and the candidate's none; with reward ``feedback`` both answer, and the callers rate what they
got (``POST /v1/feedback``), thumbs up for 90% of the candidate's answers and 40% of the baseline's.
Either way the bandit must move at least 80% of the calls to the candidate well within its horizon,
and at the horizon promote it.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from tests.rollouts.test_simulation import (  # noqa: F401 - the fixtures
    Answer,
    Site,
    Traffic,
    bearer,
    events,
    served_only_by,
    site,
    upstreams,
    wait_for,
)

HORIZON = 15.0


def bandit(reward: str) -> dict[str, Any]:
    return {
        "strategy": "bandit",
        "bandit": {"reward": reward, "burn_in": 30, "min_share": 0.05, "horizon": HORIZON, "decide_at": 0.95},
        "analysis": {"interval": 1, "min_requests": 30},
    }


@dataclass
class Outcome:
    share: float  # the candidate's share once it passed 80%
    window: list[str]  # the arms that served the calls sent after that, while the bandit ran
    ended: dict[str, Any]  # the rollout once decided

    @property
    def on_candidate(self) -> float:
        return sum(1 for arm in self.window if arm == "candidate") / len(self.window)


def run_bandit(at: Site, route: str, traffic: Traffic) -> Outcome:
    """Send ``traffic`` until the bandit leans to the candidate, then until it decides."""
    assert at.rollout(route)["candidate_share"] == 0.5  # a bandit starts even

    def leaning() -> float | None:
        share = float(at.rollout(route)["candidate_share"])
        return share if share >= 0.8 else None

    with traffic:
        share = wait_for(leaning, HORIZON - 5, "the bandit gave the candidate 80% of the traffic")
        moved = time.monotonic()
        # What the callers got from then on while the bandit still ran: the arms named in the answers
        # (the header goes when the rollout ends).
        wait_for(lambda: len(arms(traffic.since(moved))) >= 200, HORIZON, "200 calls after the move")
        window = arms(traffic.since(moved))
        ended = at.settled(route, HORIZON + 20)
    return Outcome(share, window, ended)


def arms(answers: list[Answer]) -> list[str]:
    return [a.arm for a in answers if a.arm is not None]


def test_on_success_the_bandit_sends_most_calls_to_the_arm_that_fails_less(site: Site) -> None:  # noqa: F811
    site.upstreams.base.script(behaviour={"error_rate": 0.3, "seed": 1})
    baseline, candidate = site.roll_out("bandit", bandit("success"))
    outcome = run_bandit(site, "bandit", Traffic(site.url, site.key, "bandit"))
    assert outcome.on_candidate >= 0.8, f"{outcome.on_candidate:.0%} of {len(outcome.window)} calls"
    assert outcome.share <= 0.95  # min_share keeps the baseline in play until the end

    assert outcome.ended["status"] == "promoted", outcome.ended["reason"]
    assert "P(candidate better)" in outcome.ended["reason"]
    assert site.serving("bandit") == candidate
    site.upstreams.base.script(behaviour=None)
    served_only_by(site, "bandit", candidate)

    records = site.rollout_evidence(candidate)
    assert [e for e in events(records) if e != "analysis"][:2] == ["start", "share"]
    assert events(records)[-1] == "promote"
    shares = [r for r in records if r["rollout"]["event"] == "share"]
    assert "Thompson sampling on success" in shares[0]["reasons"][0]
    assert records[-1]["rollout"]["baseline_release_id"] == baseline


class Raters:
    """The callers rating what they got: thumbs up at their arm's rate, sent from a pool of threads."""

    def __init__(self, at: Site, up: dict[str, float]) -> None:
        self.up = up
        self.client = httpx.Client(base_url=at.url, headers=bearer(at.key), timeout=30)
        self.pool = ThreadPoolExecutor(16)
        self.random = random.Random(7)
        self.lock = threading.Lock()
        self.rated: Counter[str] = Counter()
        self.refused: list[str] = []

    def __call__(self, answer: Answer) -> None:
        if answer.arm is None or answer.request_id is None:
            return
        with self.lock:
            thumbs = "up" if self.random.random() < self.up[answer.arm] else "down"
        self.pool.submit(self.rate, answer.request_id, answer.arm, thumbs)

    def rate(self, request_id: str, arm: str, thumbs: str) -> None:
        answer = self.client.post("/v1/feedback", json={"request_id": request_id, "thumbs": thumbs})
        if answer.is_success:
            self.rated[arm] += 1
        else:
            self.refused.append(f"{answer.status_code} {answer.text}")

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()


def test_on_feedback_the_bandit_sends_most_calls_to_the_arm_users_like(site: Site) -> None:  # noqa: F811
    _, candidate = site.roll_out("liked", bandit("feedback"))
    raters = Raters(site, {"candidate": 0.9, "baseline": 0.4})
    try:
        outcome = run_bandit(site, "liked", Traffic(site.url, site.key, "liked", then=raters))
    finally:
        raters.close()
    assert raters.refused == []
    assert raters.rated["baseline"] > 0 and raters.rated["candidate"] > 0
    assert outcome.on_candidate >= 0.8, f"{outcome.on_candidate:.0%} of {len(outcome.window)} calls"

    assert outcome.ended["status"] == "promoted", outcome.ended["reason"]
    assert "on feedback" in outcome.ended["reason"]
    assert site.serving("liked") == candidate
    records = site.rollout_evidence(candidate)
    shares = [r for r in records if r["rollout"]["event"] == "share"]
    assert shares and "Thompson sampling on feedback" in shares[0]["reasons"][0]
