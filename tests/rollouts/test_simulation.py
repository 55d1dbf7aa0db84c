"""Canary rollouts as an operator lives them: ``lockgate serve`` judging a candidate on live traffic.

Each test runs a real server (``lockgate migrate``, then ``lockgate serve``) on two stub upstreams in
processes of their own: the baseline release's model ``m-base`` answers from one, the candidate
release's model ``m-cand`` from the other, and each stub is scripted to misbehave as the case needs
(errors at a rate, extra latency). The control plane is driven over the REST API with the admin's
token from the server's first-start output and an invited approver (four eyes); the test sends route
traffic from many users at once and watches what a deployer would: the rollout's status, the
environment's release, the answers, and the signed evidence, which must verify offline.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from lockgate.gates.evidence_format import verify_bundle
from tests.support.processes import LockgateServer, StubUpstream

T = TypeVar("T")
TENANT = "/api/v1/tenants/default"
LATENCY_MS = 100  # both upstreams answer this slowly, so that gateway jitter is small beside it

# Fast enough for a test, slow enough that a stage is judged on more than a handful of calls.
CANARY: dict[str, Any] = {
    "strategy": "canary",
    "canary": {
        "stages": [
            {"weight": 20, "min_duration": 2, "min_requests": 60},
            {"weight": 50, "min_duration": 1, "min_requests": 40},
            {"weight": 100},
        ]
    },
    "analysis": {"interval": 1, "min_requests": 30, "thresholds": {"max_error_rate_ratio": 1.5}},
}


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, every: float = 0.2) -> T:
    """Poll ``probe`` until it returns something other than None or False; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None and found is not False:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(every)


# --- the installation ----------------------------------------------------------------------------


class Upstreams:
    """The two stub upstreams: ``base`` serves model m-base, ``cand`` serves m-cand."""

    def __init__(self) -> None:
        self.base = StubUpstream("base", latency_ms=LATENCY_MS)
        self.cand = StubUpstream("cand", latency_ms=LATENCY_MS)

    def start(self) -> Upstreams:
        self.base.start()
        self.cand.start()
        return self

    def stop(self) -> None:
        self.base.kill()
        self.cand.kill()

    def config(self, directory: Path) -> Path:
        """A lockgate.yaml serving both models, without retries or circuit breaking, so that what an
        upstream does is what the callers (and the rollout's analysis) see; no gate is required."""
        path = directory / "lockgate.yaml"
        providers = {
            "base": {"kind": "openai", "base_url": self.base.base_url},
            "cand": {"kind": "openai", "base_url": self.cand.base_url},
        }
        models = [
            {"name": "m-base", "deployments": [{"provider": "base", "model": "s"}]},
            {"name": "m-cand", "deployments": [{"provider": "cand", "model": "s"}]},
        ]
        config = {
            "providers": providers,
            "models": models,
            "routing": {"retries": 0, "failure_threshold": 1_000_000},
            "control": {"gates_required": False},
        }
        path.write_text(yaml.safe_dump(config))
        return path


def shown_once(output: str, label: str) -> str:
    """A secret ``lockgate serve`` prints on first start, e.g. the admin key or control token."""
    return output.split(label)[1].split(maxsplit=1)[0]


def control(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=30)


def ok(answer: httpx.Response) -> Any:
    request = answer.request
    assert answer.is_success, f"{request.method} {request.url}: {answer.status_code} {answer.text}"
    return answer.json() if answer.content else None


