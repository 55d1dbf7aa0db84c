"""Counters shared by the workers of one ``lockgate serve``: worker processes admitting at once through the
supervisor's socket never overshoot, the socket is private, a worker whose connection is gone gets
``CountersUnavailable`` instead of hanging and reconnects when the socket is back, and a single-process
server counts in process."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from lockgate.limits.counters import Admission, Check, CountersUnavailable, MemoryCounters
from lockgate.limits.shared import (
    SOCKET_ENV,
    CountersServer,
    SocketCounters,
    process_counters,
    serve_counters,
)
from tests.support.processes import LockgateServer, StubUpstream, stub_config_file


@pytest.fixture
def directory() -> Iterator[Path]:
    """Short enough for a Unix socket path, unlike pytest's ``tmp_path``."""
    made = Path(tempfile.mkdtemp(prefix="lg-shared-"))
    yield made
    shutil.rmtree(made, ignore_errors=True)


@pytest.fixture
def server(directory: Path) -> Iterator[CountersServer]:
    running = CountersServer(directory / "counters.sock")
    running.start()
    yield running
    running.stop()


def reservation() -> str:
    return f"res_{uuid.uuid4().hex}"


def _worker(calls: int, rpm_key: str, budget_key: str, ends_at: float) -> list[Admission]:
    """One worker process: ``calls`` concurrent admissions through the counters its environment names."""

    async def run() -> list[Admission]:
        counters = process_counters()
        assert isinstance(counters, SocketCounters)
        checks = [
            Check(rpm_key, "window", "requests", 100),
            Check(budget_key, "budget", "budget", 50_000, 700, ends_at=ends_at),
        ]
        results = await asyncio.gather(*(counters.admit(checks, reservation(), 60) for _ in range(calls)))
        await counters.close()
        return results

    return asyncio.run(run())


async def test_worker_processes_share_one_set_of_counters(
    server: CountersServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SOCKET_ENV, str(server.path))
    rpm_key, budget_key, ends_at = (
        f"rpm:{uuid.uuid4().hex[:8]}",
        f"b:{uuid.uuid4().hex[:8]}",
        time.time() + 3600,
    )

    def fire() -> list[list[Admission]]:
        with ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("spawn")) as pool:
            return list(pool.map(_worker, [80] * 3, [rpm_key] * 3, [budget_key] * 3, [ends_at] * 3))

    outcomes = [a for worker in await asyncio.get_running_loop().run_in_executor(None, fire) for a in worker]
    taken = [a for a in outcomes if a.admitted]
    # 71 x 700 = 49,700 of the 50,000 budget: in-process counters per worker would have let each of the
    # three workers take 71.
    assert len(taken) == 71
    assert {a.refusal.what for a in outcomes if a.refusal is not None} == {"budget"}
    client = SocketCounters(server.path)
    try:
        await asyncio.gather(*(client.settle(a, [1, 500]) for a in taken))
        probe = Check(budget_key, "budget", "budget", 50_000, 0, ends_at=ends_at)
        assert (await client.admit([probe], reservation(), 1)).remaining == (50_000 - 71 * 500,)
    finally:
        await client.close()


async def test_the_socket_is_private_and_named_in_the_environment() -> None:
    assert SOCKET_ENV not in os.environ
    with serve_counters() as path:
        assert os.environ[SOCKET_ENV] == path
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(Path(path).parent).st_mode) == 0o700
        counters = process_counters()
        assert isinstance(counters, SocketCounters)
        assert (await counters.admit([Check("rpm:env", "window", "requests", 1)], reservation(), 5)).admitted
        await counters.close()
    assert SOCKET_ENV not in os.environ
    assert not Path(path).parent.exists()


def test_one_process_counts_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SOCKET_ENV, raising=False)
    assert isinstance(process_counters(), MemoryCounters)


