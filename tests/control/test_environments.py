"""Environments: who may move which pointer, four eyes for prod, and rollback that cannot bypass a gate.

Gates are optional on this server (``control.gates_required: false``) so that each test is about the
pointer rules alone; tests/gates covers what a gate adds.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from lockgate.config.loader import LoadedConfig
from lockgate.control.releases import ReleaseRequest
from lockgate.security.rbac import Actor, Role
from lockgate.service_errors import Conflict, Forbidden, Invalid, NotFound
from lockgate.services import Services
from tests.control.test_golden_path import ROUTE, card, gates_optional, prompt
from tests.support.people import person


@pytest.fixture
def config() -> LoadedConfig:
    return gates_optional()


@dataclass
class Crew:
    """Everyone who had a hand in a release, and everyone who did not."""

    services: Services
    rita: Actor  # registers the model
    paul: Actor  # pushes the prompts
    erin: Actor  # creates the releases
    april: Actor  # approves, had no hand in anything
    dan: Actor  # deploys (and may approve)
    vic: Actor  # reads

    def release(self, patch: int) -> str:
        """A new release of ROUTE: prompt 1.0.<patch> pushed by paul, the release created by erin."""
        self.services.prompts.push(
            self.paul, "default", prompt(f"1.0.{patch}", f"{{{{ question }}}} #{patch}")
        )
        request = ReleaseRequest(route=ROUTE, prompt=f"{ROUTE}@1.0.{patch}")
        return self.services.releases.create(self.erin, "default", request).id

    def ship(self, release_id: str) -> None:
        """dev -> stage -> prod, approved by april."""
        environments = self.services.environments
        environments.point(self.erin, "default", ROUTE, "dev", release_id)
        environments.promote(self.dan, "default", ROUTE, "stage")
        environments.approve(self.april, "default", release_id, "prod")
        environments.promote(self.dan, "default", ROUTE, "prod")

    def serving(self, environment: str) -> str:
        return self.services.environments.pointer("default", ROUTE, environment).release_id

    def rollbacks(self) -> list[tuple[str, str]]:
        """(environment, release) of every rollback recorded in the route's history."""
        moves = self.services.environments.history(self.vic, "default", ROUTE)
        return [(m.environment, m.release_id) for m in moves if m.action == "rollback"]


@pytest.fixture
def crew(services: Services, admin: Actor) -> Crew:
    def who(name: str, *roles: Role) -> Actor:
        return person(services, admin, name, *roles)

    crew = Crew(
        services,
        rita=who("rita", Role.EDITOR, Role.APPROVER),
        paul=who("paul", Role.EDITOR, Role.APPROVER),
        erin=who("erin", Role.EDITOR, Role.APPROVER),
        april=who("april", Role.APPROVER),
        dan=who("dan", Role.DEPLOYER, Role.APPROVER),
        vic=who("vic", Role.VIEWER),
    )
    services.registry.register(crew.rita, "default", card("support-llm"))
    services.registry.set_alias(crew.rita, "default", "support-llm", "champion", "1")
    return crew


def denied(services: Services, admin: Actor, action: str) -> list[tuple[str, str]]:
    """(actor, resource) of every refusal of ``action`` in the audit log, oldest first."""
    entries = services.trail.recent(admin, limit=500, action=action)
    return [(e["actor"], e["resource"]) for e in reversed(entries) if e["outcome"] == "denied"]


# --- four eyes --------------------------------------------------------------------------------------


def test_nobody_who_had_a_hand_in_a_release_can_approve_it(
    crew: Crew, services: Services, admin: Actor
) -> None:
    rid = crew.release(0)
    refusals = {"erin": "creator", "paul": "prompt pusher", "rita": "model registrant"}
    for name, how in refusals.items():
        with pytest.raises(Forbidden, match="four eyes") as refused:
            services.environments.approve(getattr(crew, name), "default", rid, "prod")
        assert how in refused.value.message
    assert services.environments.approvers(rid, "prod") == []
    assert sorted(denied(services, admin, "releases.approve")) == [
        (name, f"release:default/{rid}") for name in ("erin", "paul", "rita")
    ]
    assert services.environments.approve(crew.april, "default", rid, "prod") == ["april"]


