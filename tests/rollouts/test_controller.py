"""The controller's decisions on recorded traffic: each test writes the request log a gateway would write
for both arms, runs one analysis at a time, and checks what a deployer would see happen."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from lockgate.config.loader import LoadedConfig
from lockgate.gates.evidence_format import verify_bundle
from lockgate.ops.metrics import GatewayMetrics
from lockgate.rollouts.controller import RolloutController
from lockgate.rollouts.spec import RolloutSpec, parse_strategy
from lockgate.rollouts.store import Rollout
from lockgate.security.rbac import Actor
from lockgate.service_errors import Conflict, Forbidden, Invalid
from lockgate.services import Services
from lockgate.store.tables import request_log, rollouts
from tests.control.test_environments import Crew, crew  # noqa: F401 - the fixture
from tests.control.test_golden_path import ROUTE, gates_optional


@pytest.fixture
def config() -> LoadedConfig:
    return gates_optional()


FAST: dict[str, Any] = {
    "strategy": "canary",
    "canary": {
        "stages": [
            {"weight": 10, "min_duration": 0, "min_requests": 30},
            {"weight": 50, "min_duration": 0, "min_requests": 30},
            {"weight": 100},
        ]
    },
    "analysis": {"interval": 1, "min_requests": 30},
}


@dataclass
class World:
    services: Services
    crew: Crew
    admin: Actor
    first: str
    second: str

    def strategy(self, raw: dict[str, Any]) -> RolloutSpec:
        spec = parse_strategy(raw, "test")
        self.services.rollouts.set_strategy(self.admin, "default", ROUTE, "prod", spec)
        return spec

    def start(self) -> Rollout:
        self.crew.ship(self.second)
        rollout = self.services.rollouts.store.latest(self.tenant_id(), ROUTE, "prod")
        assert rollout is not None and rollout.status == "running"
        return rollout

    def tenant_id(self) -> str:
        return self.services.tenants.get("default").id

    def traffic(
        self,
        rollout: Rollout,
        arm: str,
        n: int,
        *,
        errors: float = 0.0,
        latency: float = 100.0,
        seed: int = 0,
    ) -> None:
        """``n`` requests of ``arm`` as the gateway's request log records them."""
        rng = random.Random(seed)
        rows = []
        for _ in range(n):
            failed = rng.random() < errors
            rows.append(
                {
                    "id": f"req_{uuid.uuid4().hex}",
                    "created_at": datetime.now(UTC),
                    "tenant_id": self.tenant_id(),
                    "endpoint": "chat.completions",
                    "stream": False,
                    "status_code": 502 if failed else 200,
                    "error_type": "UpstreamBadGateway" if failed else None,
                    "latency_ms": latency * rng.uniform(0.8, 1.2),
                    "input_tokens": 10,
                    "output_tokens": 10,
                    "usage_estimated": False,
                    "cost_usd": 0.001,
                    "attempts": 1,
                    "fallback": False,
                    "route": ROUTE,
                    "release_id": rollout.candidate_release_id
                    if arm in ("candidate", "shadow")
                    else rollout.baseline_release_id,
                    "rollout_id": rollout.id,
                    "arm": arm,
                    "shadow": arm == "shadow",
                }
            )
        with self.services.engine.begin() as connection:
            connection.execute(request_log.insert(), rows)

    def reload(self, rollout: Rollout) -> Rollout:
        return self.services.rollouts.store.get(rollout.id)


@pytest.fixture
def world(services: Services, crew: Crew, admin: Actor) -> World:  # noqa: F811
    first, second = crew.release(0), crew.release(1)
    crew.ship(first)
    return World(services, crew, admin, first, second)


@pytest.fixture
def controller(services: Services) -> RolloutController:
    return RolloutController(services.rollouts, metrics=GatewayMetrics())


