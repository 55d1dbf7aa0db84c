"""Footprint: how fast the server starts, how much memory an idle worker holds, how fast the CLI answers.

One ``lockgate serve`` worker on a stub upstream (no local model), in a fresh data directory migrated
first, as an operator starts it:

- **startup**: from launching ``lockgate serve`` to ``/healthz`` answering, median over ``--starts``;
- **idle RSS**: the worker's resident memory once started and after one request through the gateway
  and one through the control API (``/proc/<pid>/status``, VmRSS);
- **CLI**: wall time of ``lockgate --help`` and of commands that only talk to the server (``whoami``,
  ``pointers``, ``releases list``), each run ``--calls`` times in a fresh process, median and max.

Raw results go to ``bench/results/footprint-<UTC timestamp>.json``; a Markdown table goes to stdout.

    python -m bench.footprint [--starts 5] [--calls 10]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.procs import Children, free_port

RESULTS = Path(__file__).with_name("results")
CONFIG = """\
providers:
  stub:
    kind: openai
    base_url: http://127.0.0.1:{port}/v1
models:
  - name: bench
    deployments:
      - provider: stub
        model: bench-upstream
"""
_TOKEN = re.compile(r"control token of user 'admin' \(shown once\): (lgc-\S+)")
_KEY = re.compile(r"admin key \(shown once, store it now\): (lg-\S+)")
CLI_COMMANDS: list[list[str]] = [["--help"], ["whoami"], ["pointers"], ["releases", "list"]]


def lockgate() -> str:
    exe = Path(sys.executable).with_name("lockgate")
    return str(exe) if exe.exists() else "lockgate"


def get(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def wait(check: Callable[[], bool], timeout: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if check():
            return time.perf_counter() - started
        time.sleep(0.01)
    raise TimeoutError("the server did not answer /healthz")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    with Children() as children:
        stub_port = free_port()
        stub = [sys.executable, "-m", "lockgate.testing.stub", "--port", str(stub_port)]
        children.spawn(stub, output=workdir / "stub.log", cwd=workdir)
        wait(lambda: get(f"http://127.0.0.1:{stub_port}/v1/models") == 200, 30)
        config = workdir / "lockgate.yaml"
        config.write_text(CONFIG.format(port=stub_port), encoding="utf-8")
        subprocess.run([lockgate(), "migrate"], cwd=workdir, check=True, capture_output=True, timeout=120)
        starts: list[float] = []
        token = key = ""
        rss: dict[str, float] = {}
        for attempt in range(args.starts):
            port = free_port()
            log = workdir / f"serve-{attempt}.log"
            serve = [
                lockgate(),
                "serve",
                "--config",
                str(config),
                "--port",
                str(port),
                "--log-level",
                "warning",
            ]
            launched = time.perf_counter()
            proc = children.spawn(serve, output=log, cwd=workdir)
            wait(lambda: get(f"http://127.0.0.1:{port}/healthz") == 200, 60)  # noqa: B023 - used at once
            starts.append(time.perf_counter() - launched)
            text = log.read_text()
            token = (_TOKEN.search(text) or [None, token])[1] or token
            key = (_KEY.search(text) or [None, key])[1] or key
            if attempt == args.starts - 1:
                rss["after_start_mb"] = rss_mb(proc.pid)
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    data=json.dumps(
                        {"model": "bench", "messages": [{"role": "user", "content": "hi"}]}
                    ).encode(),
                    headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=10):
                    pass
                get(f"http://127.0.0.1:{port}/api/v1/users/me", token)
                time.sleep(1.0)
                rss["after_requests_mb"] = rss_mb(proc.pid)
                cli = time_cli(args.calls, f"http://127.0.0.1:{port}", token, workdir)
            children.stop(proc, grace=30)
    return {
        "startup_s": {"median": statistics.median(starts), "max": max(starts), "runs": starts},
        "idle_rss_mb": rss,
        "cli_s": cli,
    }


def time_cli(calls: int, url: str, token: str, workdir: Path) -> dict[str, dict[str, float]]:
    env = {"PATH": str(Path(sys.executable).parent), "LOCKGATE_URL": url, "LOCKGATE_TOKEN": token}
    env["HOME"] = str(workdir)
    timings: dict[str, dict[str, float]] = {}
    for command in CLI_COMMANDS:
        runs = []
        for _ in range(calls):
            started = time.perf_counter()
            done = subprocess.run(
                [lockgate(), *command], env=env, capture_output=True, timeout=30, check=False
            )
            runs.append(time.perf_counter() - started)
            if done.returncode != 0:
                raise RuntimeError(f"lockgate {' '.join(command)} failed: {done.stderr.decode()[-500:]}")
        timings[" ".join(command)] = {"median": statistics.median(runs), "max": max(runs)}
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lockgate-footprint-") as temp:
        results = measure(args, Path(temp))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"footprint-{stamp}.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    startup, rss = results["startup_s"], results["idle_rss_mb"]
    print("| measure | value | budget |")
    print("|---|---|---|")
    print(f"| startup, launch to /healthz (median of {args.starts}) | {startup['median']:.2f} s | <= 1 s |")
    print(f"| idle RSS after start | {rss['after_start_mb']:.0f} MB | <= 100 MB |")
    print(
        f"| idle RSS after a gateway and a control request | {rss['after_requests_mb']:.0f} MB | <= 100 MB |"
    )
    for command, timing in results["cli_s"].items():
        times = f"{timing['median']:.3f} / {timing['max']:.3f} s"
        print(f"| `lockgate {command}` (median / max of {args.calls}) | {times} | <= 0.3 s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
