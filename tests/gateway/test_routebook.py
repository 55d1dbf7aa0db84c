"""A release the gateway cannot compile never takes routing down.

Releases are checked when they are created, so such a release can only come from the store itself
(written before the checks existed, or by hand). Here one is written straight into the store, and an
environment pointed at it, as that history would leave them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import update

from lockgate.control.prompt_spec import PromptSpec
from lockgate.control.registry import ModelCard
from lockgate.control.releases import Release, ReleaseRequest
from lockgate.gateway.routebook import RouteBook
from lockgate.instance import Instance
from lockgate.security.rbac import Actor, Role
from lockgate.services import Services
from lockgate.store import versions
from lockgate.store.tables import releases, route_pointers
from tests.support.gateway import RunningGateway, run_gateway, stub_config
from tests.support.people import person
from tests.support.processes import StubUpstream

SCRAPE = {"authorization": "Bearer scrape-routebook"}
BROKEN_ID = "rel_" + "b" * 32


@pytest.fixture
def running(
    instance: Instance, admin: Actor, stub: StubUpstream, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunningGateway]:
    monkeypatch.setenv("LG_TEST_METRICS_TOKEN", "scrape-routebook")
    config = stub_config(("primary", stub.base_url), server={"metrics_token": "${LG_TEST_METRICS_TOKEN}"})
    with run_gateway(instance, config) as gateway:
        yield gateway


@pytest.fixture
def editor(services: Services, admin: Actor) -> Actor:
    erin = person(services, admin, "erin", Role.EDITOR)
    card = ModelCard(
        name="llm", version="1", gateway_model="m", license="mit", intended_use="tests", owner_team="qa"
    )
    services.registry.register(erin, "default", card)
    return erin


def released(services: Services, editor: Actor, route: str, version: str = "1.0.0") -> Release:
    """A good release of ``route``, pointed at by dev."""
    spec = {
        "name": route,
        "version": version,
        "messages": [{"role": "user", "content": route + ": {{ q }}"}],
        "variables": {"type": "object", "properties": {"q": {"type": "string"}}},
        "settings": {"model": "llm:1"},
    }
    services.prompts.push(editor, "default", PromptSpec.model_validate(spec))
    request = ReleaseRequest(route=route, prompt=f"{route}@{version}")
    release = services.releases.create(editor, "default", request)
    services.environments.point(editor, "default", route, "dev", release.id)
    return release


def broken_spec(good: Release, flaw: str) -> dict[str, Any]:
    spec = good.content.model_dump(mode="json")
    if flaw == "schema":
        spec["output_contract"] = {"type": "object", "required": "answer"}  # `required` must be a list
    else:
        spec["prompt"]["messages"] = [{"role": "user", "content": "{{ q|center(80) }}"}]  # not in the sandbox
    return spec


def point_at_broken(services: Services, good: Release, flaw: str) -> None:
    """Store an uncompilable release of ``good``'s route and point dev at it, as old data would."""
    tenant_id = services.tenants.get("default").id
    with services.engine.begin() as connection:
        connection.execute(
            releases.insert().values(
                id=BROKEN_ID,
                tenant_id=tenant_id,
                route=good.content.route,
                spec=broken_spec(good, flaw),
                created_by="legacy",
                created_at=datetime.now(UTC),
            )
        )
        connection.execute(
            update(route_pointers)
            .where(
                route_pointers.c.tenant_id == tenant_id,
                route_pointers.c.route == good.content.route,
                route_pointers.c.environment == "dev",
            )
            .values(release_id=BROKEN_ID, previous_release_id=good.id)
        )
        versions.bump(connection, versions.ROUTES)


def settle(running: RunningGateway, instance: Instance) -> None:
    """Wait (at most 1 s) until the gateway's change watcher has loaded every key and pointer."""
    with instance.engine.connect() as connection:
        auth = versions.current(connection, versions.AUTH)
        routes = versions.current(connection, versions.ROUTES)
    deadline = time.monotonic() + 1.0
    while running.gateway.keyring.version < auth or running.gateway.routes.version < routes:
        assert time.monotonic() < deadline, "the change watcher did not reload within 1 s"
        time.sleep(0.02)


