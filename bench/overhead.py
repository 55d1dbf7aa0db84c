"""Gateway overhead: the same load sent straight to an upstream and through lockgate, in one run.

The upstream is the stub from ``lockgate.testing.stub`` in a process of its own; lockgate runs as
``lockgate serve`` in a fresh data directory, with its default SQLite store and request logging on.
Every scenario runs as a pair, direct and through the gateway back to back (the order alternating
between repeats), so both halves see the same machine state; each metric is the median over the pairs.

- max rate: ``wrk -c32 -t2``; reported as the gateway's share of the direct rate;
- fixed rates (100 and 300 RPS by default): added p50 and p99 latency, gateway minus direct, for a
  paced schedule (independent connections, evenly spread) and hey's own lockstep bursts (see
  ``bench.loadgen``).

With ``--limits`` and ``--cache`` the gateway runs its admission stages too: a limit rule (requests,
tokens and concurrency, one counter set per key) and a monthly budget on the tenant, counted in memory
or in Redis, and the response cache in memory or in Redis. The rule and budget are far above the load,
so every call is admitted and settled as a real one would be. The cache (which also takes the
benchmark's sampling calls) is given a 1 ms TTL, so every call takes the cache's miss path (a lookup,
then a store of the answer) rather than a hit, which would skip the upstream and flatter the gateway;
the hits that still happen (two identical calls within 1 ms) are counted and reported.

Afterwards the gateway is stopped with SIGTERM, so its batch writer flushes, and its ``request_log``
table is counted against the requests it forwarded (plus any cache hits). Any non-200 answer, transport
error or missing log record fails the run. Raw results go to
``bench/results/overhead-<UTC timestamp>.json``; a Markdown table goes to stdout.

    python -m bench.overhead [--repeats 3] [--duration 10] [--rate-duration 15] [--workers 1] [--profile]
                             [--limits off|memory|redis] [--cache off|memory|redis] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bench.loadgen import LoadError, Schedule, burst, paced, run_hey, run_wrk, wrk_script
from bench.procs import Children, exit_on_sigterm, free_port, tail
from bench.profile import load_raw

ROOT = Path(__file__).resolve().parent.parent
MODEL = "bench"
REQUEST = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello in one short sentence."}]}
TARGET_RATE = 300
TARGET_P50_MS = 0.5
TARGET_P99_MS = 3.0
CONFIG = """\
providers:
  stub: {{kind: openai, base_url: "http://127.0.0.1:{port}/v1"}}
models:
  - name: {model}
    deployments:
      - {{provider: stub, model: stub-model, timeout: 30, input_price_per_1m: 1, output_price_per_1m: 2}}
"""
ADMISSION_CONFIG = """\
redis: {{url: "{redis_url}", prefix: "{prefix}"}}
limits: {{backend: {limits}}}
"""
CACHE_CONFIG = """\
cache: {{enabled: true, backend: {cache}, ttl: 0.001, nondeterministic: true}}
"""
# Far above any rate the benchmark reaches: every call is admitted, reserved and settled.
RULE = {
    "scope": {"key": "each"},
    "requests_per_minute": 10_000_000,
    "tokens_per_minute": 10**12,
    "concurrent": 100_000,
    "max_tokens": 4096,
}
BUDGET = {"period": "month", "amount_usd": 1_000_000, "soft_ratio": None}
_ADMIN_KEY = re.compile(r"admin key \(shown once, store it now\): (lg-\S+)")
_CONTROL_TOKEN = re.compile(r"control token of user 'admin' \(shown once\): (lgc-\S+)")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
T = TypeVar("T")


class BenchError(RuntimeError):
    """The benchmark could not run (a process did not start, a sanity check failed)."""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    label: str
    schedule: Schedule | None  # None: the maximum rate, with wrk


# -- HTTP helpers ---------------------------------------------------------------------------------------


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with _NO_PROXY.open(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def wait_until(
    check: Callable[[], T | None], what: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0
) -> T:
    """Poll ``check()`` until it returns something truthy; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what}: the process exited with {proc.returncode}:\n{tail(log)}")
        with contextlib.suppress(OSError):
            value = check()
            if value:
                return value
        time.sleep(0.1)
    raise BenchError(f"{what}: no answer within {timeout:g} s:\n{tail(log)}")


