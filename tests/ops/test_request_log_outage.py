"""The request log rides out a PostgreSQL outage: the gateway keeps answering from memory, records wait in
a bounded buffer and are all written when the store returns; past the bound they are dropped and counted.

The store goes away through a TCP proxy (tests/support/proxy.py) between lockgate and PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy as sa
import yaml
from prometheus_client.parser import text_string_to_metric_families

from lockgate.config.schema import RequestLogConfig
from lockgate.instance import Instance
from lockgate.ops.records import RequestRecord
from lockgate.ops.request_log import RequestLog
from lockgate.store.database import open_engine
from lockgate.store.tables import request_log
from tests.support.processes import LockgateServer, StubUpstream
from tests.support.proxy import TcpProxy

pytestmark = pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)

SCRAPE_TOKEN = "outage-scrape-token"
OUTAGE_SECONDS = 30


@pytest.fixture
def proxy(database_url: str) -> Iterator[TcpProxy]:
    url = sa.make_url(database_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as opened:
        yield opened


def through(database_url: str, proxy: TcpProxy) -> str:
    """The same database, reached through the proxy."""
    url = sa.make_url(database_url).set(host=proxy.host, port=proxy.port)
    return url.render_as_string(hide_password=False)


def logged_ids(database_url: str) -> list[str]:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(sa.select(request_log.c.id)).scalars())
    finally:
        engine.dispose()


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {seconds} s"
        time.sleep(0.1)


def record(request_id: str) -> RequestRecord:
    return RequestRecord(
        id=request_id,
        created_at=datetime.now(UTC),
        endpoint="chat.completions",
        stream=False,
        status_code=200,
        latency_ms=1.0,
    )


# --- the writer alone ---------------------------------------------------------------------------------


def test_records_wait_for_an_unreachable_store_and_are_all_written_when_it_returns(
    instance: Instance, database_url: str, proxy: TcpProxy
) -> None:
    dropped: list[tuple[str, int]] = []
    pending: list[int] = []
    engine = open_engine(through(database_url, proxy))
    writer = RequestLog(
        engine,
        RequestLogConfig(batch_size=100, flush_interval=0.05),
        on_dropped=lambda reason, count: dropped.append((reason, count)),
        on_pending=pending.append,
    )
    writer.start()
    try:
        writer.submit(record("req_before"))
        wait_for(lambda: writer.written == 1, 10, "the first record written")
        proxy.cut()
        ids = [f"req_{i}" for i in range(350)]  # several batches
        for request_id in ids:
            writer.submit(record(request_id))
        wait_for(lambda: not writer.store_reachable, 10, "the writer noticing the outage")
        time.sleep(1.5)  # a few retries, none of which may lose or reorder anything
        assert writer.depth() == 350
        assert pending[-1] == 350
        assert logged_ids(database_url) == ["req_before"]
        proxy.restore()
        wait_for(lambda: writer.depth() == 0, 15, "the waiting records written")
    finally:
        writer.close()
        engine.dispose()
    assert sorted(logged_ids(database_url)) == sorted(["req_before", *ids])
    assert (writer.written, writer.dropped, dropped) == (351, 0, [])
    assert writer.store_reachable
    assert pending[-1] == 0


def test_closing_while_the_store_is_unreachable_counts_what_it_could_not_write(
    instance: Instance, database_url: str, proxy: TcpProxy
) -> None:
    dropped: list[tuple[str, int]] = []
    engine = open_engine(through(database_url, proxy))
    writer = RequestLog(
        engine,
        RequestLogConfig(flush_interval=0.05),
        on_dropped=lambda reason, count: dropped.append((reason, count)),
    )
    writer.start()
    proxy.cut()
    for i in range(3):
        writer.submit(record(f"req_{i}"))
    writer.close(timeout=1.0)
    engine.dispose()
    assert dropped == [("shutdown", 3)]
    assert (writer.unwritten_at_shutdown, writer.dropped, writer.depth()) == (3, 3, 0)
    assert logged_ids(database_url) == []


# --- a real server ------------------------------------------------------------------------------------


def start_server(
    tmp_path: Path, stub: StubUpstream, database_url: str, proxy: TcpProxy, **request_log: Any
) -> tuple[LockgateServer, str]:
    config = tmp_path / "lockgate.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "providers": {"stub": {"kind": "openai", "base_url": stub.base_url}},
                "models": [{"name": "m", "deployments": [{"provider": "stub", "model": "s"}]}],
                "server": {"metrics_token": "${LG_TEST_SCRAPE_TOKEN}"},
                "request_log": request_log,
            }
        )
    )
    env = {"LOCKGATE_DATABASE_URL": through(database_url, proxy), "LG_TEST_SCRAPE_TOKEN": SCRAPE_TOKEN}
    server = LockgateServer(tmp_path, config, env).start()
    key = server.output().split("store it now): ")[1].split()[0]
    return server, key


def scrape(server: LockgateServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = httpx.get(f"{server.url}/metrics", headers={"authorization": f"Bearer {SCRAPE_TOKEN}"})
    answer.raise_for_status()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def dropped(server: LockgateServer, reason: str) -> float:
    return scrape(server)[("lockgate_request_log_dropped_total", (("reason", reason),))]


def waiting(server: LockgateServer) -> float:
    return scrape(server)[("lockgate_request_log_pending", ())]


class Traffic:
    """Steady concurrent chat completions through the official SDK, each answer's request id noted."""

    def __init__(self, base_url: str, key: str, clients: int = 4, pause: float = 0.05) -> None:
        self._base_url, self._key, self._pause = base_url, key, pause
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        self.sent: list[tuple[float, str]] = []  # (when it was sent, x-request-id of its 200)
        self.failures: list[str] = []

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self) -> None:
        # A request waiting on the store would wait for its connect timeout (5 s): this is shorter.
        client = openai.OpenAI(base_url=self._base_url, api_key=self._key, max_retries=0, timeout=4.0)
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                answer = client.chat.completions.with_raw_response.create(
                    model="m", messages=[{"role": "user", "content": "still there?"}]
                )
                answer.parse()
                self.sent.append((sent, answer.headers["x-request-id"]))
            except openai.OpenAIError as exc:
                self.failures.append(f"{sent:.1f}: {exc!r}")
            self._stop.wait(self._pause)


