"""Killing the primary upstream under load: no client sees an error, and the circuit opens then heals."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import openai
import pytest

from lockgate.config.loader import LoadedConfig
from lockgate.instance import Instance
from lockgate.security.apikeys import IssuedKey
from tests.support.gateway import RunningGateway, run_gateway, stub_config
from tests.support.processes import StubUpstream

PRIMARY = "primary/upstream-m"
SECONDARY = "secondary/upstream-secondary"
SCRAPE = {"authorization": "Bearer scrape-failover"}


@pytest.fixture
def upstreams() -> Iterator[tuple[StubUpstream, StubUpstream]]:
    # A little latency keeps requests in flight on the primary at the moment it dies.
    primary = StubUpstream("primary", latency_ms=20).start()
    secondary = StubUpstream("secondary", latency_ms=20).start()
    yield primary, secondary
    primary.kill()
    secondary.kill()


@pytest.fixture(autouse=True)
def metrics_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LG_TEST_METRICS_TOKEN", "scrape-failover")


def two_upstreams(primary: StubUpstream, secondary: StubUpstream) -> LoadedConfig:
    return stub_config(
        ("primary", primary.base_url),
        ("secondary", secondary.base_url),
        server={"metrics_token": "${LG_TEST_METRICS_TOKEN}"},
    )


def circuit_state(running: RunningGateway, deployment: str) -> str:
    state: str = httpx.get(f"{running.url}/readyz", headers=SCRAPE).json()["deployments"][deployment]
    return state


def test_killing_the_primary_mid_traffic_falls_back_with_zero_errors(
    instance: Instance, admin_key: IssuedKey, upstreams: tuple[StubUpstream, StubUpstream]
) -> None:
    primary, secondary = upstreams
    config = two_upstreams(primary, secondary)
    with run_gateway(instance, config) as running:
        client = openai.OpenAI(base_url=running.base_url, api_key=admin_key.secret, max_retries=0)
        served: Counter[str] = Counter()
        errors: list[str] = []
        stop = threading.Event()

        def traffic(worker: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    if i % 3 == 0:
                        chunks = client.chat.completions.create(
                            model="m", messages=[{"role": "user", "content": f"s{worker}-{i}"}], stream=True
                        )
                        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                        assert text == f"echo: s{worker}-{i}"
                        served["stream"] += 1
                    else:
                        raw = client.chat.completions.with_raw_response.create(
                            model="m", messages=[{"role": "user", "content": f"q{worker}-{i}"}]
                        )
                        assert raw.parse().choices[0].message.content == f"echo: q{worker}-{i}"
                        served[raw.headers["x-lockgate-deployment"]] += 1
                except Exception as exc:
                    errors.append(repr(exc))

        workers = [threading.Thread(target=traffic, args=(w,)) for w in range(4)]
        for w in workers:
            w.start()
        time.sleep(1.0)
        before_kill = served[PRIMARY]
        primary.kill()
        time.sleep(0.5)
        assert circuit_state(running, PRIMARY) in ("open", "half_open")
        time.sleep(1.0)
        stop.set()
        for w in workers:
            w.join(30)

        assert errors == []
        assert before_kill > 0
        assert served[SECONDARY] > 0
        metrics = httpx.get(f"{running.url}/metrics", headers=SCRAPE).text
        assert f'lockgate_circuit_open{{deployment="{PRIMARY}"}} 1.0' in metrics

        # Bring the primary back on the same port: after the cooldown a probe closes the circuit.
        primary.start()
        time.sleep(config.gateway.routing.cooldown + 0.2)
        deployments = [
            client.chat.completions.with_raw_response.create(
                model="m", messages=[{"role": "user", "content": "back?"}]
            ).headers["x-lockgate-deployment"]
            for _ in range(3)
        ]
        assert deployments == [PRIMARY] * 3
        assert circuit_state(running, PRIMARY) == "closed"
        metrics = httpx.get(f"{running.url}/metrics", headers=SCRAPE).text
        assert f'lockgate_circuit_open{{deployment="{PRIMARY}"}} 0.0' in metrics


def test_stream_falls_back_when_the_primary_fails_before_the_first_byte(
    instance: Instance, admin_key: IssuedKey, upstreams: tuple[StubUpstream, StubUpstream]
) -> None:
    primary, secondary = upstreams
    primary.script(fail=[{"status": 503}, {"status": 503}])
    config = two_upstreams(primary, secondary)
    with run_gateway(instance, config) as running:
        client = openai.OpenAI(base_url=running.base_url, api_key=admin_key.secret, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "x y"}], stream=True
        )
        assert raw.headers["x-lockgate-deployment"] == SECONDARY
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == "echo: x y"
    assert len(primary.received()) == 2
