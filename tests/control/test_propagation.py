"""A pointer change reaches a separate gateway process within one second, with no failed request.

Measured against PostgreSQL (and SQLite): the services of a second server on the same store move the
pointer in this process while ``lockgate serve`` (after ``lockgate migrate``), in a process of its own,
answers traffic on the route without pause.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from lockgate.control.prompt_spec import PromptSpec
from lockgate.control.registry import ModelCard
from lockgate.control.releases import ReleaseRequest
from lockgate.instance import load_config, open_instance
from lockgate.security.rbac import Role
from lockgate.services import build_services
from tests.support.people import person
from tests.support.processes import LockgateServer, StubUpstream, stub_config_file


def test_pointer_change_reaches_another_process_within_a_second(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = StubUpstream().start()
    config = stub_config_file(tmp_path, stub)
    data = tmp_path / ".lockgate"
    env = {"LOCKGATE_DATABASE_URL": database_url, "LOCKGATE_DATA_DIR": str(data)}
    for name in ("LOCKGATE_KEY_PEPPER", "LOCKGATE_SIGNING_KEY"):
        monkeypatch.delenv(name, raising=False)
    server = LockgateServer(tmp_path, config, env).start()
    try:
        # A second server process on the same store (as a second replica would be) moves the pointer.
        monkeypatch.setenv("LOCKGATE_DATABASE_URL", database_url)
        instance = open_instance(data)
        services = build_services(instance, load_config(config))
        token = server.output().split("control token of user 'admin' (shown once): ")[1].split()[0]
        admin = services.tokens.authenticate(token)
        ed = person(services, admin, "ed", Role.EDITOR)
        card = {"name": "llm", "version": "1", "gateway_model": "m", "license": "x", "intended_use": "x"}
        services.registry.register(ed, "default", ModelCard.model_validate({**card, "owner_team": "t"}))
        releases = []
        for version in ("1.0.0", "1.0.1"):
            spec = {
                "name": "qa",
                "version": version,
                "messages": [{"role": "user", "content": f"v{version} {{{{ q }}}}"}],
                "variables": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
                "settings": {"model": "llm:1"},
            }
            services.prompts.push(ed, "default", PromptSpec.model_validate(spec))
            request = ReleaseRequest(route="qa", prompt=f"qa@{version}")
            releases.append(services.releases.create(ed, "default", request).id)
        services.environments.point(ed, "default", "qa", "dev", releases[0])
        key = services.keys.create(admin, "default", name="dev", environment="dev").secret

        served: list[str] = []
        failures: list[str] = []
        stop = threading.Event()

        def traffic() -> None:
            with httpx.Client(timeout=10) as client:
                while not stop.is_set():
                    answer = client.post(
                        f"{server.url}/v1/chat/completions",
                        json={"model": "route:qa", "messages": [], "variables": {"q": "hi"}},
                        headers={"authorization": f"Bearer {key}"},
                    )
                    if answer.status_code == 200:
                        served.append(answer.headers["x-lockgate-release"])
                    elif served:  # before the first 200 the new key may still be on its way
                        failures.append(f"{answer.status_code} {answer.text}")

        worker = threading.Thread(target=traffic)
        worker.start()
        deadline = time.monotonic() + 5
        while not served and time.monotonic() < deadline:
            time.sleep(0.02)
        assert served, "the gateway never served the first release"

        services.environments.point(ed, "default", "qa", "dev", releases[1])
        moved = time.monotonic()
        while served[-1] != releases[1]:
            assert time.monotonic() - moved < 1.0, "the second process did not switch within 1 s"
            time.sleep(0.005)
        switch = time.monotonic() - moved
        time.sleep(0.3)
        stop.set()
        worker.join(10)
        assert failures == []
        # Once switched, it stays switched: no request went back to the old release.
        first_new = served.index(releases[1])
        assert set(served[first_new:]) == {releases[1]}
        assert switch < 1.0
        instance.engine.dispose()
    finally:
        assert server.stop()
        stub.kill()
