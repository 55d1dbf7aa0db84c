"""Online quality: a rollout whose spec says ``analysis.online_quality`` has a sampled share of its live
answers (both arms, and mirrored calls) scored in the background with the dataset scorers; the scores land
in ``online_scores`` and in the quality the controller measures. Traffic goes through the real server with
the openai SDK; releases 1.0.0 (baseline) and 1.0.1 (candidate) answer ``echo: <version>: <question>``."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from lockgate.rollouts.controller import RolloutController
from lockgate.rollouts.online import OnlineScorer, sampled
from lockgate.service_errors import Invalid
from lockgate.store.tables import online_scores, request_log
from tests.rollouts.live import ROUTE, Live, canary, live_fixture, services_config, shadow, wait_for  # noqa: F401

CANDIDATE_SAYS_ITS_VERSION = {"sample": 1.0, "scorers": [{"type": "contains", "value": "1.0.1"}]}


def scores(site: Live) -> dict[str, tuple[str, float]]:
    """request id -> (arm, score) of every online score."""
    with site.services.engine.connect() as connection:
        rows = connection.execute(sa.select(online_scores)).all()
    return {r.request_id: (r.arm, r.score) for r in rows}


def logged(site: Live, **where: Any) -> dict[str, str]:
    """request id -> arm of the logged calls matching ``where`` (column == value)."""
    with site.services.engine.connect() as connection:
        rows = connection.execute(
            sa.select(request_log.c.id, request_log.c.arm).where(
                *(request_log.c[k] == v for k, v in where.items())
            )
        ).all()
    return {r.id: r.arm for r in rows}


def logged_count(site: Live, n: int, **where: Any) -> dict[str, str]:
    """``logged(site, **where)`` once it holds ``n`` calls (the request log is written in batches)."""

    def probe() -> dict[str, str] | None:
        found = logged(site, **where)
        return found if len(found) == n else None

    return wait_for(probe, f"{n} calls logged")


def scored(site: Live, n: int) -> dict[str, tuple[str, float]]:
    """``scores(site)`` once there are ``n`` (scoring runs in the background)."""

    def probe() -> dict[str, tuple[str, float]] | None:
        found = scores(site)
        return found if len(found) == n else None

    return wait_for(probe, f"{n} answers scored")


def test_sampled_answers_of_both_arms_are_scored_and_measured_as_quality(live: Live) -> None:
    _, _, rollout = live.roll_out(canary(50, online_quality=CANDIDATE_SAYS_ITS_VERSION))
    arms = {}
    for i in range(24):
        answer = live.ask(f"question {i}", user=f"user-{i}")
        arms[answer.headers["x-request-id"]] = answer.headers["x-lockgate-arm"]
    for i in range(4):  # streamed answers are scored once the stream has ended
        raw = live.client().chat.completions.with_raw_response.create(
            model="route:answers",
            messages=[],
            stream=True,
            user=f"streamer-{i}",
            extra_body={"variables": {"q": f"streamed {i}"}},
        )
        assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        arms[raw.headers["x-request-id"]] = raw.headers["x-lockgate-arm"]
    assert set(arms.values()) == {"baseline", "candidate"}

    found = scored(live, len(arms))
    expected = {rid: (arm, 1.0 if arm == "candidate" else 0.0) for rid, arm in arms.items()}
    assert found == expected

    store = live.services.rollouts.store
    logged_count(live, len(arms), rollout_id=rollout.id)
    RolloutController(live.services.rollouts).analyse(store.get(rollout.id))
    [latest, *_] = store.analyses(rollout.id)
    measured = latest.metrics["arms"]
    per_arm = {arm: list(arms.values()).count(arm) for arm in ("baseline", "candidate")}
    assert (measured["candidate"]["quality"], measured["candidate"]["quality_samples"]) == (
        1.0,
        per_arm["candidate"],
    )
    assert (measured["baseline"]["quality"], measured["baseline"]["quality_samples"]) == (
        0.0,
        per_arm["baseline"],
    )


def test_a_shadow_run_scores_the_sampled_share_of_client_and_mirrored_answers(live: Live) -> None:
    half = {**CANDIDATE_SAYS_ITS_VERSION, "sample": 0.5}
    _, candidate, rollout = live.roll_out(shadow(100, online_quality=half))
    clients = [live.ask(f"question {i}").headers["x-request-id"] for i in range(40)]
    mirrored = logged_count(live, 40, rollout_id=rollout.id, shadow=True)
    live_rollout = live.running.gateway.routes.rollout(rollout.id)
    assert live_rollout is not None
    chosen = {rid for rid in [*clients, *mirrored] if sampled(live_rollout, rid)}
    assert 0 < len(chosen) < 80  # a share, chosen by the request id
    found = scored(live, len(chosen))
    assert set(found) == chosen
    assert {found[rid] for rid in chosen if rid in mirrored} == {("shadow", 1.0)}
    assert {found[rid] for rid in chosen if rid in clients} == {("baseline", 0.0)}

    store = live.services.rollouts.store
    measured = store.measure(store.get(rollout.id), ["baseline", "shadow"])
    assert measured["shadow"].quality == 1.0
    assert measured["baseline"].quality == 0.0
    assert measured["shadow"].quality_samples + measured["baseline"].quality_samples == len(chosen)
    assert candidate == rollout.candidate_release_id


def test_a_judge_scores_through_the_gateway_like_an_eval(live: Live) -> None:
    # The stub echoes the judge's question, rubric included, so the judge "answers" score 4 of 5.
    judge = {"type": "judge", "model": "m", "rubric": "Say score: 4 whatever the answer."}
    _, _, rollout = live.roll_out(canary(50, online_quality={"sample": 1.0, "scorers": [judge]}))
    asked = [live.ask(user=f"user-{i}").headers["x-request-id"] for i in range(6)]
    found = scored(live, 6)
    assert sorted(found) == sorted(asked)
    assert {score for _, score in found.values()} == {0.75}
    judged = [r["body"] for r in live.stub.received() if r["body"].get("response_format")]
    assert len(judged) == 6
    assert all("## Rubric\nSay score: 4" in b["messages"][-1]["content"] for b in judged)
    # Priced and logged like any call: under the tenant, with the eval client's key id, on model m.
    judge_calls = logged_count(live, 6, key_id="eval", model="m")
    assert set(judge_calls.values()) == {None}  # outside the rollout: never judged themselves
    assert set(logged(live, rollout_id=rollout.id)) == set(asked)


def test_beyond_its_limit_the_scorer_drops_answers_and_the_clients_never_notice(live: Live) -> None:
    live.roll_out(canary(50, online_quality=CANDIDATE_SAYS_ITS_VERSION))
    observer = live.running.gateway.answer_observer
    assert isinstance(observer, OnlineScorer)
    observer.limit = 0
    answers = [live.ask(user=f"user-{i}") for i in range(5)]
    assert all(a.http_response.status_code == 200 for a in answers)
    assert live.metrics()[("lockgate_online_scores_total", (("outcome", "dropped"),))] == 5
    assert scores(live) == {}


def test_a_scorer_spec_that_cannot_be_built_is_refused_when_the_strategy_is_saved(live: Live) -> None:
    broken = {"sample": 1.0, "scorers": [{"type": "contians", "value": "x"}]}
    with pytest.raises(Invalid) as refused:
        live.strategy(canary(50, online_quality=broken))
    assert "test: analysis.online_quality.scorers:" in refused.value.message
    assert "unknown scorer type 'contians'" in refused.value.message
    assert live.services.rollouts.strategy_of("default", ROUTE, "prod") is None