# -- machine facts ---------------------------------------------------------------------------------------


def _command(*args: str) -> str:
    try:
        done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout or done.stderr).strip()


def _proc_field(path: str, key: str) -> str:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    return ""


def machine_facts() -> dict[str, Any]:
    memory_kib = _proc_field("/proc/meminfo", "MemTotal").split()
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _proc_field("/proc/cpuinfo", "model name"),
        "memory_gib": round(int(memory_kib[0]) / 2**20, 1) if memory_kib else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "lockgate_version": importlib.metadata.version("lockgate"),
        "lockgate_commit": _command("git", "rev-parse", "HEAD"),
        "lockgate_tree_dirty": bool(
            _command("git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no")
        ),
        "wrk": _command("wrk", "-v").splitlines()[0] if shutil.which("wrk") else None,
        "hey": _command("dpkg-query", "-W", "-f=${Version}", "hey") or "unknown",
        "loadavg_at_start": list(os.getloadavg()),
    }


# -- the benchmark ---------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path, children: Children) -> None:
        self.args = args
        self.workdir = workdir
        self.children = children
        self.body = json.dumps(REQUEST, separators=(",", ":"))
        self.runs: list[dict[str, Any]] = []
        self.failures: list[str] = []
        self.forwarded = 0  # requests the upstream received while the gateway was loaded
        self.answered = 0  # requests the gateway answered to the load generators
        self.key = ""
        self.token = ""  # the admin's control token, for the control API
        self.redis_prefix = f"lockgate-bench-{os.getpid()}:"
        self.stub_port = free_port()
        self.gateway_port = free_port()
        self.stub: subprocess.Popen[bytes] | None = None
        self.gateway: subprocess.Popen[bytes] | None = None
        self.script = workdir / "post.lua"
        self._seq = 0

    # processes

    def start_stub(self) -> None:
        log = self.workdir / "stub.log"
        args = [sys.executable, "-m", "lockgate.testing.stub", "--port", str(self.stub_port)]
        args += ["--latency-ms", f"{self.args.upstream_latency_ms:g}"]
        self.stub = self.children.spawn(args, output=log, cwd=self.workdir)
        wait_until(lambda: http("GET", self.stub_url("/v1/models"))[0] == 200 or None, "stub", self.stub, log)

    def start_gateway(self) -> None:
        home = self.workdir / "gateway"
        home.mkdir()
        config = home / "lockgate.yaml"
        config.write_text(self.config(), encoding="utf-8")
        log = home / "serve.log"
        exe = Path(sys.executable).with_name("lockgate")
        lockgate = str(exe if exe.exists() else "lockgate")
        subprocess.run([lockgate, "migrate"], cwd=home, check=True, capture_output=True, timeout=120)
        args = [lockgate, "serve", "--config", str(config)]
        args += ["--port", str(self.gateway_port), "--workers", str(self.args.workers)]
        self.gateway = self.children.spawn(args, output=log, cwd=home)

        def key() -> str | None:
            match = _ADMIN_KEY.search(log.read_text(encoding="utf-8", errors="replace"))
            return match.group(1) if match else None

        self.key = wait_until(key, "lockgate serve (admin key)", self.gateway, log)
        token = _CONTROL_TOKEN.search(log.read_text(encoding="utf-8", errors="replace"))
        self.token = token.group(1) if token else ""
        healthz = self.gateway_url("/healthz")
        wait_until(lambda: http("GET", healthz)[0] == 200 or None, "lockgate", self.gateway, log)
        wrk_script(self.script, self.body, self.headers())
        if self.args.limits != "off":
            self.admission_rules()

    def config(self) -> str:
        text = CONFIG.format(port=self.stub_port, model=MODEL)
        if self.args.limits != "off" or self.args.cache == "redis":
            prefix = self.redis_prefix
            backend = self.args.limits if self.args.limits != "off" else "memory"
            text += ADMISSION_CONFIG.format(redis_url=self.args.redis_url, prefix=prefix, limits=backend)
        if self.args.cache != "off":
            text += CACHE_CONFIG.format(cache=self.args.cache)
        return text

    def forget_redis_keys(self) -> None:
        """Delete what the run left in Redis (budget counters would otherwise stay until the month ends)."""
        import redis

        client = redis.Redis.from_url(self.args.redis_url)
        try:
            for key in client.scan_iter(match=f"{self.redis_prefix}*", count=1000):
                client.delete(key)
        finally:
            client.close()

    def admission_rules(self) -> None:
        """The tenant's limit rule and budget, through the control API as an administrator sets them."""
        base = self.gateway_url("/api/v1/tenants/default")
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}
        for path, spec in (("/limits/bench", RULE), ("/budgets/bench", BUDGET)):
            status, _, raw = http("PUT", base + path, json.dumps(spec).encode(), headers)
            if status != 200:
                raise BenchError(f"PUT {path} answered {status}: {raw[:300]!r}")
        time.sleep(1.0)  # every worker reloads limits within its change poll (0.25 s); sanity() checks

    def stop_gateway(self) -> int:
        assert self.gateway is not None
        code = self.children.stop(self.gateway, grace=90.0)
        # uvicorn re-raises the signal once it has shut down gracefully.
        if code not in (0, -signal.SIGTERM):
            self.failures.append(f"lockgate serve exited with {code} on SIGTERM")
        return code

    def stub_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.stub_port}{path}"

    def gateway_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.gateway_port}{path}"

    def url(self, target: str) -> str:
        path = "/v1/chat/completions"
        return self.stub_url(path) if target == "direct" else self.gateway_url(path)

    def headers(self) -> dict[str, str]:
        # The same request both ways; the stub ignores the key.
        return {"Content-Type": "application/json", "Authorization": f"Bearer {self.key}"}

    def upstream_count(self) -> int:
        status, _, raw = http("GET", self.stub_url("/_stub/requests"))
        if status != 200:
            raise BenchError(f"the stub answered {status} to /_stub/requests")
        return int(json.loads(raw)["count"])

    def settled_upstream_count(self) -> int:
        """The upstream's count once requests still in flight when a load generator stopped have landed."""
        count = self.upstream_count()
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            time.sleep(0.25)
            now = self.upstream_count()
            if now == count:
                break
            count = now
        return count

    # checks and load

    def sanity(self) -> None:
        """One request each way: both answer 200 with the stub's echo, the gateway names its deployment."""
        for target in ("direct", "gateway"):
            before = self.upstream_count()
            status, headers, raw = http("POST", self.url(target), self.body.encode(), self.headers())
            text = raw.decode("utf-8", "replace")
            if status != 200 or "echo: Say hello" not in text:
                raise BenchError(f"{target} sanity request answered {status}: {text[:500]}")
            if target == "gateway":
                if "x-lockgate-deployment" not in headers:
                    raise BenchError("the gateway's answer has no x-lockgate-deployment header")
                if self.args.limits != "off" and "x-ratelimit-limit-requests" not in headers:
                    raise BenchError("the gateway's answer has no x-ratelimit-* headers: limits are not on")
                if self.args.cache != "off" and headers.get("x-lockgate-cache") not in ("miss", "hit"):
                    raise BenchError(f"the cache did not look the call up: {headers.get('x-lockgate-cache')}")
                self.forwarded += self.upstream_count() - before
                self.answered += 1

    def run(self, scenario: Scenario, target: str, seconds: float, **meta: Any) -> dict[str, Any]:
        time.sleep(self.args.settle)
        self._seq += 1
        tag = f"{self._seq:03d}-{scenario.name}-{target}"
        before = self.upstream_count()
        record: dict[str, Any] = {"scenario": scenario.name, "target": target, **meta}
        record["started_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        if scenario.schedule is None:
            wrk = run_wrk(
                self.children,
                self.url(target),
                self.script,
                connections=self.args.connections,
                threads=self.args.threads,
                seconds=seconds,
                output=self.workdir / f"{tag}.txt",
            )
            record["wrk"] = wrk.to_json()
            answered = wrk.requests
        else:
            hey = run_hey(
                self.children,
                scenario.schedule,
                self.url(target),
                body=self.body,
                headers={"Authorization": f"Bearer {self.key}"},
                seconds=seconds,
                workdir=self.workdir,
                tag=tag,
            )
            record["hey"] = hey.to_json()
            answered = hey.answered
        received = self.settled_upstream_count() - before
        record["upstream_received"] = received
        if target == "gateway":
            self.forwarded += received
            self.answered += answered
        self._check(record, received)
        return record

    def _check(self, record: dict[str, Any], received: int) -> None:
        where = f"{record['scenario']} {record['target']} (repeat {record.get('repeat', '-')})"
        if "wrk" in record:
            wrk = record["wrk"]
            if wrk["errors"]:
                self.failures.append(
                    f"{where}: wrk saw {wrk['non_2xx_3xx']} non-2xx/3xx answers and "
                    f"socket errors {wrk['socket_errors']}"
                )
            return
        hey = record["hey"]
        if hey["non_200"]:
            self.failures.append(f"{where}: non-200 answers {hey['statuses']}")
        if received > hey["answered"]:
            self.failures.append(
                f"{where}: the upstream received {received} requests, hey has answers for {hey['answered']}"
            )
        if hey["answered"] < 0.95 * hey["expected"]:
            self.failures.append(
                f"{where}: rate not sustained, {hey['answered']} of {hey['expected']} requests answered"
            )

    def warm_up(self) -> None:
        warm = Scenario("warm-up", "warm-up", None)
        for target in ("direct", "gateway"):
            record = self.run(warm, target, self.args.warmup)
            print(f"  warm-up {target}: {record['wrk']['rps']:,.0f} RPS", file=sys.stderr)

    def measure(self, scenarios: list[Scenario]) -> None:
        for repeat in range(self.args.repeats):
            order = ("direct", "gateway") if repeat % 2 == 0 else ("gateway", "direct")
            for scenario in scenarios:
                seconds = self.args.duration if scenario.schedule is None else self.args.rate_duration
                for position, target in enumerate(order):
                    record = self.run(scenario, target, seconds, repeat=repeat, position=position)
                    self.runs.append(record)
                    print(f"  [{repeat + 1}/{self.args.repeats}] {_progress(record)}", file=sys.stderr)

    def profile(self, scenario: Scenario, output: Path) -> dict[str, Any]:
        """Run ``scenario`` through the gateway once more, under py-spy, and rank the samples."""
        assert self.gateway is not None
        exe = Path(sys.executable).with_name("py-spy")
        pyspy = str(exe) if exe.exists() else shutil.which("py-spy")
        if pyspy is None:
            raise BenchError("--profile needs py-spy (pip install py-spy)")
        seconds = self.args.rate_duration
        args = [pyspy, "record", "--pid", str(self.gateway.pid), "--rate", str(self.args.profile_rate)]
        # Only the thread holding the GIL is sampled: the interpreter time a request waits for. py-spy
        # pauses the gateway for each sample (--nonblocking cuts many coroutine stacks short), which
        # slows this run down; its latencies are not part of the results.
        args += ["--gil", "--threads", "--format", "raw", "--output", str(output)]
        args += ["--duration", f"{seconds + 2:g}"]
        if self.args.workers > 1:
            args.append("--subprocesses")
        log = self.workdir / "py-spy.log"
        spy = self.children.spawn(args, output=log)
        time.sleep(1.0)
        record = self.run(scenario, "gateway", seconds, profiled=True)
        try:
            code = spy.wait(seconds + 60)
        finally:
            self.children.stop(spy)
        if code != 0 or not output.exists():
            raise BenchError(f"py-spy failed ({code}):\n{tail(log)}")
        ranked = load_raw(output).to_json()
        ranked["scenario"] = scenario.name
        ranked["rate_hz"] = self.args.profile_rate
        ranked["mode"] = "py-spy record --gil (samples: the thread holding the GIL)"
        ranked["raw_file"] = output.name
        ranked["run"] = record
        return ranked

    def request_log(self) -> dict[str, Any]:
        """Count what the gateway's batch writer stored (after SIGTERM, so its queue is flushed)."""
        database = self.workdir / "gateway" / ".lockgate" / "lockgate.db"
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT status_code, count(*) FROM request_log GROUP BY status_code").fetchall()
            cache = db.execute("SELECT cache, count(*) FROM request_log GROUP BY cache").fetchall()
        statuses = {str(status): count for status, count in rows}
        outcomes = {str(outcome): count for outcome, count in cache}
        written = sum(statuses.values())
        hits = sum(count for outcome, count in outcomes.items() if outcome != "None")  # exact, semantic
        check = {
            "records_written": written,
            "by_status": statuses,
            "by_cache_outcome": outcomes,
            "requests_forwarded_upstream": self.forwarded,
            "requests_answered_to_clients": self.answered,
        }
        if written != self.forwarded + hits:
            self.failures.append(
                f"request log has {written} records for {self.forwarded} requests forwarded upstream "
                f"and {hits} cache hits"
            )
        return check


def _progress(record: dict[str, Any]) -> str:
    head = f"{record['scenario']:<10} {record['target']:<7}"
    if "wrk" in record:
        return f"{head} {record['wrk']['rps']:>9,.0f} RPS"
    lat = record["hey"]["latency_ms"]
    return (
        f"{head} p50 {lat['p50']:.1f} ms  p99 {lat['p99']:.1f} ms  ({record['hey']['achieved_rps']:.0f} RPS)"
    )


# -- summary ---------------------------------------------------------------------------------------------


def _by_repeat(runs: list[dict[str, Any]], scenario: str, target: str) -> dict[int, dict[str, Any]]:
    return {r["repeat"]: r for r in runs if r["scenario"] == scenario and r["target"] == target}


def _metric(record: dict[str, Any], metric: str) -> float:
    if metric == "rps":
        return float(record["wrk"]["rps"])
    return float(record["hey"]["latency_ms"][metric])


def summarize(runs: list[dict[str, Any]], scenarios: list[Scenario]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for scenario in scenarios:
        direct = _by_repeat(runs, scenario.name, "direct")
        gateway = _by_repeat(runs, scenario.name, "gateway")
        pairs = sorted(set(direct) & set(gateway))
        if not pairs:
            continue
        entry: dict[str, Any] = {"label": scenario.label, "pairs": len(pairs)}
        metrics = ["rps"] if scenario.schedule is None else ["p50", "p90", "p99"]
        for metric in metrics:
            d = [_metric(direct[i], metric) for i in pairs]
            g = [_metric(gateway[i], metric) for i in pairs]
            item: dict[str, Any] = {"direct": statistics.median(d), "gateway": statistics.median(g)}
            if metric == "rps":
                item["ratio"] = item["gateway"] / item["direct"]
                item["pair_ratios"] = [b / a for a, b in zip(d, g, strict=True)]
            else:
                item["added_ms"] = item["gateway"] - item["direct"]
                item["pair_added_ms"] = [b - a for a, b in zip(d, g, strict=True)]
            entry[metric] = item
        if scenario.schedule is not None:
            entry["schedule"] = scenario.schedule.to_json()
        summary[scenario.name] = entry
    return summary


def targets(summary: dict[str, Any]) -> dict[str, Any]:
    verdicts: dict[str, Any] = {}
    for name, entry in summary.items():
        schedule = entry.get("schedule")
        if schedule is None or schedule["rate"] != TARGET_RATE:
            continue
        p50, p99 = entry["p50"]["added_ms"], entry["p99"]["added_ms"]
        verdicts[name] = {
            "added_p50_ms": p50,
            "added_p99_ms": p99,
            "p50_limit_ms": TARGET_P50_MS,
            "p99_limit_ms": TARGET_P99_MS,
            "met": p50 <= TARGET_P50_MS and p99 <= TARGET_P99_MS,
        }
    return verdicts


def _profile_lines(profile: dict[str, Any] | None, n: int = 8) -> list[str]:
    if not profile:
        return []
    lines = [
        "",
        f"Profile ({profile['scenario']}, {profile['samples']:,} samples holding the GIL; "
        f"threads: {', '.join(f'{k} {v:.0f}%' for k, v in profile['threads'].items())}):",
        "",
        "| lockgate function (inclusive) | % | any function (self) | % |",
        "|---|--:|---|--:|",
    ]
    inclusive, own = profile["top_lockgate_inclusive"][:n], profile["top_self"][:n]
    for a, b in zip(inclusive, own, strict=False):
        lines.append(f"| {a['function']} | {a['percent']:.1f} | {b['function']} | {b['percent']:.1f} |")
    return lines


def _range(values: list[float], fmt: str) -> str:
    return f"{format(min(values), fmt)} .. {format(max(values), fmt)}"


def markdown(results: dict[str, Any]) -> str:
    settings = results["settings"]
    lines = [
        f"lockgate {settings['workers']} worker(s), request log on (SQLite); median of "
        f"{settings['repeats']} direct/gateway pairs; "
        f"upstream stub latency {settings['upstream_latency_ms']:g} ms; "
        f"limits + budget: {settings.get('limits', 'off')}, cache: {settings.get('cache', 'off')}",
        "",
        "| Load | Metric | Direct | Through lockgate | lockgate vs direct | Range over pairs |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for entry in results["summary"].values():
        if "rps" in entry:
            rps = entry["rps"]
            lines.append(
                f"| {entry['label']} | max RPS | {rps['direct']:,.0f} | {rps['gateway']:,.0f} | "
                f"{rps['ratio']:.2f}x | {_range(rps['pair_ratios'], '.2f')} |"
            )
            continue
        for i, metric in enumerate(("p50", "p99")):
            item = entry[metric]
            lines.append(
                f"| {entry['label'] if i == 0 else ''} | {metric} | {item['direct']:.1f} ms | "
                f"{item['gateway']:.1f} ms | {item['added_ms']:+.1f} ms | "
                f"{_range(item['pair_added_ms'], '+.1f')} ms |"
            )
    log = results.get("request_log")
    if log:
        lines += [
            "",
            f"Request log: {log['records_written']:,} records written for "
            f"{log['requests_forwarded_upstream']:,} requests forwarded upstream "
            f"({log['requests_answered_to_clients']:,} answered to the load generators); "
            f"cache outcomes {log.get('by_cache_outcome', {})}.",
        ]
    for name, verdict in results.get("targets", {}).items():
        lines.append(
            f"Target at {TARGET_RATE} RPS ({name}): added p50 {verdict['added_p50_ms']:+.1f} ms "
            f"(limit {TARGET_P50_MS:g}), p99 {verdict['added_p99_ms']:+.1f} ms (limit {TARGET_P99_MS:g}): "
            f"{'met' if verdict['met'] else 'NOT met'}."
        )
    lines += _profile_lines(results.get("profile"))
    failures = results.get("failures") or []
    lines.append("")
    lines.append("Errors: none." if not failures else "FAILURES:\n" + "\n".join(f"- {f}" for f in failures))
    return "\n".join(lines)


# -- entry point -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.overhead", description=(__doc__ or "").splitlines()[0]
    )
    add = parser.add_argument
    add("--repeats", type=int, default=3, help="direct/gateway pairs per scenario (default 3)")
    add("--duration", type=float, default=10.0, help="seconds of each wrk max-rate run (default 10)")
    add("--rate-duration", type=float, default=15.0, help="seconds of each fixed-rate run (default 15)")
    add("--warmup", type=float, default=3.0, help="seconds of wrk warm-up each way (default 3)")
    add("--settle", type=float, default=1.0, help="pause before each run, seconds (default 1)")
    add("--workers", type=int, default=1, help="lockgate serve --workers (default 1)")
    add("--connections", type=int, default=32, help="wrk connections (default 32)")
    add("--threads", type=int, default=2, help="wrk threads (default 2)")
    add("--rates", default="100,300", help="fixed rates, RPS, comma separated (default 100,300)")
    add("--schedules", default="paced,burst", help="fixed-rate schedules: paced, burst (default both)")
    add("--paced-connections", type=int, default=10, help="hey processes of a paced schedule (default 10)")
    add(
        "--burst-qps", type=float, default=10.0, help="requests/s per worker of a burst schedule (default 10)"
    )
    add("--upstream-latency-ms", type=float, default=0.0, help="stub answer delay (default 0)")
    add("--limits", choices=("off", "memory", "redis"), default="off", help="limit + budget stages on")
    add("--cache", choices=("off", "memory", "redis"), default="off", help="response cache on (1 ms TTL)")
    add("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis for --limits/--cache redis")
    add("--profile", action="store_true", help="afterwards, profile the gateway with py-spy at the top rate")
    add("--profile-rate", type=int, default=500, help="py-spy samples per second (default 500)")
    add("--output-dir", type=Path, default=ROOT / "bench" / "results")
    add("--keep-temp", action="store_true", help="keep the working directory (logs, raw load output)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.workers < 1:
        parser.error("--repeats and --workers must be at least 1")
    return args


def scenarios_for(args: argparse.Namespace) -> list[Scenario]:
    wrk = f"wrk -c{args.connections} -t{args.threads}, {args.duration:g} s"
    scenarios = [Scenario("max-rps", f"max rate ({wrk})", None)]
    kinds = [k.strip() for k in args.schedules.split(",") if k.strip()]
    for kind in kinds:
        if kind not in ("paced", "burst"):
            raise ValueError(f"unknown schedule {kind!r}; use paced and/or burst")
        for rate in (int(r) for r in args.rates.split(",") if r.strip()):
            schedule = paced(rate, args.paced_connections) if kind == "paced" else burst(rate, args.burst_qps)
            label = f"{rate} RPS {kind} ({schedule.describe()}, {args.rate_duration:g} s)"
            scenarios.append(Scenario(schedule.name, label, schedule))
    return scenarios


def _rate(scenario: Scenario) -> int:
    return scenario.schedule.rate if scenario.schedule is not None else 0


@contextlib.contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    if keep:
        path = Path(tempfile.mkdtemp(prefix="lockgate-bench-"))
        print(f"working directory kept: {path}", file=sys.stderr)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="lockgate-bench-") as name:
        yield Path(name)


def execute(args: argparse.Namespace, scenarios: list[Scenario], results: dict[str, Any], stamp: str) -> None:
    with _workdir(args.keep_temp) as workdir, Children() as children:
        bench = Bench(args, workdir, children)
        results["runs"] = bench.runs
        results["failures"] = bench.failures
        print("starting the stub upstream and lockgate ...", file=sys.stderr)
        bench.start_stub()
        bench.start_gateway()
        bench.sanity()
        bench.warm_up()
        bench.measure(scenarios)
        results["summary"] = summarize(bench.runs, scenarios)
        results["targets"] = targets(results["summary"])
        if args.profile:
            top = max(
                scenarios, key=lambda s: (s.schedule is not None and s.schedule.kind == "paced", _rate(s))
            )
            raw = args.output_dir / f"overhead-{stamp}.raw"
            print(f"profiling lockgate under {top.name} with py-spy ...", file=sys.stderr)
            results["profile"] = bench.profile(top, raw)
        bench.stop_gateway()
        results["request_log"] = bench.request_log()
        assert bench.stub is not None
        children.stop(bench.stub)
        if args.limits == "redis" or args.cache == "redis":
            bench.forget_redis_keys()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        scenarios = scenarios_for(args)
    except ValueError as error:
        print(f"python -m bench.overhead: {error}", file=sys.stderr)
        return 2
    missing = [tool for tool in ("wrk", "hey") if shutil.which(tool) is None]
    if missing:
        print(f"missing {' and '.join(missing)}: apt-get install -y wrk hey", file=sys.stderr)
        return 2
    exit_on_sigterm()
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    output = args.output_dir / f"overhead-{stamp}.json"
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    settings["output_dir"] = os.path.relpath(args.output_dir, ROOT)
    results: dict[str, Any] = {
        "benchmark": "overhead",
        "started_at": started.isoformat(timespec="seconds"),
        "command": "python -m bench.overhead " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": settings,
        "request": REQUEST,
        "machine": machine_facts(),
    }
    code = 0
    try:
        execute(args, scenarios, results, stamp)
    except KeyboardInterrupt:
        results["aborted"] = "interrupted"
        code = 130
    except SystemExit as stop:
        results["aborted"] = "terminated by a signal"
        code = stop.code if isinstance(stop.code, int) else 1
    except (BenchError, LoadError, subprocess.TimeoutExpired, OSError) as error:
        results["aborted"] = str(error)
        code = 1
    finally:
        results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        results["machine"]["loadavg_at_end"] = list(os.getloadavg())
        output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if "aborted" in results:
        print(f"aborted: {results['aborted']}", file=sys.stderr)
    if "summary" in results:
        print(markdown(results))
    print(f"\nraw results: {os.path.relpath(output, Path.cwd())}", file=sys.stderr)
    if code == 0 and results.get("failures"):
        code = 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
