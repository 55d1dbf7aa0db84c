"""A rollout on a live server: the whole server in-thread on the stub upstream, driven through the services
(people invited with their roles) and called with the official openai SDK.

The route's prompt answers ``echo: <version>: <q>`` from the stub, so each release's answers say which
release gave them. The server's own rollout controller runs; tests that must not be overtaken by it give
their strategy a long ``analysis.interval`` (it analyses once on claiming the rollout, with no traffic
yet, and holds).

Import the fixtures (``live``, and ``config`` for the services) into a test module with
``from tests.rollouts.live import live_fixture, services_config  # noqa: F401``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lockgate.config.loader import LoadedConfig
from lockgate.control.prompt_spec import PromptSpec
from lockgate.control.registry import ModelCard
from lockgate.control.releases import ReleaseRequest
from lockgate.instance import Instance
from lockgate.rollouts.spec import parse_strategy
from lockgate.rollouts.store import Rollout
from lockgate.security.rbac import Actor, Role
from lockgate.server.bootstrap import Bootstrap
from lockgate.services import Services
from lockgate.store import versions
from tests.support.gateway import RunningGateway, run_server, stub_config
from tests.support.people import person
from tests.support.processes import StubUpstream

ROUTE = "answers"
METRICS_TOKEN = "scrape-rollouts"
T = TypeVar("T")

# No metric can fail a candidate: these tests are about traffic, not verdicts (local latencies jitter).
LOOSE = {
    "max_error_rate_ratio": 1000,
    "max_error_rate_increase": 1,
    "max_p95_latency_ratio": 1000,
    "max_cost_ratio": 1000,
    "max_contract_violation_increase": 1,
    "max_quality_drop": 1,
}


def canary(*weights: float, interval: float = 3600, **analysis: Any) -> dict[str, Any]:
    """A canary whose stages never end by themselves (an hour, a million requests) and never fail."""
    stages = [{"weight": w, "min_duration": 3600, "min_requests": 1_000_000} for w in weights]
    return {
        "strategy": "canary",
        "canary": {"stages": [*stages, {"weight": 100}]},
        "analysis": {"interval": interval, "thresholds": LOOSE, **analysis},
    }


def shadow(share: float = 100, **analysis: Any) -> dict[str, Any]:
    """A shadow run that never completes by itself and never fails."""
    return {
        "strategy": "shadow",
        "shadow": {"share": share, "min_duration": 3600, "min_requests": 1_000_000},
        "analysis": {"interval": 3600, "thresholds": LOOSE, **analysis},
    }


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = 10.0) -> T:
    """Poll ``probe`` until it returns something other than None or False; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None and found is not False:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.05)


