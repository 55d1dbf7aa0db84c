"""Two servers on one PostgreSQL store: one drives a rollout; killed, the other takes over where it was.

Two ``lockgate serve`` processes, as on two hosts (a data directory each, the key pepper and signing key
shared through the environment), serve the same store. The rollout's lease names the one process that
drives it; that process is killed with SIGKILL, so it never hands the lease back. Once the lease runs
out (15 s) the other process takes it within a tick of the controller and carries on from the stage
the store recorded, judging the traffic sent to it until the candidate is the release.
"""

from __future__ import annotations

import base64
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from lockgate.store.tables import rollouts
from tests.rollouts.test_simulation import (  # noqa: F401 - the fixture
    Traffic,
    Upstreams,
    open_site,
    upstreams,
    wait_for,
)
from tests.support.processes import LockgateServer

LEASE = timedelta(seconds=15)  # the controller's lease
TICK = timedelta(seconds=1)  # how often a controller looks for rollouts to take
CANARY: dict[str, Any] = {
    "strategy": "canary",
    "canary": {
        "stages": [
            {"weight": 20, "min_duration": 0, "min_requests": 30},
            {"weight": 50, "min_duration": 0, "min_requests": 30},
            {"weight": 100},
        ]
    },
    "analysis": {"interval": 1, "min_requests": 30},
}


@dataclass(frozen=True, slots=True)
class Lease:
    owner: str | None
    until: datetime | None
    stage: int
    status: str

    @property
    def pid(self) -> int | None:
        """The process named by the owner, ``host:pid:nonce``."""
        return int(self.owner.split(":")[1]) if self.owner else None


class Store:
    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url)

    def lease(self, rollout_id: str) -> Lease:
        c = rollouts.c
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(c.lease_owner, c.lease_until, c.stage, c.status).where(c.id == rollout_id)
            ).one()
        return Lease(row.lease_owner, row.lease_until, int(row.stage), row.status)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = Store(database_url)
    yield opened
    opened.engine.dispose()


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_a_killed_controller_hands_its_rollout_to_the_other_server_at_its_stage(
    database_url: str,
    tmp_path: Path,
    upstreams: Upstreams,  # noqa: F811
    store: Store,
) -> None:
    config = upstreams.config(tmp_path)
    shared = {
        "LOCKGATE_DATABASE_URL": database_url,
        "LOCKGATE_KEY_PEPPER": secrets.token_hex(32),
        "LOCKGATE_SIGNING_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
    }
    servers: list[LockgateServer] = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        env = {**shared, "LOCKGATE_DATA_DIR": str(tmp_path / name / ".lockgate")}
        servers.append(LockgateServer(tmp_path / name, config, env).start())
    site = open_site(servers[0], upstreams)
    try:
        baseline, candidate = site.roll_out("failover", CANARY)
        rollout_id = site.rollout("failover")["id"]

        owner = wait_for(lambda: store.lease(rollout_id).owner, 10, "a controller took the rollout")
        by_pid = {server.proc.pid: server for server in servers if server.proc is not None}
        driver = by_pid[int(owner.split(":")[1])]
        survivor = next(server for server in servers if server is not driver)
        # Exactly one drives it: the lease stays with that process while both run and renew.
        for _ in range(10):
            assert store.lease(rollout_id).owner == owner
            time.sleep(0.2)

        # The first stage passes on traffic through the survivor; then all is quiet at stage 1.
        with Traffic(survivor.url, site.key, "failover"):
            wait_for(lambda: store.lease(rollout_id).stage == 1, 30, "the rollout's second stage")
        before = store.lease(rollout_id)
        assert (before.owner, before.status) == (owner, "running")
        assert before.until is not None and before.until > datetime.now(UTC)

        assert driver.proc is not None
        driver.proc.send_signal(signal.SIGKILL)  # no shutdown, no hand-back of the lease
        driver.proc.wait(10)
        driver.proc = None

        def taken() -> Lease | None:
            lease = store.lease(rollout_id)
            return lease if lease.owner not in (None, owner) else None

        took = wait_for(taken, (LEASE + 2 * TICK).total_seconds() + 1, "the other server took the lease")
        seen = datetime.now(UTC)
        assert survivor.proc is not None and took.pid == survivor.proc.pid
        assert seen >= before.until, "the lease was taken before it ran out"
        assert seen <= before.until + TICK + timedelta(seconds=1)
        assert (took.stage, took.status) == (1, "running")  # where the killed server left it

        there = site.on(survivor)
        with Traffic(survivor.url, site.key, "failover") as traffic:
            ended = there.settled("failover", 60)
        assert ended["status"] == "promoted", ended["reason"]
        assert {a.status for a in traffic.answers} == {200}
        assert there.serving("failover") == candidate
        # It went on from stage 1: no analysis after the takeover went back to the first stage.
        after = [a for a in ended["analyses"] if datetime.fromisoformat(a["at"]) >= seen]
        assert after and {a["stage"] for a in after} == {1}
        records = there.rollout_evidence(candidate)  # the survivor signs with the same key
        assert [r["rollout"]["event"] for r in records if r["rollout"]["event"] != "analysis"] == [
            "start",
            "stage",
            "promote",
        ]
        assert records[-1]["rollout"]["baseline_release_id"] == baseline
        there.close()
    finally:
        site.close()
        for server in servers:
            if server.proc is not None:
                assert server.stop(), server.output()[-3000:]
