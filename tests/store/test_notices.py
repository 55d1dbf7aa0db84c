"""Replicas sharing PostgreSQL and Redis: a change made through one reaches the other through a Redis
notice at once, and by polling the store when Redis is away, which never stops either from serving."""

from __future__ import annotations

import base64
import re
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis
import yaml

from tests.conftest import RedisSpace
from tests.support.processes import LockgateServer, StubUpstream
from tests.support.proxy import TcpProxy

pytestmark = pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)

_TOKEN = re.compile(r"control token of user 'admin' \(shown once\): (lgc-\S+)")
_KEY = re.compile(r"admin key \(shown once, store it now\): (lg-\S+)")


class Site:
    """Two ``lockgate serve`` replicas on one store and one Redis, as behind a load balancer."""

    def __init__(self, a: LockgateServer, b: LockgateServer) -> None:
        self.a, self.b = a, b
        output = a.output()
        token, key = _TOKEN.search(output), _KEY.search(output)
        assert token is not None and key is not None
        self.token, self.admin_key = token.group(1), key.group(1)

    def create_key(self, via: LockgateServer) -> dict[str, Any]:
        answer = httpx.post(
            f"{via.url}/api/v1/tenants/default/keys", json={"name": "app"}, headers=self._control()
        )
        assert answer.status_code == 201, answer.text
        created: dict[str, Any] = answer.json()
        return created

    def revoke_key(self, via: LockgateServer, key_id: str) -> None:
        answer = httpx.delete(f"{via.url}/api/v1/tenants/default/keys/{key_id}", headers=self._control())
        assert answer.status_code == 200, answer.text

    def _control(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}


def status_with(server: LockgateServer, key: str) -> int:
    return httpx.get(f"{server.url}/v1/models", headers={"authorization": f"Bearer {key}"}).status_code


def chat(server: LockgateServer, key: str) -> int:
    answer = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )
    return answer.status_code


def within(seconds: float, condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def subscribers(space: RedisSpace) -> int:
    client = redis.Redis.from_url(space.url)
    try:
        [(_, count)] = client.pubsub_numsub(f"{space.prefix}changes")
        return int(count)
    finally:
        client.close()


@pytest.fixture
def start_site(
    database_url: str, tmp_path: Path, stub: StubUpstream
) -> Iterator[Callable[[str, dict[str, Any]], Site]]:
    started: list[LockgateServer] = []

    def start(redis_url: str, sections: dict[str, Any]) -> Site:
        config = tmp_path / "lockgate.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "providers": {"stub": {"kind": "openai", "base_url": stub.base_url}},
                    "models": [{"name": "m", "deployments": [{"provider": "stub", "model": "s"}]}],
                    **sections,
                }
            )
        )
        shared = {
            "LOCKGATE_DATABASE_URL": database_url,
            "LOCKGATE_KEY_PEPPER": secrets.token_hex(32),
            "LOCKGATE_SIGNING_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "LG_TEST_REDIS_URL": redis_url,
        }
        for name in ("a", "b"):  # a first: it bootstraps the admin
            (tmp_path / name).mkdir()
            env = {**shared, "LOCKGATE_DATA_DIR": str(tmp_path / name / ".lockgate")}
            started.append(LockgateServer(tmp_path / name, config, env).start())
        return Site(*started)

    yield start
    for server in started:
        assert server.stop()


def test_a_revocation_through_one_replica_reaches_the_other_through_redis_at_once(
    start_site: Callable[[str, dict[str, Any]], Site], redis_space: RedisSpace
) -> None:
    # Polling so slow that only a notice explains a change arriving within a second.
    site = start_site(
        redis_space.url,
        {
            "server": {"change_poll_interval": 120},
            "redis": {"url": "${LG_TEST_REDIS_URL}", "prefix": redis_space.prefix},
        },
    )
    assert within(10, lambda: subscribers(redis_space) == 2), "both replicas subscribe"

    created = site.create_key(via=site.a)
    assert within(1.0, lambda: status_with(site.b, created["key"]) == 200), "b learns of the new key"
    assert chat(site.b, created["key"]) == 200

    site.revoke_key(via=site.a, key_id=created["id"])
    assert within(1.0, lambda: status_with(site.b, created["key"]) == 401), "b refuses the revoked key"
    assert status_with(site.a, created["key"]) == 401


def test_with_redis_unreachable_replicas_serve_and_converge_by_polling(
    start_site: Callable[[str, dict[str, Any]], Site], redis_space: RedisSpace
) -> None:
    target = urlsplit(redis_space.url)
    with TcpProxy(target.hostname or "127.0.0.1", target.port or 6379) as proxy:
        credentials = target.netloc.rpartition("@")[0]
        where = f"{proxy.host}:{proxy.port}"
        proxied = target._replace(netloc=f"{credentials}@{where}" if credentials else where).geturl()
        site = start_site(proxied, {"redis": {"url": "${LG_TEST_REDIS_URL}", "prefix": redis_space.prefix}})
        assert within(10, lambda: subscribers(redis_space) == 2), "both replicas subscribe"

        proxy.cut()
        assert within(5, lambda: subscribers(redis_space) == 0), "the cut drops the subscriptions"
        for replica in (site.a, site.b):
            assert chat(replica, site.admin_key) == 200
        created = site.create_key(via=site.a)  # the control API does not wait for Redis
        assert within(10, lambda: status_with(site.b, created["key"]) == 200), "b polls the new key"
        site.revoke_key(via=site.a, key_id=created["id"])
        assert within(10, lambda: status_with(site.b, created["key"]) == 401), "b polls the revocation"
        assert chat(site.b, site.admin_key) == 200

        time.sleep(3)  # a few reconnection attempts
        proxy.restore()
        assert within(30, lambda: subscribers(redis_space) == 2), "both replicas subscribe again"

        for replica in (site.a, site.b):
            output = replica.output()
            # One warning when Redis went away and one when it came back, not one per reconnection.
            assert output.count("Redis (change notices) unreachable") == 1
            assert output.count("Redis (change notices) reachable again") == 1
            assert "Traceback" not in output
        assert site.a.output().count("Redis (publishing change notices) unreachable") == 1