def test_a_30_second_store_outage_under_load_loses_no_request_and_no_record(
    database_url: str, tmp_path: Path, stub: StubUpstream, proxy: TcpProxy
) -> None:
    server, key = start_server(tmp_path, stub, database_url, proxy)
    try:
        with Traffic(f"{server.url}/v1", key) as traffic:
            time.sleep(2)
            cut = time.monotonic()
            proxy.cut(blackhole=True)  # connections die; new ones hang, as with a host that vanished
            time.sleep(OUTAGE_SECONDS / 2)
            ready = httpx.get(
                f"{server.url}/readyz", headers={"authorization": f"Bearer {SCRAPE_TOKEN}"}, timeout=10
            )
            assert ready.status_code == 200
            assert ready.json()["status"] == "ready"
            assert ready.json()["store"].startswith("unreachable")
            assert waiting(server) > 0
            time.sleep(OUTAGE_SECONDS / 2)
            restored = time.monotonic()
            proxy.restore()
            time.sleep(2)
        during = [request_id for sent, request_id in traffic.sent if cut <= sent < restored]
        assert traffic.failures == []
        assert len(during) > 100, "too little traffic during the outage to show anything"
        sent = [request_id for _, request_id in traffic.sent]
        wait_for(lambda: len(logged_ids(database_url)) >= len(sent), 30, "every record written")
        logged = logged_ids(database_url)
        assert len(logged) == len(sent) == len(set(sent))
        assert set(logged) == set(sent)
        wait_for(lambda: waiting(server) == 0, 5, "the writer reporting an empty buffer")
        assert [dropped(server, reason) for reason in ("overflow", "refused", "shutdown")] == [0, 0, 0]
    finally:
        assert server.stop()
    output = server.output()
    # One warning when the store went away and one when it came back, per part, not one per retry.
    for part in ("request log", "change watcher"):
        assert output.count(f"the store ({part}) unreachable") == 1, part
        assert output.count(f"the store ({part}) reachable again") == 1, part
    assert "Traceback" not in output


def test_past_its_bound_the_buffer_drops_new_records_and_counts_them(
    database_url: str, tmp_path: Path, stub: StubUpstream, proxy: TcpProxy
) -> None:
    server, key = start_server(tmp_path, stub, database_url, proxy, queue_size=5, flush_interval=0.05)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=10)

    def ask() -> str:
        answer = client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
        return answer.headers["x-request-id"]

    try:
        before = [ask() for _ in range(3)]
        wait_for(lambda: len(logged_ids(database_url)) == 3, 10, "the first records written")
        proxy.cut()
        during = [ask() for _ in range(20)]  # every one answered, though only 5 records fit
        assert dropped(server, "overflow") == 15
        wait_for(lambda: waiting(server) == 5, 10, "the writer reporting 5 records waiting")
        proxy.restore()
        wait_for(lambda: len(logged_ids(database_url)) == 8, 15, "the buffered records written")
        time.sleep(0.5)
        assert sorted(logged_ids(database_url)) == sorted(before + during[:5])  # the oldest are kept
        wait_for(lambda: waiting(server) == 0, 5, "the writer reporting an empty buffer")
        assert (dropped(server, "overflow"), dropped(server, "refused")) == (15, 0)
    finally:
        assert server.stop()
    assert server.output().count("request log buffer full") == 1
