"""``lockgate eval`` as a user runs it: a client that queues runs on the server and follows them.

The server runs every case through its own gateway; the CLI only asks, follows, detaches (Ctrl-C or
``--detach``), cancels and fetches the reports. The restart test is the promise of a resumable run:
Ctrl-C detaches, a graceful server stop in the middle of the run loses nothing, and after a restart the
same command follows the same run to completion, with every case reaching the upstream exactly once.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
import yaml

from lockgate.instance import Instance
from lockgate.server.bootstrap import Bootstrap
from lockgate.services import Services
from lockgate.store.tables import eval_results
from tests.support.cli import Cli
from tests.support.gateway import run_server, stub_config
from tests.support.processes import LockgateServer, StubUpstream, stub_config_file

ROUTE = "support-answer"
DATASET = "golden"
RUN_ID = re.compile(r"run_[0-9a-f]{24}")
QUESTION = re.compile(r'"answer": "(?P<question>q-\d+)"')


# --- what a user writes and pushes before any eval --------------------------------------------------


def write_files(directory: Path) -> None:
    card = {
        "name": "support-llm",
        "version": "1",
        "gateway_model": "m",
        "license": "apache-2.0",
        "intended_use": "answering support questions",
        "owner_team": "support-platform",
    }
    (directory / "card.yaml").write_text(yaml.safe_dump(card))
    prompt = {
        "name": ROUTE,
        "version": "1.0.0",
        "messages": [
            {"role": "system", "content": "You answer questions about {{ product }}."},
            {"role": "user", "content": 'reply:{"answer": "{{ question }}"}'},
        ],
        "variables": {
            "type": "object",
            "properties": {"product": {"type": "string"}, "question": {"type": "string"}},
            "required": ["product", "question"],
        },
        "settings": {"model": "support-llm@champion", "temperature": 0.1, "max_tokens": 64},
        "output_schema": {
            "type": "object",
            "properties": {"answer": {"type": "string"}},
            "required": ["answer"],
        },
    }
    (directory / "prompt.yaml").write_text(yaml.safe_dump(prompt))


def write_dataset(directory: Path, cases: int, name: str = DATASET) -> Path:
    """A dataset whose every case is recognisable upstream by its question, ``q-<n>``."""
    rows = [
        {
            "id": f"case-{i:03d}",
            "variables": {"product": "lockgate", "question": f"q-{i}"},
            "facts": [f"q-{i}"],
        }
        for i in range(cases)
    ]
    (directory / f"{name}.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    spec = {"name": name, "cases": f"{name}.jsonl", "scorers": [{"type": "json_valid"}, {"type": "contains"}]}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def prepare(cli: Cli, directory: Path, cases: int) -> str:
    """Register the model, push the prompt and the dataset, create a release; its id."""
    write_files(directory)
    cli.ok("models", "register", str(directory / "card.yaml"))
    cli.ok("models", "alias", "support-llm", "champion", "1")
    cli.ok("prompts", "push", str(directory / "prompt.yaml"))
    pushed = cli.ok("datasets", "push", str(write_dataset(directory, cases)))
    assert pushed.stdout.startswith(f"{DATASET}@1  {cases} cases"), pushed.stdout
    release = cli.ok("releases", "create", "--route", ROUTE, "--prompt", f"{ROUTE}@1.0.0").stdout.strip()
    assert release, "releases create printed no id"
    return release


def asked(stub: StubUpstream) -> Counter[str]:
    """How often each question reached the upstream."""
    counts: Counter[str] = Counter()
    for request in stub.received():
        if request["path"].endswith("/chat/completions"):
            match = QUESTION.search(str(request["body"]["messages"][-1]["content"]))
            assert match is not None, request["body"]
            counts[match["question"]] += 1
    return counts


def run_id_in(text: str) -> str:
    match = RUN_ID.search(text)
    assert match is not None, text
    return match.group(0)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def eventually(what: str, check: Callable[[], Any], timeout: float = 60, every: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(every)


# --- against the whole server in-thread, on the stub upstream ---------------------------------------


def test_eval_run_completes_on_the_server_and_writes_the_reports(
    cli: Cli, stub: StubUpstream, tmp_path: Path
) -> None:
    release = prepare(cli, tmp_path, 5)
    out = tmp_path / "reports"

    result = cli.ok("eval", "run", "--release", release, "--dataset", DATASET, "--output", str(out))
    run = run_id_in(result.stdout)
    assert f"run {run} complete: 5 cases x 1" in result.stdout
    assert "quality 1.000  pass rate 1.000  safety failures 0  errors 0.000" in result.stdout
    assert re.search(r"latency p50 \d+ ms  p95 \d+ ms", result.stdout), result.stdout
    # Every case went through the server's gateway to its upstream, once.
    assert asked(stub) == Counter({f"q-{i}": 1 for i in range(5)})

    # What answered, and its fingerprint, as the server recorded them.
    shown = cli.json("eval", "status", run)
    assert shown["status"] == "complete" and shown["done"] == shown["total"] == 5
    assert shown["origin"] == "server"
    [deployment] = shown["deployments"]
    assert deployment["provider"] == "primary" and deployment["model"] == "m"
    assert deployment["settings"]["base_url"] == stub.base_url
    assert (
        f"answered by {deployment['name']}; deployments fingerprint {shown['fingerprint']}" in result.stdout
    )
    assert re.fullmatch(r"[0-9a-f]{64}", shown["fingerprint"])

    # The three reports, on disk with the hashes the server stored (and printed).
    directory = out / run
    assert {p.name for p in directory.iterdir()} == {"report.json", "report.html", "junit.xml"}
    for name in ("report.json", "report.html", "junit.xml"):
        assert f"{directory / name}  sha256 {sha256_of(directory / name)}" in result.stdout
    assert orjson.loads((directory / "report.json").read_text())["summary"]["quality"] == 1.0
    assert 'tests="5"' in (directory / "junit.xml").read_text()

    listed = cli.ok("eval", "list").stdout.splitlines()
    assert len(listed) == 1 and listed[0].startswith(f"{run}  complete")
    assert release in listed[0] and "quality 1.000" in listed[0]

    status = cli.ok("eval", "status", run).stdout
    assert f"{run}  complete  5/5 recorded" in status
    assert f"release {release} on {DATASET}@1" in status
    assert f"quality 1.000  pass rate 1.000  fingerprint {shown['fingerprint']}" in status

    junit = tmp_path / "junit-copy.xml"
    written = cli.ok("eval", "report", run, "--format", "junit", "-o", str(junit)).stdout
    assert junit.read_text() == (directory / "junit.xml").read_text()
    assert written.strip() == f"{junit}  sha256 {sha256_of(junit)}"
    printed = cli.ok("eval", "report", run, "--format", "json").stdout
    assert orjson.loads(printed) == orjson.loads((directory / "report.json").read_text())


def test_the_server_not_the_client_chooses_the_gateway(cli: Cli, stub: StubUpstream, tmp_path: Path) -> None:
    release = prepare(cli, tmp_path, 2)
    elsewhere = StubUpstream("elsewhere")  # never started: a config naming it must not matter
    config = stub_config_file(tmp_path, elsewhere)

    refused = cli.fails(
        "eval", "run", "--release", release, "--dataset", DATASET, "--config", str(config), code=2
    )
    assert "No such option '--config'" in refused.output
    assert cli.json("eval", "list") == [], "a refused command queued a run"

    run = run_id_in(cli.ok("eval", "run", "--release", release, "--dataset", DATASET).stdout)
    deployments = cli.json("eval", "status", run)["deployments"]
    assert [d["settings"]["base_url"] for d in deployments] == [stub.base_url]


def test_detached_run_is_followed_to_completion(
    cli: Cli, stub: StubUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where reports go by default (./eval-reports)
    release = prepare(cli, tmp_path, 4)

    detached = cli.ok("eval", "run", "--release", release, "--dataset", DATASET, "--detach")
    run = detached.stdout.strip()
    assert RUN_ID.fullmatch(run), detached.stdout
    assert f"queued {run}: release {release} on {DATASET}@1 (0/4 done, 1 repeat(s))" in detached.stderr
    assert not (tmp_path / "eval-reports").exists(), "--detach wrote reports of a run it did not follow"

    followed = cli.ok("eval", "status", run, "--follow").stdout
    assert f"run {run} complete: 4 cases x 1" in followed
    reports = tmp_path / "eval-reports" / run
    assert {p.name for p in reports.iterdir()} == {"report.json", "report.html", "junit.xml"}
    assert asked(stub) == Counter({f"q-{i}": 1 for i in range(4)})

    # The same command again follows nothing unfinished: it starts (and runs) a new run.
    again = cli.ok("eval", "run", "--release", release, "--dataset", DATASET)
    assert "queued run_" in again.stderr and run_id_in(again.stdout) != run


def test_gate_prints_every_reason_and_run_missing_lets_the_server_fill_the_gaps(
    cli: Cli, stub: StubUpstream, tmp_path: Path
) -> None:
    from lockgate.gates.policy import DEFAULT_TESTS

    release = prepare(cli, tmp_path, 5)
    cli.ok("datasets", "push", str(write_dataset(tmp_path, 3, "edge")))

    gate_file = tmp_path / "gate.yaml"
    gate_file.write_text(f"route: {ROUTE}\ndatasets: [{DATASET}, edge]\nthresholds: {{p95_latency_ms: 0}}\n")
    output = cli.fails("gates", "set", str(gate_file)).output
    assert "thresholds.p95_latency_ms: Input should be greater than 0" in output
    gate_file.write_text(f"route: {ROUTE}\ndatasets: [{DATASET}, edge]\nthresholds: [oops\n")
    assert "gate.yaml:4: not valid YAML" in cli.fails("gates", "set", str(gate_file)).output
    gate_file.write_text(f"route: {ROUTE}\ndatasets: [{DATASET}, edge]\n")
    cli.ok("gates", "set", str(gate_file))

    denied = cli.fails("eval", "gate", "--release", release, "--env", "stage").stdout
    assert f"DENY: release {release} -> stage" in denied
    assert f"deny: release {release} has no completed eval run on {DATASET}@1" in denied
    assert f"deny: release {release} has no completed eval run on edge@1" in denied
    assert cli.json("eval", "list") == [], "asking the gate queued a run"

    allowed = cli.ok("eval", "gate", "--release", release, "--env", "stage", "--run-missing")
    assert f"ALLOW: release {release} -> stage" in allowed.stdout
    assert "deny:" not in allowed.stdout
    assert (
        f"running {DATASET}@1 on {release}" in allowed.stderr
        and f"running edge@1 on {release}" in allowed.stderr
    )
    runs = cli.json("eval", "list")
    assert sorted((r["dataset"], r["status"], r["origin"]) for r in runs) == [
        ("edge@1", "complete", "server"),
        (f"{DATASET}@1", "complete", "server"),
    ]
    assert asked(stub) == Counter({f"q-{i}": 2 for i in range(3)} | {"q-3": 1, "q-4": 1})

    # Nothing missing now: --run-missing queues nothing more.
    cli.ok("eval", "gate", "--release", release, "--env", "stage", "--run-missing")
    assert len(cli.json("eval", "list")) == 2

    # A stricter gate denies the same runs on its thresholds, a reason per dataset.
    gate_file.write_text(
        f"route: {ROUTE}\ndatasets: [{DATASET}, edge]\nthresholds: {{p95_latency_ms: 0.001}}\n"
    )
    cli.ok("gates", "set", str(gate_file))
    denied = cli.fails("eval", "gate", "--release", release, "--env", "stage").stdout
    assert re.search(rf"deny: p95 latency on {DATASET}@1 is [\d.]+ ms, over the budget of 0.001 ms", denied)
    assert re.search(r"deny: p95 latency on edge@1 is [\d.]+ ms, over the budget of 0.001 ms", denied)

    repeated = cli.ok(
        "eval",
        "run",
        "--release",
        release,
        "--dataset",
        DATASET,
        "--repeat",
        "3",
        "--fresh",
        "--output",
        str(tmp_path / "out"),
    ).stdout
    assert "complete: 5 cases x 3" in repeated
    assert "quality over 3 repeats: 1.000 (95% CI 1.000 to 1.000)" in repeated, repeated

    tests = tmp_path / "gate_test.rego"
    tests.write_text(DEFAULT_TESTS)
    output = cli.ok("gates", "test", str(tests)).output
    assert "0 failed" in output
    tests.write_text(
        "package lockgate.gate_test\n\nimport rego.v1\n\ntest_always_denies if {\n"
        '\tdata.lockgate.gate.allow with input.missing as ["x"] with input.datasets as []\n}\n'
    )
    output = cli.fails("gates", "test", str(tests)).output
    assert "FAIL  " in output and "1 failed" in output


# --- a slow upstream: runs long enough to detach from, cancel, and stop the server in the middle of ---


@pytest.fixture(scope="module")
def slow_stub() -> Iterator[StubUpstream]:
    """An upstream answering every request after 0.6 s."""
    stub = StubUpstream("slow", latency_ms=600).start()
    yield stub
    stub.kill()


@pytest.fixture
def slow_cli(
    services: Services,
    instance: Instance,
    first_start: Bootstrap,
    admin_token: str,
    slow_stub: StubUpstream,
    tmp_path: Path,
) -> Iterator[Cli]:
    """The CLI as the admin, against the whole server in-thread on the slow upstream."""
    slow_stub.reset()
    with run_server(services, instance, stub_config(("primary", slow_stub.base_url))) as running:
        yield Cli(running.url, admin_token, tmp_path)


def test_cancel_ends_a_running_run_and_keeps_what_finished(
    slow_cli: Cli, slow_stub: StubUpstream, tmp_path: Path
) -> None:
    release = prepare(slow_cli, tmp_path, 30)
    started = slow_cli(
        "eval", "run", "--release", release, "--dataset", DATASET, "--concurrency", "1", "--detach"
    )
    assert started.exit_code == 0, started.output
    run = started.stdout.strip()

    def running() -> dict[str, Any] | None:
        shown: dict[str, Any] = slow_cli.json("eval", "status", run)
        return shown if shown["status"] == "running" and shown["done"] >= 2 else None

    eventually("the run has finished two cases", running)
    cancelled = slow_cli.ok("eval", "cancel", run).stdout
    assert re.fullmatch(rf"{run} is cancelling \(\d+/30 recorded\)\n", cancelled), cancelled

    def ended() -> dict[str, Any] | None:
        shown: dict[str, Any] = slow_cli.json("eval", "status", run)
        return shown if shown["status"] not in ("running", "cancelling") else None

    final = eventually("the run has ended", ended, timeout=60, every=0.2)
    assert final["status"] == "cancelled", final
    assert 2 <= final["done"] < 30, final
    assert final["summary"] is None
    # Nothing new starts once it has ended; what finished stays recorded.
    seen = sum(asked(slow_stub).values())
    assert seen == final["done"]
    status = slow_cli.ok("eval", "status", run).stdout
    assert f"{run}  cancelled  {final['done']}/30 recorded" in status

    # Following a cancelled run fails, saying how it ended; it has no reports.
    followed = slow_cli.fails("eval", "status", run, "--follow")
    assert f"run {run} ended cancelled ({final['done']}/30 recorded)" in followed.output
    assert "has no junit report" in slow_cli.fails("eval", "report", run, "--format", "junit").output
    # A cancelled run is over: cancelling it again is refused.
    assert "already cancelled" in slow_cli.fails("eval", "cancel", run).output


# --- a real `lockgate serve`, stopped and started again in the middle of a run ------------------------

RESTART_CASES = 100


@pytest.fixture(scope="module")
def steady_stub() -> Iterator[StubUpstream]:
    """An upstream answering every request after 0.2 s: 100 cases, 4 at a time, take about 5 s."""
    stub = StubUpstream("steady", latency_ms=200).start()
    yield stub
    stub.kill()


def recorded(database_url: str, run: str) -> int:
    """Results of ``run`` in the server's store (read while the server is down)."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            query = sa.select(sa.func.count()).select_from(eval_results).where(eval_results.c.run_id == run)
            return int(connection.execute(query).scalar() or 0)
    finally:
        engine.dispose()


