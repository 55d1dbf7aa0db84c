"""Load generators: ``wrk`` for the maximum rate, ``hey`` for fixed rates; runners and output parsers.

``hey`` starts all its workers together and each one sends on its own ticker, so ``hey -c 30 -q 10``
sends bursts of 30 simultaneous requests every 100 ms. That measures how fast a burst drains, not what
one request costs. A *paced* schedule therefore runs ``C`` single-connection ``hey`` processes of ``Q``
requests a second each, started ``1 / (C * Q)`` seconds apart: the same rate, without the lockstep.
A *burst* schedule is one ``hey -c C -q Q``, as hey does it.

Latencies come from ``hey -o csv`` (one row per answered request, 0.1 ms resolution), so percentiles
over several processes are exact. hey leaves requests that failed in transport out of that CSV, so
callers compare the row count with what the upstream received.
"""

from __future__ import annotations

import csv
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import Children, tail

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


class LoadError(RuntimeError):
    """A load generator failed or printed something that cannot be read."""


# -- wrk ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WrkResult:
    rps: float
    requests: int
    seconds: float
    non_2xx_3xx: int
    socket_errors: dict[str, int]
    latency_ms: dict[str, float]
    raw: str = field(repr=False)

    @property
    def errors(self) -> int:
        return self.non_2xx_3xx + sum(self.socket_errors.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "rps": self.rps,
            "requests": self.requests,
            "seconds": self.seconds,
            "non_2xx_3xx": self.non_2xx_3xx,
            "socket_errors": self.socket_errors,
            "latency_ms": self.latency_ms,
            "errors": self.errors,
            "raw": self.raw,
        }


def wrk_script(path: Path, body: str, headers: dict[str, str]) -> None:
    """A Lua script making every wrk request a POST of ``body`` with ``headers``."""

    def long_string(text: str) -> str:
        level = 1
        while f"]{'=' * level}]" in text:
            level += 1
        return f"[{'=' * level}[{text}]{'=' * level}]"

    lines = ['wrk.method = "POST"', f"wrk.body = {long_string(body)}"]
    lines += [f"wrk.headers[ {long_string(k)} ] = {long_string(v)}" for k, v in headers.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNIT_MS[unit]


def parse_wrk(text: str) -> WrkResult:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)\b", text, re.MULTILINE)
    if rps is None or total is None:
        raise LoadError(f"cannot read wrk output:\n{text[-2000:]}")
    non_2xx = re.search(r"^\s*Non-2xx or 3xx responses:\s+(\d+)", text, re.MULTILINE)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text, re.MULTILINE
    )
    socket_errors = dict.fromkeys(("connect", "read", "write", "timeout"), 0)
    if sockets is not None:
        socket_errors = dict(zip(socket_errors, (int(g) for g in sockets.groups()), strict=True))
    latency: dict[str, float] = {}
    distribution = text.partition("Latency Distribution")[2]
    for pct, value, unit in re.findall(r"^\s*(\d+)%\s+([\d.]+)(us|ms|s|m|h)\s*$", distribution, re.MULTILINE):
        latency[f"p{pct}"] = _ms(value, unit)
    return WrkResult(
        rps=float(rps.group(1)),
        requests=int(total.group(1)),
        seconds=_ms(total.group(2), total.group(3)) / 1000.0,
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=socket_errors,
        latency_ms=latency,
        raw=text,
    )


def run_wrk(
    children: Children,
    url: str,
    script: Path,
    *,
    connections: int,
    threads: int,
    seconds: float,
    output: Path,
) -> WrkResult:
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script), url]
    proc = children.spawn(args, output=output)
    try:
        code = proc.wait(seconds + 60)
    finally:
        children.stop(proc)
    text = output.read_text(encoding="utf-8", errors="replace")
    if code != 0:
        raise LoadError(f"wrk exited with {code}:\n{tail(output)}")
    return parse_wrk(text)


