"""Every request is accounted for, written off the request path, and none is lost on a graceful stop."""

from __future__ import annotations

import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy as sa

from lockgate.instance import Instance
from lockgate.security.apikeys import IssuedKey
from lockgate.store.tables import request_content, request_log
from tests.support.gateway import run_gateway, stub_config
from tests.support.processes import LockgateServer, StubUpstream, stub_config_file


def rows(instance: Instance) -> dict[str, dict[str, Any]]:
    with instance.engine.connect() as connection:
        return {r.id: dict(r._mapping) for r in connection.execute(sa.select(request_log))}


def test_records_carry_usage_cost_and_identity(
    instance: Instance, admin_key: IssuedKey, stub: StubUpstream
) -> None:
    with run_gateway(instance, stub_config(("primary", stub.base_url))) as running:
        client = openai.OpenAI(base_url=running.base_url, api_key=admin_key.secret, max_retries=0)
        ok = client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "count these words"}]
        )
        streamed = client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "stream me"}], stream=True
        )
        list(streamed.parse())
        refused = httpx.post(f"{running.base_url}/chat/completions", json={"model": "m", "messages": "x"})
    # Leaving the context stopped the gateway, which drains the writer.
    records = rows(instance)
    usage = ok.parse().usage
    assert usage is not None
    record = records[ok.headers["x-request-id"]]
    assert record["status_code"] == 200
    assert (record["input_tokens"], record["output_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert record["usage_estimated"] is False
    assert record["cost_usd"] == pytest.approx(
        (usage.prompt_tokens * 1.0 + usage.completion_tokens * 2.0) / 1e6
    )
    assert record["key_id"] == admin_key.info.id
    assert record["model"] == "m"
    assert record["deployment"] == "primary/upstream-m"
    assert record["latency_ms"] > 0
    assert record["attempts"] == 1

    stream_record = records[streamed.headers["x-request-id"]]
    assert stream_record["stream"] is True
    assert stream_record["ttft_ms"] is not None
    assert 0 < stream_record["ttft_ms"] <= stream_record["latency_ms"]
    assert stream_record["output_tokens"] == 3  # "echo: stream me", counted by the upstream

    # A refusal before any model is chosen: 400 at parse time is answered but has no tenant to bill.
    assert refused.status_code == 400
    with instance.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(request_content)).scalar() == 0


def test_unauthenticated_requests_are_recorded_without_identity(
    instance: Instance, stub: StubUpstream
) -> None:
    with run_gateway(instance, stub_config(("primary", stub.base_url))) as running:
        answer = httpx.post(
            f"{running.base_url}/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        )
    record = rows(instance)[answer.headers["x-request-id"]]
    assert (record["status_code"], record["error_type"]) == (401, "Unauthenticated")
    assert record["tenant_id"] is None
    assert record["key_id"] is None


def test_content_is_stored_only_when_configured_and_expires(
    instance: Instance, admin_key: IssuedKey, stub: StubUpstream
) -> None:
    config = stub_config(
        ("primary", stub.base_url), request_log={"store_content": True, "content_retention_days": 2}
    )
    with run_gateway(instance, config) as running:
        client = openai.OpenAI(base_url=running.base_url, api_key=admin_key.secret, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "remember me"}]
        )
    with instance.engine.connect() as connection:
        content = connection.execute(sa.select(request_content)).one()
    assert content.request_id == raw.headers["x-request-id"]
    assert "remember me" in content.request_body
    assert "echo: remember me" in content.response_body
    expected = datetime.now(UTC) + timedelta(days=2)
    assert abs((content.expires_at - expected).total_seconds()) < 60


def test_graceful_shutdown_under_load_loses_no_record(database_url: str, tmp_path: Path) -> None:
    stub = StubUpstream("slow", latency_ms=1000).start()
    config = stub_config_file(tmp_path, stub)
    server = LockgateServer(tmp_path, config, {"LOCKGATE_DATABASE_URL": database_url}).start()
    key = server.output().split("store it now): ")[1].split()[0]
    answered: list[str] = []
    failures: list[str] = []

    def call() -> None:
        try:
            answer = httpx.post(
                f"{server.url}/v1/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
                headers={"authorization": f"Bearer {key}"},
                timeout=30,
            )
            answered.append(answer.headers["x-request-id"])
            assert answer.status_code == 200
        except httpx.TransportError as exc:
            failures.append(repr(exc))

    try:
        threads = [threading.Thread(target=call) for _ in range(40)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(stub.received()) < 40:  # wait until all 40 are in flight, held by the slow upstream
            assert time.monotonic() < deadline, "requests never reached the upstream"
            time.sleep(0.02)
        assert server.stop(signal.SIGTERM)
        for t in threads:
            t.join(30)
    finally:
        stub.kill()
    assert failures == []
    assert len(answered) == 40
    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        recorded = set(connection.execute(sa.select(request_log.c.id)).scalars())
    engine.dispose()
    assert set(answered) <= recorded