@dataclass
class Site:
    """A running ``lockgate serve`` on the two upstreams, and the people who drive it over REST."""

    server: LockgateServer
    upstreams: Upstreams
    admin_token: str  # the bootstrap admin: registers, pushes, creates releases, deploys
    approver_token: str  # april, invited as approver: the second pair of eyes for prod
    key: str  # the bootstrap admin's API key, for route traffic

    def __post_init__(self) -> None:
        self.admin = control(self.url, self.admin_token)
        self.approver = control(self.url, self.approver_token)

    @property
    def url(self) -> str:
        return self.server.url

    def on(self, server: LockgateServer) -> Site:
        """The same people, talking to another server of the same store."""
        return Site(server, self.upstreams, self.admin_token, self.approver_token, self.key)

    def close(self) -> None:
        self.admin.close()
        self.approver.close()

    # --- setting up a route --------------------------------------------------------------------

    def releases(self, route: str) -> tuple[str, str]:
        """One prompt for ``route`` and two releases of it: (baseline on m-base, candidate on m-cand)."""
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
        return made[0], made[1]

    def deliver(self, route: str, release: str) -> None:
        """dev -> stage -> prod, approved for prod by april; prod starts a rollout if it has a strategy."""
        ok(self.admin.put(f"{TENANT}/routes/{route}/environments/dev", json={"release_id": release}))
        ok(self.admin.post(f"{TENANT}/routes/{route}/promote", json={"to": "stage"}))
        ok(self.approver.post(f"{TENANT}/releases/{release}/approvals", json={"environment": "prod"}))
        ok(self.admin.post(f"{TENANT}/routes/{route}/promote", json={"to": "prod"}))

    def roll_out(self, route: str, strategy: dict[str, Any]) -> tuple[str, str]:
        """Ship a baseline to prod, give prod ``strategy``, then promote a candidate: its rollout runs."""
        baseline, candidate = self.releases(route)
        self.deliver(route, baseline)
        ok(self.admin.put(f"{TENANT}/routes/{route}/environments/prod/strategy", json=strategy))
        self.deliver(route, candidate)
        assert self.serving(route) == baseline  # the pointer waits for the rollout
        return baseline, candidate

    # --- watching ------------------------------------------------------------------------------

    def rollout(self, route: str) -> dict[str, Any]:
        found: dict[str, Any] = ok(self.admin.get(f"{TENANT}/routes/{route}/environments/prod/rollout"))
        return found

    def settled(self, route: str, timeout: float) -> dict[str, Any]:
        """The rollout once it has ended (promoted, rolled back, ...)."""

        def ended() -> dict[str, Any] | None:
            found = self.rollout(route)
            return found if found["status"] not in ("running", "paused") else None

        return wait_for(ended, timeout, f"the rollout of {route} ended")

    def serving(self, route: str) -> str:
        pointers = ok(self.admin.get(f"{TENANT}/routes", params={"route": route}))
        return str(next(p["release_id"] for p in pointers if p["environment"] == "prod"))

    def rollout_evidence(self, release: str) -> list[dict[str, Any]]:
        """The candidate's rollout evidence records, oldest first, each verified offline."""
        public_key = ok(self.admin.get("/api/v1/signing-key"))["public_key"]
        records = []
        for summary in ok(self.admin.get(f"{TENANT}/evidence", params={"release": release})):
            if summary["action"] != "rollout":
                continue
            bundle = self.admin.get(f"{TENANT}/evidence/{summary['id']}/bundle")
            assert bundle.status_code == 200, bundle.text
            verified = verify_bundle(bundle.content, public_key)
            assert verified.ok, [c for c in verified.checks if not c.ok]
            records.append(ok(self.admin.get(f"{TENANT}/evidence/{summary['id']}"))["record"])
        return records


def open_site(server: LockgateServer, upstreams: Upstreams) -> Site:
    """The control plane of a started server: register both models, invite april as approver."""
    output = server.output()
    token = shown_once(output, "control token of user 'admin' (shown once): ")
    key = shown_once(output, "admin key (shown once, store it now): ")
    with control(server.url, token) as admin:
        for name, model in (("base-llm", "m-base"), ("cand-llm", "m-cand")):
            card = {"name": name, "version": "1", "gateway_model": model, "license": "x"}
            card |= {"intended_use": "tests", "owner_team": "t"}
            ok(admin.post(f"{TENANT}/models", json=card))
        invited = ok(admin.post(f"{TENANT}/invitations", json={"name": "april", "roles": ["approver"]}))
    redeemed = ok(httpx.post(f"{server.url}/api/v1/invitations/redeem", headers=bearer(invited["code"])))
    return Site(server, upstreams, token, redeemed["token"], key)


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


