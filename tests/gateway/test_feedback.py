"""``POST /v1/feedback``: a user rates an answer their API key got, with the official openai SDK as the
client; the rating is stored once per request, only the key that made the request may give it, and it
travels on into a rollout's quality, a bandit's reward and ``datasets capture``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from lockgate.cli.main import cli
from lockgate.evals.datasets import DatasetSpec
from lockgate.rollouts.controller import RolloutController
from lockgate.security.rbac import Actor
from lockgate.store.tables import feedback
from tests.rollouts.live import ROUTE, Live, canary, live_fixture, services_config  # noqa: F401 - fixtures

SCORERS = [{"type": "contains", "value": "1.0"}]


def rate(site: Live, body: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    return site.client(key).post("/feedback", body=body, cast_to=dict[str, Any])


def ratings(site: Live) -> dict[str, tuple[float, str | None, str | None, str]]:
    """request id -> (score, label, comment, key id) of every stored rating."""
    with site.services.engine.connect() as connection:
        rows = connection.execute(sa.select(feedback)).all()
    return {r.request_id: (r.score, r.label, r.comment, r.key_id) for r in rows}


def chat(site: Live, question: str = "hello") -> str:
    """A plain chat call with the site's key; its request id."""
    answer = site.client().chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": question}]
    )
    return answer.headers["x-request-id"]


def key_id(site: Live, key: str) -> str:
    return site.running.gateway.keyring.authenticate(f"Bearer {key}").key_id


def test_the_key_that_made_a_request_rates_it_and_a_second_rating_replaces_the_first(live: Live) -> None:
    request_id = chat(live, "is lockgate fast?")
    # Sent at once: the request log may not have written the request yet; the gateway waits for it.
    first = rate(live, {"request_id": request_id, "thumbs": "up", "label": "helpful", "comment": "spot on"})
    assert first["object"] == "feedback"
    assert (first["request_id"], first["score"], first["replaced"]) == (request_id, 1.0, False)
    assert ratings(live) == {request_id: (1.0, "helpful", "spot on", key_id(live, live.key))}

    second = rate(live, {"request_id": request_id, "score": 0.25})
    assert (second["score"], second["label"], second["replaced"]) == (0.25, None, True)
    assert ratings(live) == {request_id: (0.25, None, None, key_id(live, live.key))}

    down = rate(live, {"request_id": request_id, "thumbs": "down"})
    assert (down["score"], down["replaced"]) == (0.0, True)
    assert len(ratings(live)) == 1


def test_only_the_key_that_made_the_request_may_rate_it(live: Live, admin: Actor, admin_token: str) -> None:
    request_id = chat(live)
    colleague = live.services.keys.create(admin, "default", name="colleague").secret
    live.services.tenants.create(admin, "acme")
    acme_admin = live.services.tokens.authenticate(admin_token)  # the creator administers the new tenant
    stranger = live.services.keys.create(acme_admin, "acme", name="stranger").secret
    live.settle()

    with pytest.raises(openai.PermissionDeniedError) as refused:
        rate(live, {"request_id": request_id, "thumbs": "down"}, key=colleague)
    assert (refused.value.code, refused.value.param) == ("not_your_request", "request_id")
    assert "another API key" in refused.value.message

    # Another tenant learns nothing: its answer is the answer for an id that does not exist.
    with pytest.raises(openai.NotFoundError) as hidden:
        rate(live, {"request_id": request_id, "thumbs": "down"}, key=stranger)
    with pytest.raises(openai.NotFoundError) as unknown:
        rate(live, {"request_id": "req_" + "0" * 32, "thumbs": "down"}, key=stranger)
    assert (hidden.value.code, hidden.value.param) == ("request_not_found", "request_id")
    assert hidden.value.message == unknown.value.message.replace("0" * 32, request_id[4:])

    with pytest.raises(openai.AuthenticationError):
        rate(live, {"request_id": request_id, "thumbs": "up"}, key="lg-not-a-key")
    assert ratings(live) == {}


def test_an_unknown_request_id_is_a_404(live: Live) -> None:
    with pytest.raises(openai.NotFoundError) as unknown:
        rate(live, {"request_id": "req_" + "ab" * 16, "score": 1})
    assert unknown.value.code == "request_not_found"
    assert unknown.value.response.headers["x-request-id"].startswith("req_")


def test_bad_ratings_are_400s_that_name_the_field(live: Live) -> None:
    rid = chat(live)
    bad: list[tuple[dict[str, Any], str, str]] = [
        ({}, "request_id", "missing_required_parameter"),
        ({"request_id": 7, "score": 1}, "request_id", "invalid_type"),
        ({"request_id": "chatcmpl-123", "score": 1}, "request_id", "invalid_value"),
        ({"request_id": rid}, "score", "missing_required_parameter"),
        ({"request_id": rid, "score": 1.5}, "score", "invalid_value"),
        ({"request_id": rid, "score": -0.1}, "score", "invalid_value"),
        ({"request_id": rid, "score": "high"}, "score", "invalid_type"),
        ({"request_id": rid, "score": True}, "score", "invalid_type"),
        ({"request_id": rid, "thumbs": "sideways"}, "thumbs", "invalid_value"),
        ({"request_id": rid, "thumbs": "up", "score": 1}, "thumbs", "invalid_value"),
        ({"request_id": rid, "thumbs": "up", "label": "x" * 101}, "label", "invalid_value"),
        ({"request_id": rid, "thumbs": "up", "label": ""}, "label", "invalid_value"),
        ({"request_id": rid, "thumbs": "up", "comment": "x" * 2001}, "comment", "invalid_value"),
        ({"request_id": rid, "thumbs": "up", "comment": ["no"]}, "comment", "invalid_type"),
        ({"request_id": rid, "thumbs": "up", "stars": 5}, "stars", "unknown_parameter"),
    ]
    for body, field, code in bad:
        with pytest.raises(openai.BadRequestError) as refused:
            rate(live, body)
        error = refused.value
        assert (error.param, error.code, error.type) == (field, code, "invalid_request_error"), body
        assert "Traceback" not in error.response.text
    # At the limits, a rating is fine.
    rate(live, {"request_id": rid, "thumbs": "up", "label": "x" * 100, "comment": "y" * 2000})

    raw = httpx.post(
        f"{live.running.base_url}/feedback",
        content=b"{not json",
        headers={"authorization": f"Bearer {live.key}", "content-type": "application/json"},
    )
    assert raw.status_code == 400
    assert raw.json()["error"]["code"] == "invalid_json"
    assert ratings(live)[rid][:2] == (1.0, "x" * 100)