def analyses(controller: RolloutController, outcome: str) -> float | None:
    """What ``lockgate_rollout_analyses_total`` says of the route's prod rollouts with ``outcome``."""
    labels = {"tenant": "default", "route": ROUTE, "environment": "prod", "outcome": outcome}
    assert controller.metrics is not None
    return controller.metrics.registry.get_sample_value("lockgate_rollout_analyses_total", labels)


def test_promoting_into_an_environment_with_a_strategy_starts_a_rollout(world: World) -> None:
    world.strategy(FAST)
    rollout = world.start()
    assert world.crew.serving("prod") == world.first  # the pointer waits for the rollout
    assert (rollout.candidate_release_id, rollout.baseline_release_id) == (world.second, world.first)
    assert rollout.candidate_share == pytest.approx(0.10)
    with pytest.raises(Conflict, match="already has a rollout under way"):
        world.services.rollouts.start(world.crew.dan, "default", ROUTE, "prod")


def test_a_healthy_candidate_walks_the_stages_and_becomes_the_release(
    world: World, controller: RolloutController
) -> None:
    world.strategy(FAST)
    rollout = world.start()
    world.traffic(rollout, "baseline", 60)
    world.traffic(rollout, "candidate", 40)
    assert controller.analyse(rollout) == "pass"
    rollout = world.reload(rollout)
    assert (rollout.stage, rollout.candidate_share, rollout.status) == (1, 0.5, "running")
    world.traffic(rollout, "baseline", 40, seed=1)
    world.traffic(rollout, "candidate", 40, seed=2)
    assert controller.analyse(rollout) == "pass"
    rollout = world.reload(rollout)
    assert rollout.status == "promoted"
    assert world.crew.serving("prod") == world.second
    records = world.services.evidence.list(world.admin, "default", release_id=world.second)
    events = [r.record["rollout"]["event"] for r in records if r.record.get("action") == "rollout"]
    assert events == ["start", "analysis", "stage", "analysis", "promote"]
    for record in records:
        bundle = world.services.evidence.export(world.admin, "default", record.id)
        assert verify_bundle(bundle, world.services.audit.signer.public_key).ok


def test_a_candidate_with_three_times_the_errors_is_rolled_back_in_its_first_stage(
    world: World, controller: RolloutController
) -> None:
    world.strategy(FAST)
    rollout = world.start()
    world.traffic(rollout, "baseline", 200, errors=0.02)
    world.traffic(rollout, "candidate", 60, errors=0.10, seed=3)
    assert controller.analyse(rollout) == "fail"
    rollout = world.reload(rollout)
    assert (rollout.status, rollout.candidate_share, rollout.stage) == ("rolled_back", 0.0, 0)
    assert "error rate" in (rollout.reason or "")
    assert world.crew.serving("prod") == world.first
    assert analyses(controller, "fail") == 1  # what an operator alerts on


def test_twice_the_p95_latency_is_rolled_back(world: World, controller: RolloutController) -> None:
    world.strategy(FAST)
    rollout = world.start()
    world.traffic(rollout, "baseline", 100, latency=100)
    world.traffic(rollout, "candidate", 40, latency=200)
    assert controller.analyse(rollout) == "fail"
    assert "p95 latency" in (world.reload(rollout).reason or "")


def test_too_little_traffic_is_inconclusive_and_holds_the_stage(
    world: World, controller: RolloutController
) -> None:
    world.strategy(FAST)
    rollout = world.start()
    world.traffic(rollout, "baseline", 100)
    world.traffic(rollout, "candidate", 5)
    for _ in range(3):
        assert controller.analyse(rollout) == "inconclusive"
    assert analyses(controller, "inconclusive") == 3
    rollout = world.reload(rollout)
    assert (rollout.status, rollout.stage) == ("running", 0)
    assert rollout.candidate_share == pytest.approx(0.10)
    assert world.crew.serving("prod") == world.first