def test_the_promoters_own_approval_does_not_count_for_prod(crew: Crew, services: Services) -> None:
    rid = crew.release(0)
    services.environments.point(crew.erin, "default", ROUTE, "dev", rid)
    services.environments.promote(crew.dan, "default", ROUTE, "stage")
    assert services.environments.approve(crew.dan, "default", rid, "prod") == ["dan"]
    with pytest.raises(Forbidden, match="person promoting it"):
        services.environments.promote(crew.dan, "default", ROUTE, "prod")
    with pytest.raises(NotFound):
        services.environments.pointer("default", ROUTE, "prod")

    services.environments.approve(crew.april, "default", rid, "prod")
    services.environments.promote(crew.dan, "default", ROUTE, "prod")
    assert crew.serving("prod") == rid
    [*_, allowed] = services.evidence.list(crew.vic, "default", release_id=rid)
    assert (allowed.environment, allowed.decision) == ("prod", "allow")
    assert allowed.record["approvers"] == ["april", "dan"]


def test_an_approval_for_stage_does_not_open_prod(crew: Crew, services: Services) -> None:
    rid = crew.release(0)
    services.environments.point(crew.erin, "default", ROUTE, "dev", rid)
    services.environments.promote(crew.dan, "default", ROUTE, "stage")
    services.environments.approve(crew.april, "default", rid, "stage")
    with pytest.raises(Forbidden, match="needs an approval for prod"):
        services.environments.promote(crew.dan, "default", ROUTE, "prod")


# --- how pointers move -----------------------------------------------------------------------------


@pytest.mark.parametrize("environment", ["stage", "prod"])
def test_point_cannot_move_stage_or_prod(
    crew: Crew, services: Services, admin: Actor, environment: str
) -> None:
    rid = crew.release(0)
    for actor in (crew.erin, admin):  # not even an admin
        with pytest.raises(Invalid, match="moves only by"):
            services.environments.point(actor, "default", ROUTE, environment, rid)
    assert services.environments.pointers(crew.vic, "default", ROUTE) == []


def test_promote_walks_dev_stage_prod_one_step_at_a_time(crew: Crew, services: Services) -> None:
    first, second = crew.release(0), crew.release(1)
    environments = services.environments
    with pytest.raises(NotFound, match="no release in dev"):
        environments.promote(crew.dan, "default", ROUTE, "stage")
    environments.point(crew.erin, "default", ROUTE, "dev", first)
    with pytest.raises(NotFound, match="no release in stage"):
        environments.promote(crew.dan, "default", ROUTE, "prod")
    with pytest.raises(Invalid, match="promote to 'stage' or 'prod'"):
        environments.promote(crew.dan, "default", ROUTE, "dev")
    environments.promote(crew.dan, "default", ROUTE, "stage")

    # dev moves on; prod takes what stage serves, never what dev serves.
    environments.point(crew.erin, "default", ROUTE, "dev", second)
    environments.approve(crew.april, "default", first, "prod")
    environments.approve(crew.april, "default", second, "prod")
    environments.promote(crew.dan, "default", ROUTE, "prod")
    assert [(p.environment, p.release_id) for p in environments.pointers(crew.vic, "default", ROUTE)] == [
        ("dev", second),
        ("stage", first),
        ("prod", first),
    ]
    moves = environments.history(crew.vic, "default", ROUTE)
    assert [(m.environment, m.action, m.actor) for m in moves] == [
        ("dev", "point", "erin"),
        ("stage", "promote", "dan"),
        ("dev", "point", "erin"),
        ("prod", "promote", "dan"),
    ]