def test_datasets_capture_carries_the_ratings(
    live: Live, admin: Actor, admin_token: str, tmp_path: Path
) -> None:
    baseline = live.release("1.0.0")
    live.ship(baseline)
    live.settle()
    ids = [live.ask(f"question {i}").headers["x-request-id"] for i in range(3)]
    rate(live, {"request_id": ids[0], "thumbs": "up", "label": "helpful"})
    rate(live, {"request_id": ids[1], "score": 0.2})
    since = datetime.now(UTC) - timedelta(hours=1)

    everything = live.services.datasets.capture(
        admin, "default", DatasetSpec(name="all-captured", scorers=SCORERS), route=ROUTE, since=since
    )
    labels = {case.id.removeprefix("captured-"): case.labels for case in everything.cases}
    assert labels == {
        ids[0]: {"feedback_score": 1.0, "feedback_label": "helpful"},
        ids[1]: {"feedback_score": 0.2},
        ids[2]: {},
    }

    rated = live.services.datasets.capture(
        admin,
        "default",
        DatasetSpec(name="rated", scorers=SCORERS),
        route=ROUTE,
        since=since,
        only_rated=True,
    )
    assert sorted(c.id for c in rated.cases) == sorted(f"captured-{i}" for i in ids[:2])

    # Over REST, the answers users liked: fit to be expected answers.
    answer = httpx.post(
        f"{live.running.url}/api/v1/tenants/default/datasets/capture",
        headers={"authorization": f"Bearer {admin_token}"},
        json={
            "spec": {"name": "liked", "scorers": SCORERS},
            "route": ROUTE,
            "since_hours": 1,
            "min_feedback": 1,
        },
    )
    assert answer.status_code == 201, answer.text
    liked = live.services.datasets.find("default", "liked")
    assert [(c.id, c.expected) for c in liked.cases] == [(f"captured-{ids[0]}", "echo: 1.0.0: question 0")]

    # From the CLI, the same filter as a flag.
    spec_file = tmp_path / "liked.yaml"
    spec_file.write_text("name: liked-cli\nscorers: [{type: contains, value: '1.0'}]\n")
    env = {"LOCKGATE_URL": live.running.url, "LOCKGATE_TOKEN": admin_token}
    args = ["datasets", "capture", str(spec_file), "--route", ROUTE, "--since", "1h", "--min-feedback", "1"]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    assert "liked-cli@1  1 cases captured" in result.output
    assert [c.id for c in live.services.datasets.find("default", "liked-cli").cases] == [f"captured-{ids[0]}"]

    too_high = httpx.post(
        f"{live.running.url}/api/v1/tenants/default/datasets/capture",
        headers={"authorization": f"Bearer {admin_token}"},
        json={"spec": {"name": "x", "scorers": SCORERS}, "route": ROUTE, "min_feedback": 2},
    )
    assert too_high.status_code == 422
    assert "min_feedback" in too_high.text


def test_ratings_count_in_the_quality_and_the_feedback_reward_of_the_arm_that_answered(live: Live) -> None:
    _, candidate, rollout = live.roll_out(canary(50))
    answers = [live.ask(user=f"user-{i}") for i in range(16)]
    arms = {a.headers["x-request-id"]: a.headers["x-lockgate-arm"] for a in answers}
    assert set(arms.values()) == {"baseline", "candidate"}
    for request_id, arm in arms.items():
        rate(live, {"request_id": request_id, "thumbs": "up" if arm == "candidate" else "down"})
    per_arm = {arm: list(arms.values()).count(arm) for arm in ("baseline", "candidate")}

    store = live.services.rollouts.store
    measured = store.measure(store.get(rollout.id), ["baseline", "candidate"])
    assert (measured["baseline"].quality, measured["baseline"].quality_samples) == (0.0, per_arm["baseline"])
    assert (measured["candidate"].quality, measured["candidate"].quality_samples) == (
        1.0,
        per_arm["candidate"],
    )
    assert store.rewards(rollout, "candidate", "feedback") == (per_arm["candidate"], 0.0)
    assert store.rewards(rollout, "baseline", "feedback") == (0.0, per_arm["baseline"])

    RolloutController(live.services.rollouts).analyse(store.get(rollout.id))
    [latest, *_] = store.analyses(rollout.id)
    assert latest.metrics["arms"]["candidate"]["quality"] == 1.0
    assert latest.metrics["arms"]["baseline"]["quality"] == 0.0
    assert candidate == rollout.candidate_release_id