def test_a_failure_limit_tolerates_that_many_failed_analyses(
    world: World, controller: RolloutController
) -> None:
    world.strategy({**FAST, "analysis": {"interval": 1, "min_requests": 30, "failure_limit": 1}})
    rollout = world.start()
    world.traffic(rollout, "baseline", 100, latency=100)
    world.traffic(rollout, "candidate", 40, latency=200)
    assert controller.analyse(rollout) == "inconclusive"
    assert controller.analyse(world.reload(rollout)) == "fail"


def test_a_skewed_split_pauses_the_rollout(world: World, controller: RolloutController) -> None:
    world.strategy(FAST)
    rollout = world.start()
    world.traffic(rollout, "baseline", 300)
    world.traffic(rollout, "candidate", 300)  # 50% where 10% was asked for
    assert controller.analyse(rollout) == "paused"
    rollout = world.reload(rollout)
    assert rollout.status == "paused"
    assert "sample ratio mismatch" in (rollout.reason or "")
    assert (analyses(controller, "paused"), analyses(controller, "fail")) == (1, None)


def ab(metric: str, **settings: Any) -> dict[str, Any]:
    """An A/B test on ``metric`` with no minimum duration, decided once each arm has 200 calls."""
    return {
        "strategy": "ab",
        "ab": {"share": 50, "min_duration": 0, "min_requests": 200, "metric": metric, **settings},
        "analysis": {"interval": 1, "min_requests": 30},
    }


def test_an_ab_test_waits_for_its_traffic_then_promotes_a_significantly_better_candidate(
    world: World, controller: RolloutController
) -> None:
    world.strategy(ab("success"))
    rollout = world.start()
    assert rollout.candidate_share == pytest.approx(0.5)
    world.traffic(rollout, "baseline", 100, errors=0.08, seed=1)
    world.traffic(rollout, "candidate", 100, errors=0.01, seed=2)
    assert controller.analyse(rollout) == "pass"
    assert world.reload(rollout).status == "running"  # 100 calls per arm of the 200 it needs
    world.traffic(rollout, "baseline", 300, errors=0.08, seed=3)
    world.traffic(rollout, "candidate", 300, errors=0.01, seed=4)
    controller.analyse(world.reload(rollout))
    ended = world.reload(rollout)
    assert ended.status == "promoted", ended.reason
    assert "the candidate is better: success rate" in (ended.reason or "")
    assert world.crew.serving("prod") == world.second


def test_an_ab_test_without_a_significant_difference_keeps_the_current_release(
    world: World, controller: RolloutController
) -> None:
    world.strategy(ab("success"))
    rollout = world.start()
    world.traffic(rollout, "baseline", 300, errors=0.02, seed=5)
    world.traffic(rollout, "candidate", 300, errors=0.02, seed=6)
    controller.analyse(rollout)
    ended = world.reload(rollout)
    assert (ended.status, ended.candidate_share) == ("inconclusive", 0.0)
    assert "no significant difference" in (ended.reason or "")
    assert world.crew.serving("prod") == world.first


def test_an_ab_test_on_latency_rolls_back_a_slower_candidate_within_the_latency_threshold(
    world: World, controller: RolloutController
) -> None:
    # 20% slower: inside max_p95_latency_ratio (1.5), so only the A/B test's own decision catches it.
    world.strategy(ab("latency"))
    rollout = world.start()
    world.traffic(rollout, "baseline", 250, latency=100, seed=7)
    world.traffic(rollout, "candidate", 250, latency=120, seed=8)
    assert controller.analyse(rollout) == "pass"
    ended = world.reload(rollout)
    assert ended.status == "rolled_back", ended.reason
    assert "the candidate is worse: latency" in (ended.reason or "")
    assert world.crew.serving("prod") == world.first


