"""Graceful drain: on SIGTERM a real ``lockgate serve`` turns ``/readyz`` to 503 first, keeps answering
for ``--drain-seconds``, finishes what is in flight, and only then stops."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.processes import LockgateServer, StubUpstream, stub_config_file

DRAIN = 4.0
UPSTREAM_LATENCY_MS = 2000


def chat(url: str, key: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )


def readiness(url: str) -> httpx.Response:
    return httpx.get(f"{url}/readyz", timeout=5)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_turns_readiness_false_first_while_requests_complete(tmp_path: Path, workers: int) -> None:
    stub = StubUpstream("slow", latency_ms=UPSTREAM_LATENCY_MS).start()
    env = {"LOCKGATE_DATABASE_URL": "", "LOCKGATE_DRAIN_SECONDS": str(DRAIN)}
    server = LockgateServer(tmp_path, stub_config_file(tmp_path, stub), env, workers=workers).start()
    try:
        key = server.output().split("store it now): ")[1].split()[0]
        assert readiness(server.url).status_code == 200
        answers: list[httpx.Response] = []
        calls = [threading.Thread(target=lambda: answers.append(chat(server.url, key))) for _ in range(4)]
        for call in calls:
            call.start()
        deadline = time.monotonic() + 20
        while len(stub.received()) < 4:  # all four are in flight, held by the slow upstream
            assert time.monotonic() < deadline, "requests never reached the upstream"
            time.sleep(0.02)

        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 3  # uvicorn's supervisor passes the signal on within 0.5 s
        while (ready := readiness(server.url)).status_code == 200:
            assert time.monotonic() < deadline, "/readyz stayed 200 after SIGTERM"
            time.sleep(0.05)
        assert (ready.status_code, ready.json()) == (503, {"status": "draining"})
        assert ready.headers["connection"] == "close"
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200  # alive, just not ready
        late = chat(server.url, key)  # a balancer that has not seen the 503 yet still gets answers
        assert late.status_code == 200
        assert late.headers["connection"] == "close"

        for call in calls:
            call.join(30)
        assert [a.status_code for a in answers] == [200] * 4
        code = server.proc.wait(60)
        server.proc = None
        assert code in (0, -signal.SIGTERM)
        assert "Application shutdown complete." in server.output()
        with pytest.raises(httpx.TransportError):
            readiness(server.url)
    finally:
        server.stop(signal.SIGKILL)
        stub.kill()
