"""Rollout abort: how soon the candidate stops serving once ``rollout abort`` returns, under steady traffic.

``lockgate serve --workers 2`` (a fresh data directory, SQLite unless ``--database-url``) serves a route
from two stub upstreams: the current release's model from one, the candidate's from the other. Each
repetition ships a baseline release to prod, gives prod a canary strategy that holds the candidate at
50% (a stage that never completes), promotes a candidate into it, and sends route calls at a steady
``--rate`` from ``--clients`` threads, every call from a new user, so the gateways split them between
the arms. After ``--warmup`` seconds the rollout is aborted over the REST API
(``POST .../rollout/abort``, what ``lockgate rollout abort`` sends), and the calls go on for ``--after``
seconds. Measured per repetition:

- **switch (client)**: from the abort call returning to the last call sent that the candidate served
  (``x-lockgate-arm: candidate``); 0 when none was sent after it;
- **switch (request log)**: the same from the server's side: the latest arrival (``created_at`` minus
  latency) of a candidate call in the request log, minus the rollout's ``finished_at``;
- **failed**: calls that did not answer 200 (or did not answer) over the whole repetition, switch
  included.

The gateway workers learn of the abort from the store's change version: the worker that served the
abort at once, the other at its next poll (every 0.25 s). Raw results go to
``bench/results/rollout-<UTC timestamp>.json``; a Markdown table goes to stdout. The target is 1 s.

    python -m bench.rollout [--repeats 5] [--rate 100] [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import yaml

from bench.overhead import machine_facts
from bench.procs import Children, exit_on_sigterm, free_port

RESULTS = Path(__file__).with_name("results")
TENANT = "/api/v1/tenants/default"
TARGET_S = 1.0
_TOKEN = re.compile(r"control token of user 'admin' \(shown once\): (lgc-\S+)")
_KEY = re.compile(r"admin key \(shown once, store it now\): (lg-\S+)")
HOLD_AT_HALF: dict[str, Any] = {
    "strategy": "canary",
    "canary": {"stages": [{"weight": 50, "min_duration": 86400, "min_requests": 1_000_000}, {"weight": 100}]},
    "analysis": {"interval": 1},
}


def lockgate() -> str:
    exe = Path(sys.executable).with_name("lockgate")
    return str(exe) if exe.exists() else "lockgate"


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} within {timeout} s")


def ok(answer: httpx.Response) -> Any:
    if not answer.is_success:
        raise RuntimeError(
            f"{answer.request.method} {answer.request.url}: {answer.status_code} {answer.text}"
        )
    return answer.json()


# -- traffic -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sent:
    at: float  # monotonic, when the call was sent
    status: int  # 0: no answer
    arm: str | None


@dataclass
class Traffic:
    """Route calls at a steady total ``rate`` from ``clients`` threads, each call from a new user."""

    url: str
    key: str
    route: str
    rate: float
    clients: int
    sent: list[Sent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        period = self.clients / self.rate
        for i in range(self.clients):
            offset = i * period / self.clients  # spread the clients over one period
            self._threads.append(threading.Thread(target=self._run, args=(period, offset), daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self, period: float, offset: float) -> None:
        headers = {"authorization": f"Bearer {self.key}"}
        body: dict[str, Any] = {"model": f"route:{self.route}", "messages": [], "variables": {"q": "hi"}}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as client:
            due = time.monotonic() + offset
            while not self._stop.is_set():
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                due = max(due + period, time.monotonic())  # no bursts to catch up after a slow answer
                at = time.monotonic()
                try:
                    answer = client.post("/v1/chat/completions", json={**body, "user": uuid.uuid4().hex})
                except httpx.HTTPError as exc:
                    self.sent.append(Sent(at, 0, None))
                    self.errors.append(repr(exc))
                    continue
                self.sent.append(Sent(at, answer.status_code, answer.headers.get("x-lockgate-arm")))
                if answer.status_code != 200:
                    self.errors.append(f"{answer.status_code} {answer.text[:200]}")


# -- the installation --------------------------------------------------------------------------------


class Site:
    def __init__(self, args: argparse.Namespace, workdir: Path, children: Children) -> None:
        self.args = args
        self.workdir = workdir
        self.children = children
        self.database_url = args.database_url or f"sqlite:///{workdir / '.lockgate' / 'lockgate.db'}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = self.key = ""

    def start(self) -> None:
        stubs = {}
        for name in ("base", "cand"):
            port = free_port()
            command = [sys.executable, "-m", "lockgate.testing.stub", "--port", str(port), "--name", name]
            command += ["--latency-ms", str(self.args.latency_ms)]
            self.children.spawn(command, output=self.workdir / f"stub-{name}.log", cwd=self.workdir)
            stubs[name] = f"http://127.0.0.1:{port}/v1"
            wait_until(lambda: httpx.get(f"{stubs[name]}/models").is_success, 30, f"stub {name}")  # noqa: B023
        config = {
            "providers": {name: {"kind": "openai", "base_url": url} for name, url in stubs.items()},
            "models": [
                {"name": f"m-{name}", "deployments": [{"provider": name, "model": "s"}]} for name in stubs
            ],
            "control": {"gates_required": False},
        }
        path = self.workdir / "lockgate.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        # The children inherit this process's environment: a store and data directory of their own.
        os.environ["LOCKGATE_DATA_DIR"] = str(self.workdir / ".lockgate")
        os.environ["LOCKGATE_DATABASE_URL"] = self.database_url
        for name in ("LOCKGATE_KEY_PEPPER", "LOCKGATE_SIGNING_KEY"):
            os.environ.pop(name, None)
        subprocess.run(
            [lockgate(), "migrate"], cwd=self.workdir, check=True, capture_output=True, timeout=120
        )
        serve = [lockgate(), "serve", "--config", str(path), "--port", str(self.port)]
        serve += ["--workers", str(self.args.workers), "--log-level", "warning"]
        log = self.workdir / "serve.log"
        self.children.spawn(serve, output=log, cwd=self.workdir)
        wait_until(lambda: httpx.get(f"{self.url}/healthz").is_success, 60, "lockgate serve")
        text = log.read_text()
        self.token = _match(_TOKEN, text)
        self.key = _match(_KEY, text)
        self.admin = httpx.Client(base_url=self.url, headers=_bearer(self.token), timeout=30)
        for name in ("base", "cand"):
            card = {"name": f"{name}-llm", "version": "1", "gateway_model": f"m-{name}", "license": "x"}
            card |= {"intended_use": "benchmark", "owner_team": "bench"}
            ok(self.admin.post(f"{TENANT}/models", json=card))
        invited = ok(self.admin.post(f"{TENANT}/invitations", json={"name": "april", "roles": ["approver"]}))
        redeemed = ok(httpx.post(f"{self.url}/api/v1/invitations/redeem", headers=_bearer(invited["code"])))
        self.approver = httpx.Client(base_url=self.url, headers=_bearer(redeemed["token"]), timeout=30)

    def deliver(self, route: str, release: str) -> None:
        ok(self.admin.put(f"{TENANT}/routes/{route}/environments/dev", json={"release_id": release}))
        ok(self.admin.post(f"{TENANT}/routes/{route}/promote", json={"to": "stage"}))
        ok(self.approver.post(f"{TENANT}/releases/{release}/approvals", json={"environment": "prod"}))
        ok(self.admin.post(f"{TENANT}/routes/{route}/promote", json={"to": "prod"}))

    def roll_out(self, route: str) -> None:
        prompt = {
            "name": route,
            "version": "1.0.0",
            "messages": [{"role": "user", "content": "{{ q }}"}],
            "variables": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
            "settings": {"model": "base-llm:1"},
        }
        ok(self.admin.post(f"{TENANT}/prompts", json=prompt))
        made = []
        for model in ("base-llm:1", "cand-llm:1"):
            request = {"route": route, "prompt": f"{route}@1.0.0", "model": model}
            made.append(ok(self.admin.post(f"{TENANT}/releases", json=request))["id"])
        self.deliver(route, made[0])
        ok(self.admin.put(f"{TENANT}/routes/{route}/environments/prod/strategy", json=HOLD_AT_HALF))
        self.deliver(route, made[1])

    def candidate_arrivals(self, rollout_id: str) -> list[datetime]:
        """When each call the candidate served arrived, from the request log (written at the end)."""
        engine = sa.create_engine(self.database_url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(
                    sa.text(
                        "SELECT created_at, latency_ms FROM request_log "
                        "WHERE rollout_id = :rollout AND arm = 'candidate'"
                    ),
                    {"rollout": rollout_id},
                ).all()
        finally:
            engine.dispose()
        return [_utc(created) - timedelta(milliseconds=float(latency)) for created, latency in rows]


def _utc(value: datetime | str) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def _match(pattern: re.Pattern[str], text: str) -> str:
    found = pattern.search(text)
    if found is None:
        raise RuntimeError(f"lockgate serve did not print {pattern.pattern}")
    return found.group(1)


# -- one repetition ------------------------------------------------------------------------------------


def repetition(site: Site, args: argparse.Namespace, n: int) -> dict[str, Any]:
    route = f"abort-{n}"
    site.roll_out(route)
    path = f"{TENANT}/routes/{route}/environments/prod/rollout"
    rollout_id = ok(site.admin.get(path))["id"]
    traffic = Traffic(site.url, site.key, route, args.rate, args.clients)
    traffic.start()
    try:
        time.sleep(args.warmup)
        recent = [s for s in list(traffic.sent) if s.at >= time.monotonic() - 1.0]
        if not any(s.arm == "candidate" for s in recent):
            raise RuntimeError("the candidate served nothing in the last second before the abort")
        asked = time.monotonic()
        aborted = ok(site.admin.post(f"{path}/abort"))
        returned = time.monotonic()
        time.sleep(args.after)
    finally:
        traffic.stop()
    if aborted["status"] != "aborted":
        raise RuntimeError(f"the abort left the rollout {aborted['status']}")
    sent = list(traffic.sent)
    late = [s.at - returned for s in sent if s.arm == "candidate" and s.at >= returned]
    finished = datetime.fromisoformat(aborted["finished_at"])
    arrivals = site.candidate_arrivals(rollout_id)
    after_finish = [(a - finished).total_seconds() for a in arrivals if a >= finished]
    return {
        "route": route,
        "rollout_id": rollout_id,
        "abort_call_s": returned - asked,
        "switch_client_s": max(late, default=0.0),
        "candidate_calls_after_abort_returned": len(late),
        "switch_request_log_s": max(after_finish, default=0.0),
        "candidate_calls_after_finished_at": len(after_finish),
        "calls": len(sent),
        "calls_before_abort": sum(1 for s in sent if s.at < asked),
        "candidate_calls_before_abort": sum(1 for s in sent if s.at < asked and s.arm == "candidate"),
        "failed": sum(1 for s in sent if s.status != 200),
        "errors": traffic.errors[:20],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="lockgate serve --workers")
    parser.add_argument("--rate", type=float, default=100.0, help="route calls per second, all clients")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--latency-ms", type=float, default=20.0, help="the stub upstreams' latency")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of traffic before the abort")
    parser.add_argument("--after", type=float, default=2.0, help="seconds of traffic after it")
    parser.add_argument("--database-url", default=None, help="default: SQLite in the data directory")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    machine = {k: v for k, v in machine_facts().items() if k not in ("wrk", "hey")}
    runs = []
    with tempfile.TemporaryDirectory(prefix="lockgate-rollout-") as temp, Children() as children:
        site = Site(args, Path(temp), children)
        site.start()
        for n in range(args.repeats):
            runs.append(repetition(site, args, n))
    switches = [r["switch_client_s"] for r in runs]
    logged = [r["switch_request_log_s"] for r in runs]
    summary = {
        "switch_client_s": {"median": statistics.median(switches), "max": max(switches)},
        "switch_request_log_s": {"median": statistics.median(logged), "max": max(logged)},
        "failed": sum(r["failed"] for r in runs),
        "calls": sum(r["calls"] for r in runs),
        "target_s": TARGET_S,
        "met": max(switches) <= TARGET_S and max(logged) <= TARGET_S,
    }
    settings = {k: v for k, v in vars(args).items() if k != "database_url"}
    settings["store"] = "postgresql" if args.database_url else "sqlite"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    result = {"settings": settings, "machine": machine, "runs": runs, "summary": summary}
    (RESULTS / f"rollout-{stamp}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(table(runs, summary, args))
    print(f"\nraw results: bench/results/rollout-{stamp}.json")
    return 0 if summary["met"] and summary["failed"] == 0 else 1


def table(runs: list[dict[str, Any]], summary: dict[str, Any], args: argparse.Namespace) -> str:
    store = "PostgreSQL" if args.database_url else "SQLite"
    lines = [
        f"lockgate serve --workers {args.workers} ({store}), {args.rate:g} route calls/s from "
        f"{args.clients} clients, canary held at 50%; abort after {args.warmup:g} s",
        "",
        "| Run | abort call | last candidate call after abort returned (client) | after finished_at "
        "(request log) | candidate calls after abort | calls | failed |",
        "|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for i, r in enumerate(runs, 1):
        lines.append(
            f"| {i} | {r['abort_call_s'] * 1000:.0f} ms | {r['switch_client_s'] * 1000:.0f} ms | "
            f"{r['switch_request_log_s'] * 1000:.0f} ms | {r['candidate_calls_after_abort_returned']} | "
            f"{r['calls']} | {r['failed']} |"
        )
    client, logged = summary["switch_client_s"], summary["switch_request_log_s"]
    lines.append(
        f"| median / max | | {client['median'] * 1000:.0f} / {client['max'] * 1000:.0f} ms | "
        f"{logged['median'] * 1000:.0f} / {logged['max'] * 1000:.0f} ms | | {summary['calls']} | "
        f"{summary['failed']} |"
    )
    verdict = "met" if summary["met"] else "NOT met"
    lines += [
        "",
        f"Target: no candidate call later than {TARGET_S:g} s after the abort returned: {verdict}.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
