"""Counters: what admitting a call and settling it costs on each backend.

One call's checks as the gateway makes them: a tenant's requests a minute, a key's tokens a minute, the
key's concurrent calls and the tenant's monthly budget (limits high enough that every call fits). For each
backend, ``--calls`` sequential admit + settle pairs after ``--warmup`` (latency of one operation, as one
request sees it), then ``--concurrency`` tasks sharing ``--calls`` pairs (throughput when many requests of
one worker wait at once). The client runs on uvloop (``--loop``), as gateway workers do:

- **memory**: ``MemoryCounters`` in this process (``lockgate serve`` with one worker);
- **shared**: ``SocketCounters`` to a ``CountersServer`` in another process, as a worker reaches its
  supervisor (``--workers N``);
- **redis**: ``RedisCounters`` on ``--redis-url`` (skipped when Redis does not answer), keys under a
  prefix of the run's own, deleted afterwards.

Raw results go to ``bench/results/counters-<UTC timestamp>.json``; a Markdown table goes to stdout.

    python -m bench.counters [--calls 5000] [--warmup 500] [--concurrency 64] [--redis-url redis://...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lockgate.limits.counters import Check, Counters, MemoryCounters
from lockgate.limits.shared import CountersServer, SocketCounters

RESULTS = Path(__file__).with_name("results")


def checks() -> list[Check]:
    tag = uuid.uuid4().hex[:8]
    return [
        Check(f"tenant:{tag}:rpm", "window", "requests", 1e9, 1, name="rpm"),
        Check(f"key:{tag}:tpm", "window", "tokens", 1e12, 4096, name="tpm"),
        Check(f"key:{tag}:concurrent", "concurrency", "concurrent", 1e6, name="concurrent"),
        Check(
            f"tenant:{tag}:budget",
            "budget",
            "budget",
            10**15,
            50_000_000,
            ends_at=time.time() + 30 * 86400,
            soft=8 * 10**14,
            name="monthly",
        ),
    ]


USED = [1, 800, 1, 9_000_000]


def summary(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000

    return {
        "p50_us": at(0.50),
        "p90_us": at(0.90),
        "p99_us": at(0.99),
        "mean_us": statistics.fmean(ordered) / 1000,
    }


async def sequential(counters: Counters, calls: int, warmup: int) -> dict[str, Any]:
    made = checks()
    admit_ns: list[int] = []
    settle_ns: list[int] = []
    for i in range(warmup + calls):
        started = time.perf_counter_ns()
        admission = await counters.admit(made, f"res_{i}", 60)
        admitted = time.perf_counter_ns()
        await counters.settle(admission, USED)
        settled = time.perf_counter_ns()
        if not admission.admitted:
            raise RuntimeError(f"a call was refused: {admission.refusal}")
        if i >= warmup:
            admit_ns.append(admitted - started)
            settle_ns.append(settled - admitted)
    return {
        "admit": summary(admit_ns),
        "settle": summary(settle_ns),
        "pair": summary([a + s for a, s in zip(admit_ns, settle_ns, strict=True)]),
    }


async def concurrent(counters: Counters, calls: int, concurrency: int) -> dict[str, float]:
    made = checks()
    counter = iter(range(calls))

    async def worker() -> None:
        for i in counter:
            admission = await counters.admit(made, f"res_c{i}", 60)
            await counters.settle(admission, USED)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"pairs_per_s": calls / elapsed, "elapsed_s": elapsed}


def _serve(path: str, ready: Any, stop: Any) -> None:
    server = CountersServer(path)
    server.start()
    ready.set()
    stop.wait()
    server.stop()


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}

    async def run(name: str, counters: Counters) -> None:
        try:
            await counters.reconciled()  # as the gateway does once budgets hold the store's spend
            results[name] = {
                "sequential": await sequential(counters, args.calls, args.warmup),
                "concurrent": await concurrent(counters, args.calls, args.concurrency),
            }
        finally:
            await counters.close()

    await run("memory", MemoryCounters())

    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="lg-bench-") as directory:
        path = str(Path(directory) / "counters.sock")
        ready, stop = context.Event(), context.Event()
        process = context.Process(target=_serve, args=(path, ready, stop))
        process.start()
        try:
            if not ready.wait(30):
                raise RuntimeError("the counters server did not start")
            await run("shared", SocketCounters(path))
        finally:
            stop.set()
            process.join(10)

    import redis

    prefix = f"lgbench:{uuid.uuid4().hex[:8]}:"
    probe = redis.Redis.from_url(args.redis_url)
    try:
        probe.ping()
        info = probe.info("server")
        results["redis_server"] = str(info.get("redis_version"))
    except redis.RedisError as exc:
        print(f"redis skipped: {type(exc).__name__}: {exc}", file=sys.stderr)
        return results
    from lockgate.config.schema import RedisConfig
    from lockgate.limits.redis_counters import RedisCounters

    try:
        await run("redis", RedisCounters(RedisConfig(url=args.redis_url, prefix=prefix, timeout=2.0)))
    finally:
        keys = list(probe.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            probe.delete(*keys)
        probe.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--redis-url", default=os.environ.get("LOCKGATE_BENCH_REDIS", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="the client's loop")
    args = parser.parse_args(argv)
    if args.loop == "uvloop":  # the loop gateway workers run on
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            backends = runner.run(measure(args))
    else:
        backends = asyncio.run(measure(args))
    results = {
        "calls": args.calls,
        "warmup": args.warmup,
        "concurrency": args.concurrency,
        "loop": args.loop,
        "checks_per_call": len(checks()),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "backends": backends,
    }
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"counters-{stamp}.json"
    out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(
        f"| backend | admit p50 / p99 (µs) | settle p50 / p99 (µs) | admit + settle p50 / p99 (µs) "
        f"| pairs/s at {args.concurrency} in flight |"
    )
    print("|---|--:|--:|--:|--:|")
    for name in ("memory", "shared", "redis"):
        if name not in backends:
            continue
        seq, conc = backends[name]["sequential"], backends[name]["concurrent"]
        cells = [f"{seq[op]['p50_us']:.1f} / {seq[op]['p99_us']:.1f}" for op in ("admit", "settle", "pair")]
        print(f"| {name} | {' | '.join(cells)} | {conc['pairs_per_s']:,.0f} |")
    print(f"\n{out.relative_to(RESULTS.parent.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