async def test_a_worker_fails_fast_while_the_socket_is_gone_and_reconnects_when_it_is_back(
    directory: Path,
) -> None:
    path = directory / "counters.sock"
    shared = MemoryCounters()
    rpm = Check(f"rpm:{uuid.uuid4().hex[:8]}", "window", "requests", 3)
    first = CountersServer(path, shared)
    first.start()
    client = SocketCounters(path, timeout=1.0)
    try:
        assert (await client.admit([rpm], reservation(), 30)).admitted
        first.stop()
        for operation in (
            lambda: client.admit([rpm], reservation(), 30),
            lambda: client.set_spend("b:gone", 1, time.time() + 60),
        ):
            with pytest.raises(CountersUnavailable):
                await asyncio.wait_for(operation(), 5)
        second = CountersServer(path, shared)  # the same counters behind a new socket
        second.start()
        try:
            again = await client.admit([rpm], reservation(), 30)
            assert (again.admitted, again.remaining) == (True, (1,))
        finally:
            second.stop()
    finally:
        await client.close()


async def test_a_server_that_stops_answering_fails_pending_calls_within_the_timeout(directory: Path) -> None:
    path = directory / "silent.sock"
    connections: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        await reader.read()

    listener = await asyncio.start_unix_server(silent, path=str(path))
    client = SocketCounters(path, timeout=0.3)
    rpm = Check("rpm:silent", "window", "requests", 3)
    try:
        started = time.monotonic()
        with pytest.raises(CountersUnavailable):
            await asyncio.wait_for(client.admit([rpm], reservation(), 30), 5)
        assert time.monotonic() - started < 2  # the client's timeout, not a hang
        # A connection that drops fails the calls waiting on it at once.
        pending = asyncio.ensure_future(client.admit([rpm], reservation(), 30))
        await asyncio.sleep(0.05)
        for writer in connections:
            writer.close()
        with pytest.raises(CountersUnavailable, match="lost"):
            await asyncio.wait_for(pending, 5)
    finally:
        await client.close()
        listener.close()


async def test_calls_from_one_connection_are_pipelined(server: CountersServer) -> None:
    client = SocketCounters(server.path)
    slots = Check(f"slots:{uuid.uuid4().hex[:8]}", "concurrency", "concurrent", 30)
    try:
        results = await asyncio.gather(*(client.admit([slots], reservation(), 60) for _ in range(100)))
        assert sum(r.admitted for r in results) == 30
        assert [r.refusal for r in results if not r.admitted] == [slots] * 70
        # Each answer went to its own call: every count of remaining slots from 29 down to 0 appears once.
        assert sorted(r.remaining[0] for r in results if r.admitted) == list(range(30))
        await asyncio.gather(*(client.settle(r, [1]) for r in results))
        assert all([(await client.admit([slots], reservation(), 60)).admitted for _ in range(30)])
    finally:
        await client.close()


def test_importing_the_backends_does_not_load_redis() -> None:
    code = (
        "import sys, lockgate.limits.redis_counters, lockgate.limits.shared\n"
        "assert 'redis' not in sys.modules, 'redis was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def _children(pid: int) -> list[int]:
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat_file.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads worker environments from /proc")
async def test_serve_with_several_workers_gives_them_the_supervisors_counters(tmp_path: Path) -> None:
    stub = StubUpstream("counters").start()
    env = {"LOCKGATE_DATABASE_URL": "", SOCKET_ENV: ""}
    server = LockgateServer(tmp_path, stub_config_file(tmp_path, stub), env, workers=2).start()
    try:
        assert server.proc is not None
        paths = {_environ(child).get(SOCKET_ENV) for child in _children(server.proc.pid)} - {None, ""}
        assert len(paths) == 1, paths  # every worker names the same socket
        path = Path(paths.pop() or "")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        client = SocketCounters(path)
        rpm = Check(f"rpm:{uuid.uuid4().hex[:8]}", "window", "requests", 1)
        assert (await client.admit([rpm], reservation(), 5)).admitted
        assert not (await client.admit([rpm], reservation(), 5)).admitted
        await client.close()
    finally:
        assert server.stop()
        stub.kill()
    assert not path.parent.exists()  # the supervisor removed its socket on the way out