def test_only_deployers_promote_and_roll_back(crew: Crew, services: Services) -> None:
    rid = crew.release(0)
    services.environments.point(crew.erin, "default", ROUTE, "dev", rid)
    with pytest.raises(Forbidden):
        services.environments.promote(crew.erin, "default", ROUTE, "stage")
    services.environments.promote(crew.dan, "default", ROUTE, "stage")
    with pytest.raises(Forbidden):
        services.environments.rollback(crew.erin, "default", ROUTE, "stage")
    with pytest.raises(Forbidden):
        services.environments.point(crew.vic, "default", ROUTE, "dev", rid)


# --- rollback ----------------------------------------------------------------------------------------


def test_rollback_goes_to_the_previous_release_and_repeating_it_walks_further_back(
    crew: Crew, services: Services
) -> None:
    first, second, third = crew.release(0), crew.release(1), crew.release(2)
    for rid in (first, second, third):
        crew.ship(rid)
    assert crew.serving("prod") == third

    services.environments.rollback(crew.dan, "default", ROUTE, "prod")
    assert crew.serving("prod") == second
    services.environments.rollback(crew.dan, "default", ROUTE, "prod")
    assert crew.serving("prod") == first  # not back to the third: two rollbacks walk back two releases
    with pytest.raises(Invalid, match="no previous release"):
        services.environments.rollback(crew.dan, "default", ROUTE, "prod")
    assert crew.serving("prod") == first
    assert crew.rollbacks() == [("prod", second), ("prod", first)]


def test_rollback_only_returns_to_a_release_the_environment_served(crew: Crew, services: Services) -> None:
    first, second = crew.release(0), crew.release(1)
    crew.ship(first)
    crew.ship(second)
    never_in_prod = crew.release(2)
    services.environments.point(crew.erin, "default", ROUTE, "dev", never_in_prod)
    services.environments.promote(crew.dan, "default", ROUTE, "stage")

    with pytest.raises(Invalid, match=f"release {never_in_prod} never served {ROUTE} in prod"):
        services.environments.rollback(crew.dan, "default", ROUTE, "prod", to=never_in_prod)
    assert crew.serving("prod") == second
    services.environments.rollback(crew.dan, "default", ROUTE, "prod", to=first)
    assert crew.serving("prod") == first


def test_a_repeated_rollback_request_changes_nothing(crew: Crew, services: Services) -> None:
    first, bad = crew.release(0), crew.release(1)
    crew.ship(first)
    crew.ship(bad)

    services.environments.rollback(crew.dan, "default", ROUTE, "prod", to=first, expected=bad)
    evidence_after_first = len(services.evidence.list(crew.vic, "default"))
    # The client retries the same request (say its connection dropped): nothing moves, the bad
    # release is not deployed again, no second record is written.
    again = services.environments.rollback(crew.dan, "default", ROUTE, "prod", to=first, expected=bad)
    assert again.release_id == first
    assert crew.serving("prod") == first
    assert crew.rollbacks() == [("prod", first)]
    assert len(services.evidence.list(crew.vic, "default")) == evidence_after_first


def test_a_rollback_based_on_a_stale_view_is_a_conflict(crew: Crew, services: Services) -> None:
    first, second, third = crew.release(0), crew.release(1), crew.release(2)
    for rid in (first, second, third):
        crew.ship(rid)
    services.environments.rollback(crew.dan, "default", ROUTE, "prod", to=first)
    # Someone else saw the third release in prod and asks to go back to the second.
    with pytest.raises(Conflict, match=f"serves {first}, not {third}"):
        services.environments.rollback(crew.dan, "default", ROUTE, "prod", to=second, expected=third)
    assert crew.serving("prod") == first


def test_rollback_leaves_signed_evidence(crew: Crew, services: Services) -> None:
    first, second = crew.release(0), crew.release(1)
    crew.ship(first)
    crew.ship(second)
    services.environments.rollback(crew.dan, "default", ROUTE, "prod")

    [record] = [
        r
        for r in services.evidence.list(crew.vic, "default", release_id=first)
        if r.record["action"] == "rollback"
    ]
    assert (record.environment, record.decision, record.record["requested_by"]) == ("prod", "allow", "dan")
    assert record.record["reasons"] == [f"rollback from {second}"]
    assert services.evidence.verify(crew.vic, "default", record.id).ok