@pytest.fixture
def upstreams() -> Iterator[Upstreams]:
    started = Upstreams().start()
    yield started
    started.stop()


@pytest.fixture
def site(database_url: str, tmp_path: Path, upstreams: Upstreams) -> Iterator[Site]:
    env = {"LOCKGATE_DATABASE_URL": database_url, "LOCKGATE_DATA_DIR": str(tmp_path / ".lockgate")}
    env |= {"LOCKGATE_KEY_PEPPER": "", "LOCKGATE_SIGNING_KEY": ""}
    server = LockgateServer(tmp_path, upstreams.config(tmp_path), env).start()
    opened = open_site(server, upstreams)
    try:
        yield opened
    finally:
        opened.close()
        assert server.stop(), server.output()[-3000:]


# --- traffic -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    started: float  # monotonic
    status: int
    arm: str | None  # x-lockgate-arm: which arm of a rollout served it
    release: str | None  # x-lockgate-release
    request_id: str | None  # x-request-id


@dataclass
class Traffic:
    """Calls to a route from ``workers`` threads, each call from a user never seen before, until stopped."""

    url: str
    key: str
    route: str
    workers: int = 6
    then: Callable[[Answer], None] | None = None  # what the caller does with each answer, if anything
    answers: list[Answer] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Traffic:
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.workers)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, headers=bearer(self.key), timeout=30) as client:
            while not self._stop.is_set():
                try:
                    answer = call(client, self.route)
                except httpx.TransportError as exc:
                    self.failures.append(repr(exc))
                    continue
                self.answers.append(answer)
                if self.then is not None:
                    self.then(answer)

    def since(self, moment: float) -> list[Answer]:
        return [a for a in list(self.answers) if a.started >= moment]

    def count(self, arm: str) -> int:
        return sum(1 for a in list(self.answers) if a.arm == arm)


def call(client: httpx.Client, route: str, user: str | None = None) -> Answer:
    started = time.monotonic()
    body = {"model": f"route:{route}", "messages": [], "variables": {"q": "hi"}}
    body["user"] = user or f"user-{uuid.uuid4().hex[:12]}"
    answer = client.post("/v1/chat/completions", json=body)
    headers = answer.headers
    arm, release = headers.get("x-lockgate-arm"), headers.get("x-lockgate-release")
    return Answer(started, answer.status_code, arm, release, headers.get("x-request-id"))


def served_only_by(site: Site, route: str, release: str, n: int = 20) -> None:
    """Once the gateway has caught up, every new call is answered by ``release`` and no arm is named."""
    with httpx.Client(base_url=site.url, headers=bearer(site.key), timeout=30) as client:

        def switched() -> bool:
            answer = call(client, route)
            return answer.release == release and answer.arm is None

        wait_for(switched, 5, f"calls to {route} served by {release}", every=0.05)
        answers = [call(client, route) for _ in range(n)]
    assert {(a.status, a.release, a.arm) for a in answers} == {(200, release, None)}


def events(records: list[dict[str, Any]]) -> list[str]:
    return [r["rollout"]["event"] for r in records]


# --- the cases -----------------------------------------------------------------------------------


def test_a_candidate_with_three_times_the_errors_is_rolled_back_in_its_first_stage(site: Site) -> None:
    site.upstreams.base.script(behaviour={"error_rate": 0.15, "seed": 1})
    site.upstreams.cand.script(behaviour={"error_rate": 0.45, "seed": 2})
    baseline, candidate = site.roll_out("errors", CANARY)
    with Traffic(site.url, site.key, "errors") as traffic:
        ended = site.settled("errors", 60)
    assert (ended["status"], ended["stage"], ended["candidate_share"]) == ("rolled_back", 0, 0.0)
    assert "error rate" in ended["reason"]
    assert traffic.count("candidate") > 0  # it did serve, and was judged on what it served
    assert site.serving("errors") == baseline
    site.upstreams.base.script(behaviour=None)
    served_only_by(site, "errors", baseline)

    records = site.rollout_evidence(candidate)
    assert events(records)[0] == "start"
    assert events(records)[-1] == "rollback"
    assert set(events(records)) <= {"start", "analysis", "rollback"}  # never left its first stage
    last = records[-1]
    assert last["decision"] == "deny"
    assert last["rollout"]["metrics"]["verdict"] == "fail"
    assert last["rollout"]["metrics"]["failing"] == ["error_rate"]
    arms = last["rollout"]["metrics"]["arms"]
    assert arms["candidate"]["error_rate"] > 1.5 * arms["baseline"]["error_rate"] > 0


