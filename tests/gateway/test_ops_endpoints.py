"""Operators' endpoints on the whole server: ``/healthz`` is open; ``/metrics`` and the details of
``/readyz`` (tenants, spend, the store, each deployment's circuit) need the scrape token or the control
token of someone in the platform tenant."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from lockgate.instance import Instance
from lockgate.security.apikeys import IssuedKey
from lockgate.security.rbac import Actor, Role
from lockgate.server.bootstrap import Bootstrap
from lockgate.services import Services
from lockgate.store import versions
from tests.support.gateway import RunningGateway, run_gateway, run_server, stub_config
from tests.support.people import token_of
from tests.support.processes import StubUpstream

SCRAPE_TOKEN = "scrape-Hx7q2-not-a-control-token"
TENANT = "initech-secret-project"


@pytest.fixture
def running(
    services: Services,
    instance: Instance,
    first_start: Bootstrap,
    stub: StubUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[RunningGateway]:
    monkeypatch.setenv("LG_TEST_SCRAPE_TOKEN", SCRAPE_TOKEN)
    config = stub_config(("primary", stub.base_url), server={"metrics_token": "${LG_TEST_SCRAPE_TOKEN}"})
    with run_server(services, instance, config) as server:
        yield server


@pytest.fixture
def traffic(running: RunningGateway, services: Services, admin: Actor, admin_token: str) -> None:
    """One answered request by a key of tenant TENANT, so the metrics carry its name."""
    services.tenants.create(admin, TENANT)
    owner = services.tokens.authenticate(admin_token)
    key = services.keys.create(owner, TENANT).secret
    with services.engine.connect() as connection:
        loaded = versions.current(connection, versions.AUTH)
    deadline = time.monotonic() + 1.0
    while running.gateway.keyring.version < loaded:  # the change watcher reloads within a second
        assert time.monotonic() < deadline, "the new key did not reach the gateway within 1 s"
        time.sleep(0.02)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    answer = httpx.post(f"{running.base_url}/chat/completions", json=body, headers=bearer(key))
    assert answer.status_code == 200, answer.text


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_healthz_is_open(running: RunningGateway) -> None:
    answer = httpx.get(f"{running.url}/healthz")
    assert (answer.status_code, answer.json()) == (200, {"status": "ok"})


def test_metrics_without_credentials_is_401_and_names_no_tenant(
    running: RunningGateway, traffic: None, admin_key: IssuedKey
) -> None:
    for headers in (
        {},
        bearer("wrong"),
        bearer(SCRAPE_TOKEN + "x"),
        bearer(admin_key.secret),  # an API key calls models; it does not read operations
        {"authorization": SCRAPE_TOKEN.upper()},
    ):
        answer = httpx.get(f"{running.url}/metrics", headers=headers)
        assert answer.status_code == 401, headers
        assert answer.json()["error"]["code"] == "missing_credentials"
        assert TENANT not in answer.text
        assert "lockgate_requests_total" not in answer.text


def test_metrics_with_the_scrape_token(running: RunningGateway, traffic: None) -> None:
    answer = httpx.get(f"{running.url}/metrics", headers=bearer(SCRAPE_TOKEN))
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert f'tenant="{TENANT}"' in answer.text


@pytest.mark.parametrize("role", [Role.VIEWER, Role.DEPLOYER, Role.ADMIN])
def test_metrics_with_a_platform_members_control_token(
    running: RunningGateway, traffic: None, services: Services, admin: Actor, role: Role
) -> None:
    token = token_of(services, admin, "ops-person", role)
    answer = httpx.get(f"{running.url}/metrics", headers=bearer(token))
    assert answer.status_code == 200
    assert f'tenant="{TENANT}"' in answer.text


def test_metrics_refuse_other_tenants_people_and_dead_tokens(
    running: RunningGateway, traffic: None, services: Services, admin: Actor, admin_token: str
) -> None:
    # An admin of the tenant itself is not an operator of the platform.
    owner = services.tokens.authenticate(admin_token)
    tenant_admin = token_of(services, owner, "tina", Role.ADMIN, tenant=TENANT)
    assert httpx.get(f"{running.url}/metrics", headers=bearer(tenant_admin)).status_code == 401
    # A platform viewer's revoked token stops working at once.
    viewer_token = token_of(services, admin, "vic", Role.VIEWER)
    viewer = services.tokens.authenticate(viewer_token)
    assert httpx.get(f"{running.url}/metrics", headers=bearer(viewer_token)).status_code == 200
    services.tokens.revoke(viewer, "-".join(viewer_token.split("-")[:2]))
    answer = httpx.get(f"{running.url}/metrics", headers=bearer(viewer_token))
    assert answer.status_code == 401
    assert TENANT not in answer.text
    refusal = services.trail.recent(admin, limit=1, action="auth.token")[0]
    assert (refusal["actor"], refusal["source"], refusal["after"]["reason"]) == ("vic", "ops", "revoked")


def test_readyz_gives_details_only_to_operators(
    running: RunningGateway, services: Services, admin: Actor
) -> None:
    anonymous = httpx.get(f"{running.url}/readyz")
    assert (anonymous.status_code, anonymous.json()) == (200, {"status": "ready"})
    assert httpx.get(f"{running.url}/readyz", headers=bearer("wrong")).json() == {"status": "ready"}
    expected = {
        "status": "ready",
        "store": "ok",
        "deployments": {"primary/upstream-m": "closed", "primary/upstream-other": "closed"},
    }
    assert httpx.get(f"{running.url}/readyz", headers=bearer(SCRAPE_TOKEN)).json() == expected
    viewer = token_of(services, admin, "vic", Role.VIEWER)
    assert httpx.get(f"{running.url}/readyz", headers=bearer(viewer)).json() == expected


def test_without_a_configured_token_only_platform_people_read_metrics(
    services: Services, instance: Instance, admin: Actor, stub: StubUpstream
) -> None:
    with run_server(services, instance, stub_config(("primary", stub.base_url))) as server:
        assert httpx.get(f"{server.url}/metrics").status_code == 401
        assert httpx.get(f"{server.url}/metrics", headers=bearer(SCRAPE_TOKEN)).status_code == 401
        viewer = token_of(services, admin, "vic", Role.VIEWER)
        assert httpx.get(f"{server.url}/metrics", headers=bearer(viewer)).status_code == 200


def test_the_gateway_alone_answers_only_its_scrape_token(
    instance: Instance, admin_token: str, stub: StubUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LG_TEST_SCRAPE_TOKEN", SCRAPE_TOKEN)
    config = stub_config(("primary", stub.base_url), server={"metrics_token": "${LG_TEST_SCRAPE_TOKEN}"})
    with run_gateway(instance, config) as gateway:
        # No control plane in this process: a control token means nothing here.
        assert httpx.get(f"{gateway.url}/metrics", headers=bearer(admin_token)).status_code == 401
        assert httpx.get(f"{gateway.url}/metrics", headers=bearer(SCRAPE_TOKEN)).status_code == 200
        assert httpx.get(f"{gateway.url}/readyz").json() == {"status": "ready"}
