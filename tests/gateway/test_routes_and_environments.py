"""``route:NAME`` calls: which environment a key reaches, and which models a route's release may use on
its behalf. Releases are made through the services, the gateway is called with the openai SDK."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from lockgate.config.loader import LoadedConfig
from lockgate.control.prompt_spec import PromptSpec
from lockgate.control.registry import ModelCard
from lockgate.control.releases import Release, ReleaseRequest
from lockgate.instance import Instance
from lockgate.security.rbac import Actor, Role
from lockgate.server.bootstrap import CONFIG
from lockgate.services import Services
from lockgate.store import versions
from tests.support.gateway import RunningGateway, run_gateway, stub_config
from tests.support.people import person
from tests.support.processes import StubUpstream

ENV = "x-lockgate-environment"


@pytest.fixture
def config() -> LoadedConfig:
    # This module is about routing, not gates: stage may be promoted to without one.
    return stub_config(("primary", "http://127.0.0.1:9/v1"), control={"gates_required": False})


@pytest.fixture
def running(instance: Instance, admin: Actor, stub: StubUpstream) -> Iterator[RunningGateway]:
    config = stub_config(("primary", stub.base_url), control={"gates_required": False})
    with run_gateway(instance, config) as gateway:
        yield gateway


@dataclass
class Tenant:
    """A tenant's admin, an editor who makes releases and a deployer who promotes them."""

    services: Services
    name: str
    admin: Actor
    editor: Actor
    deployer: Actor

    def release(self, route: str, version: str, model: str = "m", fallbacks: tuple[str, ...] = ()) -> Release:
        card = f"llm-{model}"
        if not self.services.registry.list(self.editor, self.name, name=card):
            self.services.registry.register(
                self.editor,
                self.name,
                ModelCard(
                    name=card,
                    version="1",
                    gateway_model=model,
                    license="apache-2.0",
                    intended_use="tests",
                    owner_team="qa",
                ),
            )
        spec = {
            "name": route,
            "version": version,
            "messages": [{"role": "user", "content": f"{version}: {{{{ q }}}}"}],
            "variables": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
            "settings": {"model": f"{card}:1"},
        }
        self.services.prompts.push(self.editor, self.name, PromptSpec.model_validate(spec))
        request = ReleaseRequest(route=route, prompt=f"{route}@{version}", fallbacks=list(fallbacks))
        return self.services.releases.create(self.editor, self.name, request)

    def dev(self, release: Release) -> None:
        self.services.environments.point(self.editor, self.name, release.content.route, "dev", release.id)

    def key(self, **options: Any) -> str:
        return self.services.keys.create(self.admin, self.name, **options).secret


def tenant(services: Services, admin: Actor, name: str = "default") -> Tenant:
    editor = person(services, admin, f"ed-{name}", Role.EDITOR, tenant=name)
    deployer = person(services, admin, f"dan-{name}", Role.DEPLOYER, tenant=name)
    return Tenant(services, name, admin, editor, deployer)


@pytest.fixture
def default(services: Services, admin: Actor) -> Tenant:
    return tenant(services, admin)


def settle(running: RunningGateway, instance: Instance) -> None:
    """Wait (at most 1 s) until the gateway's change watcher has loaded every key and pointer."""
    with instance.engine.connect() as connection:
        auth = versions.current(connection, versions.AUTH)
        routes = versions.current(connection, versions.ROUTES)
    deadline = time.monotonic() + 1.0
    while running.gateway.keyring.version < auth or running.gateway.routes.version < routes:
        assert time.monotonic() < deadline, "the change watcher did not reload within 1 s"
        time.sleep(0.02)


def ask(running: RunningGateway, key: str, route: str, environment: str | None = None) -> tuple[str, str]:
    """Call ``route:route``; returns (the release that answered, the answer)."""
    client = openai.OpenAI(base_url=running.base_url, api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=f"route:{route}",
        messages=[],
        extra_body={"variables": {"q": "hello"}},
        extra_headers={ENV: environment} if environment is not None else None,
    )
    return raw.headers["x-lockgate-release"], raw.parse().choices[0].message.content or ""