def test_a_shadow_run_completes_without_moving_the_environment(
    world: World, controller: RolloutController
) -> None:
    world.strategy({"strategy": "shadow", "shadow": {"share": 100, "min_duration": 0, "min_requests": 50}})
    rollout = world.start()
    world.traffic(rollout, "baseline", 60)
    world.traffic(rollout, "shadow", 60)
    assert controller.analyse(rollout) == "pass"
    ended = world.reload(rollout)
    assert ended.status == "completed", ended.reason
    assert "a shadow run does not promote the candidate" in (ended.reason or "")
    assert world.crew.serving("prod") == world.first


def test_a_shadow_run_whose_candidate_fails_is_rolled_back(
    world: World, controller: RolloutController
) -> None:
    world.strategy({"strategy": "shadow", "shadow": {"share": 100, "min_duration": 0, "min_requests": 50}})
    rollout = world.start()
    world.traffic(rollout, "baseline", 60, errors=0.01, seed=9)
    world.traffic(rollout, "shadow", 60, errors=0.3, seed=10)
    assert controller.analyse(rollout) == "fail"
    assert world.reload(rollout).status == "rolled_back"
    assert world.crew.serving("prod") == world.first


def test_people_steer_a_rollout(world: World) -> None:
    world.strategy(FAST)
    world.start()
    rollouts_ = world.services.rollouts
    with pytest.raises(Forbidden):
        rollouts_.abort(world.crew.erin, "default", ROUTE, "prod")
    assert rollouts_.pause(world.crew.dan, "default", ROUTE, "prod").rollout.status == "paused"
    assert rollouts_.resume(world.crew.dan, "default", ROUTE, "prod").rollout.status == "running"
    aborted = rollouts_.abort(world.crew.dan, "default", ROUTE, "prod").rollout
    assert (aborted.status, aborted.candidate_share) == ("aborted", 0.0)
    assert world.crew.serving("prod") == world.first
    with pytest.raises(Invalid, match="no rollout strategy"):
        rollouts_.start(world.crew.dan, "default", ROUTE, "stage")


def test_only_an_admin_sets_a_strategy(world: World) -> None:
    with pytest.raises(Forbidden):
        world.services.rollouts.set_strategy(
            world.crew.dan, "default", ROUTE, "prod", RolloutSpec(strategy="canary")
        )
    with pytest.raises(Invalid, match="weights must rise"):
        parse_strategy(
            {"strategy": "canary", "canary": {"stages": [{"weight": 50}, {"weight": 10}, {"weight": 100}]}},
            "f",
        )


def test_a_stopped_controller_hands_its_rollouts_to_another(world: World, services: Services) -> None:
    world.strategy(FAST)
    rollout = world.start()
    first, second = RolloutController(services.rollouts), RolloutController(services.rollouts)
    first.step()
    with services.engine.connect() as connection:
        owner = connection.execute(
            sa.select(rollouts.c.lease_owner).where(rollouts.c.id == rollout.id)
        ).scalar()
    assert owner == first.owner
    second.step()  # the lease is held: nothing happens
    with services.engine.begin() as connection:
        past = datetime.now(UTC) - timedelta(seconds=1)
        connection.execute(sa.update(rollouts).where(rollouts.c.id == rollout.id).values(lease_until=past))
    second.step()
    with services.engine.connect() as connection:
        owner = connection.execute(
            sa.select(rollouts.c.lease_owner).where(rollouts.c.id == rollout.id)
        ).scalar()
    assert owner == second.owner


def test_moving_the_environment_under_a_rollout_aborts_it(
    world: World, controller: RolloutController
) -> None:
    world.strategy(FAST)
    rollout = world.start()
    first_third = world.crew.release(2)
    with world.services.engine.begin() as connection:  # prod moves under the rollout, as a hotfix would
        world.services.environments.finish_rollout(
            connection, world.admin, "default", ROUTE, "prod", first_third
        )
    assert controller.analyse(rollout) == "aborted"
    rollout = world.reload(rollout)
    assert rollout.status == "aborted"
    assert "not the baseline" in (rollout.reason or "")
