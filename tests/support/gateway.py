"""Run a gateway in a background thread of the test process, on a real port, with a real store."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from lockgate.config.loader import LoadedConfig, load_mapping
from lockgate.gateway.http import create_app
from lockgate.gateway.runtime import Gateway
from lockgate.instance import Instance
from lockgate.server.app import server_app
from lockgate.services import Services
from tests.support.processes import free_port


def stub_config(*upstreams: tuple[str, str], **sections: Any) -> LoadedConfig:
    """A config with model ``m`` on the given (name, base_url) upstreams, tried in the order given.

    The first upstream is model ``m``'s deployment; each further one backs a fallback model.
    """
    providers = {name: {"kind": "openai", "base_url": url} for name, url in upstreams}
    first, *rest = upstreams
    models: list[dict[str, Any]] = [
        {
            "name": "m",
            "deployments": [
                {
                    "provider": first[0],
                    "model": "upstream-m",
                    "timeout": 5,
                    "input_price_per_1m": 1.0,
                    "output_price_per_1m": 2.0,
                }
            ],
            "fallbacks": [f"m-{name}" for name, _ in rest],
        },
        *(
            {
                "name": f"m-{name}",
                "deployments": [{"provider": name, "model": f"upstream-{name}", "timeout": 5}],
            }
            for name, _ in rest
        ),
        {"name": "other", "deployments": [{"provider": first[0], "model": "upstream-other"}]},
    ]
    data: dict[str, Any] = {
        "providers": providers,
        "models": models,
        "routing": {"retries": 1, "backoff_initial": 0.01, "backoff_max": 0.05, "cooldown": 1.0},
    }
    data.update(sections)
    return load_mapping(data)


@dataclass
class RunningGateway:
    url: str
    gateway: Gateway

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"


@contextmanager
def run_gateway(instance: Instance, config: LoadedConfig) -> Iterator[RunningGateway]:
    """The gateway alone (no control API), on a real port."""
    gateway = Gateway(config, instance.engine, instance.pepper)
    with _serve(create_app(gateway)) as url:
        yield RunningGateway(url, gateway)


@contextmanager
def run_server(services: Services, instance: Instance, config: LoadedConfig) -> Iterator[RunningGateway]:
    """The whole server as `lockgate serve` builds it (gateway, control API, eval worker), on a real port."""
    gateway = Gateway(config, instance.engine, instance.pepper)
    with _serve(server_app(services, gateway)) as url:
        yield RunningGateway(url, gateway)


@contextmanager
def _serve(app: ASGIApp) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("gateway did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