def refused(
    running: RunningGateway, key: str, model: str, environment: str | None = None
) -> openai.APIStatusError:
    client = openai.OpenAI(base_url=running.base_url, api_key=key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model=model,
            messages=[] if model.startswith("route:") else [{"role": "user", "content": "hi"}],
            extra_body={"variables": {"q": "hello"}},
            extra_headers={ENV: environment} if environment is not None else None,
        )
    return caught.value


def error(caught: openai.APIStatusError) -> dict[str, Any]:
    assert isinstance(caught.body, dict)
    return caught.body


# --- environments ------------------------------------------------------------------------------------


@pytest.fixture
def staged(default: Tenant) -> tuple[Release, Release]:
    """Route ``qa``: release 1.0.0 promoted to stage, release 1.1.0 in dev, nothing in prod."""
    first = default.release("qa", "1.0.0")
    default.dev(first)
    default.services.environments.promote(default.deployer, "default", "qa", "stage")
    second = default.release("qa", "1.1.0")
    default.dev(second)
    return first, second


def test_a_key_pinned_to_dev_is_refused_another_environment(
    running: RunningGateway, instance: Instance, default: Tenant, staged: tuple[Release, Release]
) -> None:
    key = default.key(environment="dev")
    settle(running, instance)
    for environment in ("prod", "stage"):
        caught = refused(running, key, "route:qa", environment)
        assert caught.status_code == 403
        body = error(caught)
        assert (body["param"], body["code"]) == (ENV, "environment_not_allowed")
        assert f"pinned to the dev environment; it may not call {environment}" in body["message"]
    # Without the header, or naming its own environment, it gets dev.
    assert ask(running, key, "qa") == (staged[1].id, "echo: 1.1.0: hello")
    assert ask(running, key, "qa", "dev")[0] == staged[1].id


def test_variables_may_come_as_a_json_string_in_metadata_where_a_client_sends_only_openai_fields(
    running: RunningGateway, instance: Instance, default: Tenant, staged: tuple[Release, Release]
) -> None:
    key = default.key(environment="dev")
    settle(running, instance)
    client = openai.OpenAI(base_url=running.base_url, api_key=key, max_retries=0)
    answer = client.chat.completions.create(
        model="route:qa", messages=[], metadata={"variables": '{"q": "from metadata"}', "trace": "t-1"}
    )
    assert answer.choices[0].message.content == "echo: 1.1.0: from metadata"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="route:qa", messages=[], metadata={"variables": "{q: oops"})
    body = error(caught.value)
    assert (body["param"], body["message"]) == ("metadata.variables", "metadata.variables is not valid JSON.")


def test_a_key_pinned_to_stage_gets_stage_without_a_header(
    running: RunningGateway, instance: Instance, default: Tenant, staged: tuple[Release, Release]
) -> None:
    key = default.key(environment="stage")
    settle(running, instance)
    assert ask(running, key, "qa") == (staged[0].id, "echo: 1.0.0: hello")
    assert refused(running, key, "route:qa", "dev").status_code == 403


def test_an_unpinned_key_chooses_with_the_header_and_defaults_to_prod(
    running: RunningGateway, instance: Instance, default: Tenant, staged: tuple[Release, Release]
) -> None:
    key = default.key()
    settle(running, instance)
    assert ask(running, key, "qa", "dev")[0] == staged[1].id
    assert ask(running, key, "qa", "stage")[0] == staged[0].id
    missing = refused(running, key, "route:qa")
    assert missing.status_code == 404
    assert error(missing)["message"] == "The route 'qa' has no release in prod."
    bad = refused(running, key, "route:qa", "qa")
    assert bad.status_code == 400
    assert error(bad)["param"] == ENV


# --- what a route's release may use -------------------------------------------------------------------