def test_a_run_survives_detaching_and_a_server_restart_without_repeating_a_case(
    database_url: str, steady_stub: StubUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steady_stub.reset()
    for name in ("LOCKGATE_KEY_PEPPER", "LOCKGATE_SIGNING_KEY", "LOCKGATE_CONFIG", "LOCKGATE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    store = {"LOCKGATE_DATABASE_URL": database_url, "LOCKGATE_DATA_DIR": str(tmp_path / "data")}
    server = LockgateServer(tmp_path, stub_config_file(tmp_path, steady_stub), store).start()
    try:
        resume_after_restart(server, database_url, steady_stub, tmp_path)
    finally:
        server.stop(signal.SIGKILL)


def resume_after_restart(
    server: LockgateServer, database_url: str, stub: StubUpstream, tmp_path: Path
) -> None:
    match = re.search(r"control token of user 'admin' \(shown once\): (\S+)", server.output())
    assert match is not None, server.output()
    token = match.group(1)
    release = prepare(Cli(server.url, token, tmp_path), tmp_path, RESTART_CASES)
    # The CLI as a user's shell runs it: a URL, a token, and nothing of the server's.
    env = {
        "LOCKGATE_URL": server.url,
        "LOCKGATE_TOKEN": token,
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
    }
    command = [sys.executable, "-m", "lockgate", "eval", "run", "--release", release, "--dataset", DATASET]
    command += ["--concurrency", "4", "--output", str(tmp_path / "reports")]
    headers = {"Authorization": f"Bearer {token}"}

    def progress(at_least: int) -> Callable[[], dict[str, Any] | None]:
        """The run, once the server has recorded ``at_least`` of its cases."""

        def check() -> dict[str, Any] | None:
            with httpx.Client(base_url=f"{server.url}/api/v1/tenants/default", headers=headers) as api:
                runs = api.get("/eval-runs").raise_for_status().json()
                if not runs:
                    return None
                shown: dict[str, Any] = api.get(f"/eval-runs/{runs[0]['id']}").raise_for_status().json()
            assert shown["status"] in ("queued", "running"), shown
            return shown if shown["done"] >= at_least else None

        return check

    follower = subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        run = eventually("the server has recorded 8 cases", progress(8))["id"]
        assert follower.poll() is None, follower.communicate()
        follower.send_signal(signal.SIGINT)
        out, err = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 130, (out, err)
    assert f"detached: {run} goes on on the server" in err
    assert f"lockgate eval status {run} --follow" in err

    # Nobody follows it now, and the server goes on; then it stops gracefully in the middle of the run.
    eventually("the run has gone on without its follower", progress(30))
    assert server.stop(signal.SIGTERM), server.output()
    kept = recorded(database_url, run)
    assert kept < RESTART_CASES, "the run finished before the server was stopped; slow the stub down"
    # Every case that reached the upstream was recorded: the ones in flight finished first.
    assert sum(asked(stub).values()) == kept

    # Started again on the same store, the server resumes the run; the same command follows it.
    server.start()
    resumed = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert resumed.returncode == 0, (resumed.stdout, resumed.stderr)
    assert f"following {run}: release {release} on {DATASET}@1 (" in resumed.stderr, resumed.stderr
    assert f"run {run} complete: {RESTART_CASES} cases x 1" in resumed.stdout
    assert {p.name for p in (tmp_path / "reports" / run).iterdir()} == {
        "report.json",
        "report.html",
        "junit.xml",
    }
    with httpx.Client(base_url=f"{server.url}/api/v1/tenants/default", headers=headers) as api:
        assert [r["id"] for r in api.get("/eval-runs").json()] == [run], "a second run was started"
    everything = Counter({f"q-{i}": 1 for i in range(RESTART_CASES)})
    assert asked(stub) == everything, "a case reached the upstream twice, or never"
