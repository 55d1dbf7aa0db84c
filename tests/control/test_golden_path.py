"""The golden path: register -> push -> release -> dev -> stage -> prod (four eyes) -> rollback.

Everything runs as it would for real: users act through their own control tokens, the gateway serves
``route:`` calls through the official openai SDK, and the audit chain verifies at the end.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import httpx
import openai
import pytest

from lockgate.service_errors import Forbidden, Invalid
from lockgate.control.plane import ControlPlane
from lockgate.control.prompt_spec import PromptSpec
from lockgate.control.registry import ModelCard, ModelStatus
from lockgate.control.releases import ReleaseRequest
from lockgate.instance import Instance
from lockgate.security.audit_verify import verify
from lockgate.security.rbac import Actor, Role
from tests.support.gateway import RunningGateway, run_gateway, stub_config
from tests.support.processes import StubUpstream

ROUTE = "support-answer"


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


def card(name: str) -> ModelCard:
    return ModelCard(
        name=name,
        version="1",
        gateway_model="m",
        license="apache-2.0",
        intended_use="answering support questions",
        owner_team="support-platform",
    )


class Team:
    def __init__(self, control: ControlPlane, admin: Actor) -> None:
        def user(name: str, *roles: Role) -> Actor:
            control.users.create(admin, name, {"default": list(roles)})
            return control.users.authenticate(control.users.issue_token(admin, name).secret)

        self.erin = user("erin", Role.EDITOR, Role.APPROVER)  # may approve, but never her own release
        self.april = user("april", Role.APPROVER)
        self.dan = user("dan", Role.DEPLOYER, Role.APPROVER)
        self.vic = user("vic", Role.VIEWER)


@pytest.fixture
def control(instance: Instance) -> ControlPlane:
    return instance.control()


@pytest.fixture
def team(control: ControlPlane, admin: Actor) -> Team:
    return Team(control, admin)


@pytest.fixture
def gateway(instance: Instance, admin: Actor, stub: StubUpstream) -> Iterator[RunningGateway]:
    with run_gateway(instance, stub_config(("primary", stub.base_url))) as running:
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


def test_golden_path(
    control: ControlPlane, team: Team, admin: Actor, gateway: RunningGateway, stub: StubUpstream
) -> None:
    control.registry.register(team.erin, "default", card("support-llm"))
    control.registry.set_alias(team.erin, "default", "support-llm", "champion", "1")
    control.prompts.push(team.erin, "default", prompt("1.0.0", 'reply:{"answer": "{{ question }}"}'))
    first = control.releases.create(
        team.erin, "default", ReleaseRequest(route=ROUTE, prompt=f"{ROUTE}@1.0.0")
    )
    control.environments.point(team.erin, "default", ROUTE, "dev", first.id)

    dev_key = control.keys.create("default", environment="dev", actor=admin).secret
    prod_key = control.keys.create("default", actor=admin).secret
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

    control.environments.promote(team.dan, "default", ROUTE, "stage")
    with pytest.raises(Forbidden, match="approval"):
        control.environments.promote(team.dan, "default", ROUTE, "prod")
    with pytest.raises(Forbidden, match="four eyes"):
        control.environments.approve(team.erin, "default", first.id, "prod")
    control.environments.approve(team.april, "default", first.id, "prod")
    control.environments.promote(team.dan, "default", ROUTE, "prod")
    wait_for_release(gateway, prod_key, first.id)

    control.prompts.push(team.erin, "default", prompt("1.0.1", 'reply:{"answer": "{{ question }}!"}'))
    second = control.releases.create(
        team.erin, "default", ReleaseRequest(route=ROUTE, prompt=f"{ROUTE}@1.0.1")
    )
    control.environments.point(team.erin, "default", ROUTE, "dev", second.id)
    control.environments.promote(team.dan, "default", ROUTE, "stage")
    control.environments.approve(team.april, "default", second.id, "prod")
    control.environments.promote(team.dan, "default", ROUTE, "prod")
    wait_for_release(gateway, prod_key, second.id)

    control.environments.rollback(team.dan, "default", ROUTE, "prod")
    assert wait_for_release(gateway, prod_key, first.id) < 1.0
    assert ask(gateway, prod_key).headers["x-lockgate-prompt"] == f"{ROUTE}@1.0.0"

    report = verify(gateway.gateway.engine, control.audit.signer.public_key, None)
    assert report.ok, report.problem
    assert report.entries >= 15  # users, model, alias, prompts, releases, pointers, approvals, keys


def test_rules_are_enforced(control: ControlPlane, team: Team, admin: Actor) -> None:
    with pytest.raises(Forbidden):
        control.registry.register(team.vic, "default", card("x"))
    control.registry.register(team.erin, "default", card("support-llm"))
    control.registry.set_alias(team.erin, "default", "support-llm", "champion", "1")
    control.prompts.push(team.erin, "default", prompt("1.0.0", "{{ question }}"))
    with pytest.raises(Forbidden):
        control.releases.create(team.vic, "default", ReleaseRequest(route=ROUTE, prompt=f"{ROUTE}@1.0.0"))
    control.registry.set_status(admin, "default", "support-llm", "1", ModelStatus.RETIRED)
    with pytest.raises(Invalid, match="retired"):
        control.releases.create(team.erin, "default", ReleaseRequest(route=ROUTE, prompt=f"{ROUTE}@1.0.0"))


def test_output_contract_violation_is_502_naming_the_path(
    control: ControlPlane, team: Team, admin: Actor, gateway: RunningGateway
) -> None:
    control.registry.register(team.erin, "default", card("support-llm"))
    control.registry.set_alias(team.erin, "default", "support-llm", "champion", "1")
    control.prompts.push(team.erin, "default", prompt("1.0.0", 'reply:{"reply": "{{ question }}"}'))
    release = control.releases.create(
        team.erin, "default", ReleaseRequest(route=ROUTE, prompt=f"{ROUTE}@1.0.0")
    )
    control.environments.point(team.erin, "default", ROUTE, "dev", release.id)
    key = control.keys.create("default", environment="dev", actor=admin).secret
    time.sleep(1.0)  # let the new key and pointer reach the gateway
    with pytest.raises(openai.APIStatusError) as caught:
        ask(gateway, key)
    assert caught.value.status_code == 502
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "output_contract_violation"
    assert error["param"] == "$"
    assert "'answer' is a required property" in error["message"]
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert f'lockgate_output_contract_violations_total{{route="{ROUTE}"}} 1.0' in metrics