# -- hey ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Schedule:
    """``processes`` hey processes, each ``hey -c concurrency -q qps``, started ``stagger`` s apart."""

    kind: str
    rate: int
    processes: int
    concurrency: int
    qps: float

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.rate}"

    @property
    def stagger(self) -> float:
        return 1.0 / self.rate if self.processes > 1 else 0.0

    def describe(self) -> str:
        if self.processes > 1:
            return f"{self.processes} x hey -c {self.concurrency} -q {self.qps:g}, staggered"
        return f"hey -c {self.concurrency} -q {self.qps:g}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rate": self.rate,
            "processes": self.processes,
            "concurrency": self.concurrency,
            "qps_per_worker": self.qps,
            "stagger_s": self.stagger,
            "describe": self.describe(),
        }


def paced(rate: int, connections: int) -> Schedule:
    return Schedule("paced", rate, connections, 1, rate / connections)


def burst(rate: int, qps: float) -> Schedule:
    concurrency = round(rate / qps)
    if concurrency < 1 or not math.isclose(concurrency * qps, rate):
        raise ValueError(f"rate {rate} is not a whole multiple of {qps:g} requests a second")
    return Schedule("burst", rate, 1, concurrency, qps)


@dataclass(frozen=True, slots=True)
class HeyResult:
    seconds: float
    expected: int
    answered: int
    statuses: dict[int, int]
    latency_ms: dict[str, float]

    @property
    def non_200(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200)

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def achieved_rps(self) -> float:
        return self.answered / self.seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "expected": self.expected,
            "answered": self.answered,
            "achieved_rps": self.achieved_rps,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "non_200": self.non_200,
            "latency_ms": self.latency_ms,
        }


def percentile(ordered: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def parse_hey_csv(text: str) -> tuple[list[float], dict[int, int]]:
    """Latencies in ms and status counts from ``hey -o csv``."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    columns: dict[str, int] | None = None
    for row in csv.reader(text.splitlines()):
        if not row:
            continue
        if columns is None:
            if "response-time" in row and "status-code" in row:
                columns = {name: i for i, name in enumerate(row)}
            continue
        try:
            seconds = float(row[columns["response-time"]])
            status = int(row[columns["status-code"]])
        except (ValueError, IndexError):
            continue
        latencies.append(seconds * 1000.0)
        statuses[status] = statuses.get(status, 0) + 1
    if columns is None:
        raise LoadError(f"hey printed no CSV header:\n{text[-2000:]}")
    return latencies, statuses


def run_hey(
    children: Children,
    schedule: Schedule,
    url: str,
    *,
    body: str,
    headers: dict[str, str],
    seconds: float,
    workdir: Path,
    tag: str,
) -> HeyResult:
    base = ["hey", "-z", f"{seconds:g}s", "-c", str(schedule.concurrency), "-q", f"{schedule.qps:g}"]
    base += ["-m", "POST", "-T", "application/json", "-o", "csv", "-d", body]
    for name, value in headers.items():
        base += ["-H", f"{name}: {value}"]
    outputs = [workdir / f"{tag}-hey{i}.csv" for i in range(schedule.processes)]
    procs = []
    started = time.perf_counter()
    try:
        for i, output in enumerate(outputs):
            delay = started + i * schedule.stagger - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            procs.append(children.spawn([*base, url], output=output, stderr_too=False))
        codes = [proc.wait(seconds + 60) for proc in procs]
    finally:
        for proc in procs:
            children.stop(proc)
    for code, output in zip(codes, outputs, strict=True):
        if code != 0:
            raise LoadError(f"hey exited with {code}:\n{tail(output)}")
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    for output in outputs:
        lats, counts = parse_hey_csv(output.read_text(encoding="utf-8", errors="replace"))
        latencies += lats
        for status, n in counts.items():
            statuses[status] = statuses.get(status, 0) + n
    latencies.sort()
    summary = {f"p{p:g}": percentile(latencies, p) for p in (50, 90, 99, 99.9)}
    summary["mean"] = sum(latencies) / len(latencies) if latencies else math.nan
    summary["max"] = latencies[-1] if latencies else math.nan
    expected = schedule.processes * schedule.concurrency * math.floor(schedule.qps * seconds)
    return HeyResult(seconds, expected, len(latencies), statuses, summary)