def test_a_key_limited_to_a_route_may_call_only_that_route(
    running: RunningGateway, instance: Instance, default: Tenant
) -> None:
    qa = default.release("qa", "1.0.0")
    default.dev(qa)
    default.dev(default.release("faq", "1.0.0"))
    key = default.key(environment="dev", allowed_models=["route:qa"])
    settle(running, instance)
    assert ask(running, key, "qa")[0] == qa.id
    other_route = refused(running, key, "route:faq")
    assert (other_route.status_code, error(other_route)["code"]) == (403, "model_not_allowed")
    assert error(other_route)["message"] == "This API key may not use the route 'faq'."
    assert refused(running, key, "m").status_code == 403  # no model by name


def test_a_keys_model_list_bounds_what_its_routes_may_use(
    running: RunningGateway, instance: Instance, default: Tenant
) -> None:
    default.dev(default.release("qa", "1.0.0", model="m"))
    key = default.key(environment="dev", allowed_models=["route:qa", "other"])
    settle(running, instance)
    caught = refused(running, key, "route:qa")
    assert caught.status_code == 403
    body = error(caught)
    assert body["param"] == "model"
    assert body["message"] == ("The release of route 'qa' uses the model 'm', which this key may not use.")
    # The model it does name it may call by name.
    client = openai.OpenAI(base_url=running.base_url, api_key=key, max_retries=0)
    assert client.chat.completions.create(model="other", messages=[{"role": "user", "content": "x"}]).choices


def test_a_release_fallback_outside_the_keys_list_is_refused(
    running: RunningGateway, instance: Instance, default: Tenant, stub: StubUpstream
) -> None:
    default.dev(default.release("qa", "1.0.0", model="m", fallbacks=("other",)))
    narrow = default.key(environment="dev", allowed_models=["route:qa", "m"])
    wide = default.key(environment="dev", allowed_models=["route:qa", "m", "other"])
    settle(running, instance)
    caught = refused(running, narrow, "route:qa")
    assert caught.status_code == 403
    assert "uses the model 'other'" in error(caught)["message"]
    assert stub.received() == []  # refused before anything went upstream
    assert ask(running, wide, "qa")[1] == "echo: 1.0.0: hello"


def test_a_tenant_whose_allow_list_excludes_the_releases_model_is_refused(
    running: RunningGateway,
    instance: Instance,
    services: Services,
    admin: Actor,
    admin_token: str,
    stub: StubUpstream,
) -> None:
    services.tenants.create(admin, "acme", ["m", "other"])
    acme = tenant(services, services.tokens.authenticate(admin_token), "acme")
    on_m = acme.release("qa", "1.0.0", model="m")
    acme.dev(on_m)
    acme.dev(acme.release("faq", "1.0.0", model="other", fallbacks=("m",)))
    key = acme.key(environment="dev")
    settle(running, instance)
    assert ask(running, key, "qa")[0] == on_m.id

    # The configuration file now allows acme only `other`: releases on m stop being served to it.
    services.tenants.sync(CONFIG, "acme", ["other"])
    settle(running, instance)
    before = len(stub.received())
    for route, model in (("qa", "m"), ("faq", "m")):
        caught = refused(running, key, f"route:{route}")
        assert caught.status_code == 403
        assert f"uses the model '{model}'" in error(caught)["message"]
    assert len(stub.received()) == before
    # What the tenant still allows keeps working.
    client = openai.OpenAI(base_url=running.base_url, api_key=key, max_retries=0)
    assert client.chat.completions.create(model="other", messages=[{"role": "user", "content": "x"}]).choices


def test_an_unrestricted_key_reaches_every_route_of_its_tenant_only(
    running: RunningGateway, instance: Instance, services: Services, admin: Actor, admin_token: str
) -> None:
    services.tenants.create(admin, "acme")
    platform = services.tokens.authenticate(admin_token)
    acme, ours = tenant(services, platform, "acme"), tenant(services, platform)
    theirs = acme.release("qa", "1.0.0")
    acme.dev(theirs)
    key, their_key = ours.key(environment="dev"), acme.key(environment="dev")
    settle(running, instance)
    # Same route name, another tenant: this key's tenant has no such route.
    missing = refused(running, key, "route:qa")
    assert missing.status_code == 404
    assert ask(running, their_key, "qa")[0] == theirs.id