@dataclass
class Live:
    services: Services
    instance: Instance
    running: RunningGateway
    stub: StubUpstream
    admin: Actor
    editor: Actor
    approver: Actor
    deployer: Actor
    key: str
    """An API key of tenant ``default`` (no restrictions), for route traffic."""
    clients: dict[str, openai.OpenAI] = field(default_factory=dict)

    # --- releases and rollouts -------------------------------------------------------------------

    def release(self, version: str) -> str:
        """A release of ROUTE whose prompt is ``<version>: {{ q }}`` (no output contract)."""
        spec = {
            "name": ROUTE,
            "version": version,
            "messages": [{"role": "user", "content": f"{version}: {{{{ q }}}}"}],
            "variables": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
            "settings": {"model": "answers-llm:1"},
        }
        self.services.prompts.push(self.editor, "default", PromptSpec.model_validate(spec))
        request = ReleaseRequest(route=ROUTE, prompt=f"{ROUTE}@{version}")
        return self.services.releases.create(self.editor, "default", request).id

    def ship(self, release_id: str) -> None:
        """dev -> stage -> prod (approved); into a prod with a strategy, this starts a rollout."""
        environments = self.services.environments
        environments.point(self.editor, "default", ROUTE, "dev", release_id)
        environments.promote(self.deployer, "default", ROUTE, "stage")
        environments.approve(self.approver, "default", release_id, "prod")
        environments.promote(self.deployer, "default", ROUTE, "prod")

    def roll_out(self, strategy: dict[str, Any]) -> tuple[str, str, Rollout]:
        """Ship 1.0.0 to prod, give prod ``strategy``, ship 1.0.1: (baseline, candidate, its rollout)."""
        baseline, candidate = self.release("1.0.0"), self.release("1.0.1")
        self.ship(baseline)
        self.strategy(strategy)
        self.ship(candidate)
        rollout = self.rollout()
        assert (rollout.status, rollout.candidate_release_id) == ("running", candidate)
        self.settle()
        return baseline, candidate, rollout

    def strategy(self, raw: dict[str, Any]) -> None:
        spec = parse_strategy(raw, "test")
        self.services.rollouts.set_strategy(self.admin, "default", ROUTE, "prod", spec)

    def rollout(self) -> Rollout:
        found = self.services.rollouts.store.latest(self.tenant_id, ROUTE, "prod")
        assert found is not None
        return found

    @property
    def tenant_id(self) -> str:
        return self.services.tenants.get("default").id

    def settle(self) -> None:
        """Wait until the gateway serves every key and pointer (and rollout) in the store."""
        with self.instance.engine.connect() as connection:
            auth = versions.current(connection, versions.AUTH)
            routes = versions.current(connection, versions.ROUTES)
        gateway = self.running.gateway
        wait_for(
            lambda: gateway.keyring.version >= auth and gateway.routes.version >= routes,
            "the gateway reloaded keys and routes",
            timeout=5,
        )

    # --- traffic ---------------------------------------------------------------------------------

    def client(self, key: str | None = None) -> openai.OpenAI:
        key = key or self.key
        if key not in self.clients:
            self.clients[key] = openai.OpenAI(base_url=self.running.base_url, api_key=key, max_retries=0)
        return self.clients[key]

    def ask(
        self,
        q: str = "hello",
        *,
        user: str | None = None,
        session: str | None = None,
        key: str | None = None,
    ) -> Any:
        """One route call; the SDK's raw response (``.headers``, ``.http_response``, ``.parse()``)."""
        extra: dict[str, Any] = {"variables": {"q": q}}
        if user is not None:
            extra["user"] = user
        return self.client(key).chat.completions.with_raw_response.create(
            model=f"route:{ROUTE}",
            messages=[],
            extra_body=extra,
            extra_headers={"x-lockgate-session": session} if session is not None else None,
        )

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """/metrics, read with the scrape token: (sample name, sorted labels) -> value."""
        text = httpx.get(
            f"{self.running.url}/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}
        ).text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }


def live_config(stub_url: str) -> LoadedConfig:
    """The server's config: no gates required, a scrape token, request content stored (for capture)."""
    return stub_config(
        ("primary", stub_url),
        control={"gates_required": False},
        server={"metrics_token": "${LG_TEST_ROLLOUT_METRICS}"},
        request_log={"store_content": True},
    )


@pytest.fixture(name="config")
def services_config() -> LoadedConfig:
    """The services' config: like the server's, stage and prod need no gate."""
    return stub_config(("primary", "http://127.0.0.1:9/v1"), control={"gates_required": False})


@pytest.fixture(name="live")
def live_fixture(
    services: Services,
    instance: Instance,
    first_start: Bootstrap,
    admin: Actor,
    stub: StubUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Live]:
    monkeypatch.setenv("LG_TEST_ROLLOUT_METRICS", METRICS_TOKEN)
    editor = person(services, admin, "erin", Role.EDITOR)
    approver = person(services, admin, "april", Role.APPROVER)
    deployer = person(services, admin, "dan", Role.DEPLOYER)
    services.registry.register(
        editor,
        "default",
        ModelCard(
            name="answers-llm",
            version="1",
            gateway_model="m",
            license="apache-2.0",
            intended_use="tests",
            owner_team="qa",
        ),
    )
    key = services.keys.create(admin, "default", name="app").secret
    with run_server(services, instance, live_config(stub.base_url)) as running:
        site = Live(services, instance, running, stub, admin, editor, approver, deployer, key)
        site.settle()
        yield site
        for client in site.clients.values():
            client.close()