def test_a_candidate_with_twice_the_p95_latency_is_rolled_back(site: Site) -> None:
    site.upstreams.cand.script(behaviour={"latency_ms": LATENCY_MS})  # 100 ms more: twice the baseline
    baseline, candidate = site.roll_out("slow", CANARY)
    with Traffic(site.url, site.key, "slow"):
        ended = site.settled("slow", 60)
    assert (ended["status"], ended["candidate_share"]) == ("rolled_back", 0.0)
    assert "p95 latency" in ended["reason"]
    assert site.serving("slow") == baseline
    served_only_by(site, "slow", baseline)

    records = site.rollout_evidence(candidate)
    assert (events(records)[0], events(records)[-1]) == ("start", "rollback")
    failed = records[-1]["rollout"]["metrics"]
    assert failed["failing"] == ["p95_latency"]
    assert failed["arms"]["candidate"]["p95_latency_ms"] > 1.5 * failed["arms"]["baseline"]["p95_latency_ms"]


def test_a_healthy_candidate_walks_every_stage_and_becomes_the_release(site: Site) -> None:
    baseline, candidate = site.roll_out("healthy", CANARY)
    with Traffic(site.url, site.key, "healthy") as traffic:
        ended = site.settled("healthy", 90)
    assert (ended["status"], ended["candidate_share"]) == ("promoted", 1.0), ended["reason"]
    assert site.serving("healthy") == candidate
    assert traffic.failures == []
    assert {a.status for a in traffic.answers} == {200}
    served_only_by(site, "healthy", candidate)

    records = site.rollout_evidence(candidate)
    assert events(records)[0] == "start"
    assert [e for e in events(records) if e != "analysis"] == ["start", "stage", "promote"]
    stage = next(r for r in records if r["rollout"]["event"] == "stage")
    assert (stage["rollout"]["stage"], stage["rollout"]["candidate_share"]) == (1, 0.5)
    assert records[-1]["decision"] == "allow"
    assert records[-1]["rollout"]["status"] == "promoted"
    assert baseline == records[-1]["rollout"]["baseline_release_id"]


def test_too_little_traffic_is_inconclusive_and_promotes_nothing(site: Site) -> None:
    baseline, candidate = site.roll_out("quiet", CANARY)
    with httpx.Client(base_url=site.url, headers=bearer(site.key), timeout=30) as client:
        answers = [call(client, "quiet") for _ in range(10)]  # far below the 30 per arm a verdict needs
    assert {a.status for a in answers} == {200}

    def three_analyses() -> dict[str, Any] | None:
        found = site.rollout("quiet")
        return found if len(found["analyses"]) >= 3 else None

    held = wait_for(three_analyses, 30, "three analyses of the quiet rollout")
    assert (held["status"], held["stage"], held["candidate_share"]) == ("running", 0, 0.2)
    assert {a["verdict"] for a in held["analyses"]} == {"inconclusive"}
    assert all("not enough traffic" in " ".join(a["reasons"]) for a in held["analyses"])
    assert site.serving("quiet") == baseline
    assert sum(held["traffic"].values()) == 10

    aborted = ok(site.admin.post(f"{TENANT}/routes/quiet/environments/prod/rollout/abort"))
    assert (aborted["status"], aborted["candidate_share"]) == ("aborted", 0.0)
    assert site.serving("quiet") == baseline
    records = site.rollout_evidence(candidate)
    assert events(records)[0] == "start"
    assert events(records)[-1] == "abort"
    analyses = [r for r in records if r["rollout"]["event"] == "analysis"]
    assert len(analyses) >= 3
    assert {r["rollout"]["metrics"]["verdict"] for r in analyses} == {"inconclusive"}
