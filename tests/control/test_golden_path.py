"""The golden path: register -> push -> release -> dev -> stage -> prod (four eyes) -> rollback.

Everything runs as it would for real: people are invited and act through their own control tokens,
the gateway serves ``route:`` calls through the official openai SDK, and the audit chain verifies at
the end. This module is about releases, pointers and people, so its server runs with
``control.gates_required: false`` (gates are covered in tests/gates and tests/evals).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import httpx
import openai
import pytest

from lockgate.config.loader import LoadedConfig
from lockgate.control.prompt_spec import PromptSpec
from lockgate.control.registry import ModelCard, ModelStatus
from lockgate.control.releases import ReleaseRequest
from lockgate.instance import Instance
from lockgate.security.rbac import Actor, Role
from lockgate.service_errors import Forbidden, Invalid
from lockgate.services import Services
from tests.support.gateway import RunningGateway, run_gateway, stub_config
from tests.support.people import person
from tests.support.processes import StubUpstream

ROUTE = "support-answer"
METRICS_TOKEN = "scrape-me"


def prompt(version: str, template: str) -> PromptSpec:
    return PromptSpec.model_validate(
        {
            "name": ROUTE,
            "version": version,
            "messages": [
                {"role": "system", "content": "You answer questions about {{ product }}."},
                {"role": "user", "content": template},
            ],
            "variables": {
                "type": "object",
                "properties": {"product": {"type": "string"}, "question": {"type": "string"}},
                "required": ["product", "question"],
            },
            "settings": {"model": "support-llm@champion", "temperature": 0.1, "max_tokens": 64},
            "output_schema": {
                "type": "object",
                "properties": {"answer": {"type": "string"}},
                "required": ["answer"],
            },
        }
    )


def card(name: str, gateway_model: str = "m") -> ModelCard:
    return ModelCard(
        name=name,
        version="1",
        gateway_model=gateway_model,
        license="apache-2.0",
        intended_use="answering support questions",
        owner_team="support-platform",
    )


class Team:
    """People of tenant ``default``, invited by the admin and acting with their own tokens."""

    def __init__(self, services: Services, admin: Actor) -> None:
        # erin may approve, but never a release she had a hand in.
        self.erin = person(services, admin, "erin", Role.EDITOR, Role.APPROVER)
        self.april = person(services, admin, "april", Role.APPROVER)
        self.dan = person(services, admin, "dan", Role.DEPLOYER, Role.APPROVER)
        self.vic = person(services, admin, "vic", Role.VIEWER)


def gates_optional(url: str = "http://127.0.0.1:9/v1") -> LoadedConfig:
    """A server configured not to require a gate on stage and prod."""
    return stub_config(("primary", url), control={"gates_required": False})


@pytest.fixture
def config() -> LoadedConfig:
    return gates_optional()


@pytest.fixture
def team(services: Services, admin: Actor) -> Team:
    return Team(services, admin)


@pytest.fixture
def gateway(
    instance: Instance, admin: Actor, stub: StubUpstream, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunningGateway]:
    monkeypatch.setenv("LG_TEST_METRICS_TOKEN", METRICS_TOKEN)
    config = stub_config(
        ("primary", stub.base_url),
        control={"gates_required": False},
        server={"metrics_token": "${LG_TEST_METRICS_TOKEN}"},
    )
    with run_gateway(instance, config) as running:
        yield running


@dataclass(frozen=True)
class Answer:
    headers: Mapping[str, str]
    content: str


def ask(running: RunningGateway, key: str, question: str = "what is lockgate?") -> Answer:
    client = openai.OpenAI(base_url=running.base_url, api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=f"route:{ROUTE}",
        messages=[],
        extra_body={"variables": {"product": "lockgate", "question": question}},
    )
    return Answer(raw.headers, raw.parse().choices[0].message.content or "")


def wait_for_release(running: RunningGateway, key: str, release_id: str) -> float:
    """Seconds until the gateway serves ``release_id`` (the change watcher polls every 250 ms)."""
    started = time.monotonic()
    while True:
        try:
            if ask(running, key).headers["x-lockgate-release"] == release_id:
                return time.monotonic() - started
        except (openai.AuthenticationError, openai.NotFoundError):
            pass  # a brand-new key or pointer is not on this gateway yet
        assert time.monotonic() - started < 1.0, f"{release_id} not served within 1 s"
        time.sleep(0.02)


def reached(running: RunningGateway, key: str) -> bool:
    """Whether the gateway knows ``key`` and serves the route (whatever the answer)."""
    try:
        ask(running, key)
    except (openai.AuthenticationError, openai.NotFoundError):
        return False
    except openai.APIStatusError:
        return True
    return True


def test_golden_path(
    services: Services, team: Team, admin: Actor, gateway: RunningGateway, stub: StubUpstream
) -> None:
    services.registry.register(team.erin, "default", card("support-llm"))
    services.registry.set_alias(team.erin, "default", "support-llm", "champion", "1")
    services.prompts.push(team.erin, "default", prompt("1.0.0", 'reply:{"answer": "{{ question }}"}'))
    first = services.releases.create(
        team.erin, "default", ReleaseRequest(route=ROUTE, prompt=f"{ROUTE}@1.0.0")
    )
    services.environments.point(team.erin, "default", ROUTE, "dev", first.id)

    dev_key = services.keys.create(admin, "default", name="dev", environment="dev").secret
    prod_key = services.keys.create(admin, "default", name="prod").secret
    elapsed = wait_for_release(gateway, dev_key, first.id)
    assert elapsed < 1.0
    answer = ask(gateway, dev_key, "how do I roll back?")
    assert answer.content == '{"answer": "how do I roll back?"}'
    assert answer.headers["x-lockgate-prompt"] == f"{ROUTE}@1.0.0"
    assert answer.headers["x-lockgate-model"] == "support-llm:1"
    # What reached the upstream: the rendered prompt, the release's parameters, the registry's model.
    forwarded = stub.received()[-1]["body"]
    assert forwarded["messages"][0] == {"role": "system", "content": "You answer questions about lockgate."}
    assert (forwarded["model"], forwarded["temperature"], forwarded["max_tokens"]) == ("upstream-m", 0.1, 64)

    services.environments.promote(team.dan, "default", ROUTE, "stage")
    with pytest.raises(Forbidden, match="approval"):
        services.environments.promote(team.dan, "default", ROUTE, "prod")
    with pytest.raises(Forbidden, match="four eyes"):
        services.environments.approve(team.erin, "default", first.id, "prod")
    services.environments.approve(team.april, "default", first.id, "prod")
    services.environments.promote(team.dan, "default", ROUTE, "prod")
    wait_for_release(gateway, prod_key, first.id)

    services.prompts.push(team.erin, "default", prompt("1.0.1", 'reply:{"answer": "{{ question }}!"}'))
    second = services.releases.create(
        team.erin, "default", ReleaseRequest(route=ROUTE, prompt=f"{ROUTE}@1.0.1")
    )
    services.environments.point(team.erin, "default", ROUTE, "dev", second.id)
    services.environments.promote(team.dan, "default", ROUTE, "stage")
    services.environments.approve(team.april, "default", second.id, "prod")
    services.environments.promote(team.dan, "default", ROUTE, "prod")
    wait_for_release(gateway, prod_key, second.id)

    services.environments.rollback(team.dan, "default", ROUTE, "prod")
    assert wait_for_release(gateway, prod_key, first.id) < 1.0
    assert ask(gateway, prod_key).headers["x-lockgate-prompt"] == f"{ROUTE}@1.0.0"

    verified = services.trail.verify(admin)
    assert verified.report.ok, verified.report.problem
    assert verified.report.entries >= 15  # users, model, alias, prompts, releases, pointers, approvals, keys


def test_rules_are_enforced(services: Services, team: Team, admin: Actor) -> None:
    with pytest.raises(Forbidden):
        services.registry.register(team.vic, "default", card("x"))
    services.registry.register(team.erin, "default", card("support-llm"))
    services.registry.set_alias(team.erin, "default", "support-llm", "champion", "1")
    services.prompts.push(team.erin, "default", prompt("1.0.0", "{{ question }}"))
    with pytest.raises(Forbidden):
        services.releases.create(team.vic, "default", ReleaseRequest(route=ROUTE, prompt=f"{ROUTE}@1.0.0"))
    services.registry.set_status(admin, "default", "support-llm", "1", ModelStatus.RETIRED)
    with pytest.raises(Invalid, match="retired"):
        services.releases.create(team.erin, "default", ReleaseRequest(route=ROUTE, prompt=f"{ROUTE}@1.0.0"))
    assert services.releases.list(team.vic, "default") == []


def test_output_contract_violation_is_502_naming_the_path(
    services: Services, team: Team, admin: Actor, gateway: RunningGateway
) -> None:
    services.registry.register(team.erin, "default", card("support-llm"))
    services.registry.set_alias(team.erin, "default", "support-llm", "champion", "1")
    services.prompts.push(team.erin, "default", prompt("1.0.0", 'reply:{"reply": "{{ question }}"}'))
    release = services.releases.create(
        team.erin, "default", ReleaseRequest(route=ROUTE, prompt=f"{ROUTE}@1.0.0")
    )
    services.environments.point(team.erin, "default", ROUTE, "dev", release.id)
    key = services.keys.create(admin, "default", name="dev", environment="dev").secret
    deadline = time.monotonic() + 5
    while not reached(gateway, key):  # the new key and pointer are on their way to the gateway
        assert time.monotonic() < deadline, "the key and pointer never reached the gateway"
        time.sleep(0.05)
    with pytest.raises(openai.APIStatusError) as caught:
        ask(gateway, key)
    assert caught.value.status_code == 502
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "output_contract_violation"
    assert error["param"] == "$"
    assert "'answer' is a required property" in error["message"]
    scrape = {"authorization": f"Bearer {METRICS_TOKEN}"}
    metrics = httpx.get(f"{gateway.url}/metrics", headers=scrape).text
    # Two violations: the call that found the route ready, and the one above.
    assert f'lockgate_output_contract_violations_total{{route="{ROUTE}"}} 2.0' in metrics