def served(running: RunningGateway, key: str, route: str) -> str:
    client = openai.OpenAI(base_url=running.base_url, api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=f"route:{route}", messages=[], extra_body={"variables": {"q": "hi"}}
    )
    assert raw.parse().choices[0].message.content == f"echo: {route}: hi"
    return raw.headers["x-lockgate-release"]


def unservable(running: RunningGateway) -> str:
    metrics = httpx.get(f"{running.url}/metrics", headers=SCRAPE)
    assert metrics.status_code == 200
    [line] = [x for x in metrics.text.splitlines() if x.startswith("lockgate_releases_unservable ")]
    return line.split()[1]


@pytest.mark.parametrize("flaw", ["schema", "template"])
def test_an_uncompilable_release_is_skipped_and_everything_else_keeps_serving(
    running: RunningGateway,
    instance: Instance,
    services: Services,
    admin: Actor,
    editor: Actor,
    flaw: str,
) -> None:
    qa, faq = released(services, editor, "qa"), released(services, editor, "faq")
    key = services.keys.create(admin, "default", environment="dev").secret
    settle(running, instance)
    assert (served(running, key, "qa"), served(running, key, "faq")) == (qa.id, faq.id)
    assert unservable(running) == "0.0"

    point_at_broken(services, qa, flaw)
    settle(running, instance)
    # This worker had qa's dev release: it keeps serving it; faq is untouched.
    assert served(running, key, "qa") == qa.id
    assert served(running, key, "faq") == faq.id
    assert unservable(running) == "1.0"
    assert list(running.gateway.routes.unservable) == [BROKEN_ID]

    # Once dev has moved on to good releases (the broken one is not even its previous), the report clears.
    services.environments.point(editor, "default", "qa", "dev", qa.id)
    again = released(services, editor, "qa", "1.0.1")
    settle(running, instance)
    assert served(running, key, "qa") == again.id
    assert unservable(running) == "0.0"
    assert running.gateway.routes.unservable == {}


@pytest.mark.parametrize(("flaw", "why"), [("schema", "SchemaError: "), ("template", "TemplateRejected: ")])
def test_a_worker_that_never_had_the_environment_loads_the_rest(
    instance: Instance, services: Services, editor: Actor, flaw: str, why: str
) -> None:
    qa, faq = released(services, editor, "qa"), released(services, editor, "faq")
    point_at_broken(services, qa, flaw)
    reported: list[int] = []
    book = RouteBook(on_unservable=reported.append)
    book.load(instance.engine)  # does not raise
    tenant_id = services.tenants.get("default").id
    assert book.lookup(tenant_id, "qa", "dev") is None  # nothing it could serve there: a 404, not a 500
    entry = book.lookup(tenant_id, "faq", "dev")
    assert entry is not None and entry.current.id == faq.id
    assert reported == [1]
    assert book.unservable[BROKEN_ID].startswith(why)
    # A later reload (any change of any route) still skips it and still reports it.
    book.load(instance.engine)
    assert (reported, list(book.unservable)) == ([1, 1], [BROKEN_ID])


def test_a_route_with_no_servable_release_answers_404_not_500(
    instance: Instance, services: Services, admin: Actor, editor: Actor, stub: StubUpstream
) -> None:
    qa = released(services, editor, "qa")
    point_at_broken(services, qa, "schema")
    key = services.keys.create(admin, "default", environment="dev").secret
    with run_gateway(instance, stub_config(("primary", stub.base_url))) as fresh:
        client = openai.OpenAI(base_url=fresh.base_url, api_key=key, max_retries=0)
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(
                model="route:qa", messages=[], extra_body={"variables": {"q": "x"}}
            )
        answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert answer.choices[0].message.content == "echo: x"
