"""``lockgate datasets``, ``gates`` and ``eval`` as a user runs them, in their own processes.

The interruption test is the promise of a resumable run: Ctrl-C in the middle of a 200-case run, then
the same command again: every case is recorded exactly once, and the upstream saw each case exactly
once (the cases in flight at Ctrl-C finish and are recorded; nothing new starts).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
import yaml

from lockgate.control.registry import ModelCard
from lockgate.control.releases import ReleaseRequest
from lockgate.instance import Instance
from lockgate.security.rbac import Actor
from lockgate.store.tables import eval_results
from tests.control.test_golden_path import ROUTE, prompt
from tests.support.processes import StubUpstream, stub_config_file

CASES = 200


def lockgate(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lockgate", *args],
        check=False,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def slow_stub() -> Iterator[StubUpstream]:
    stub = StubUpstream("slow", latency_ms=25).start()
    yield stub
    stub.kill()


def release_on(instance: Instance, admin: Actor) -> str:
    control = instance.control()
    control.registry.register(
        admin,
        "default",
        ModelCard(
            name="support-llm",
            version="1",
            gateway_model="m",
            license="apache-2.0",
            intended_use="tests",
            owner_team="qa",
        ),
    )
    control.registry.set_alias(admin, "default", "support-llm", "champion", "1")
    control.prompts.push(admin, "default", prompt("1.0.0", 'reply:{"answer": "{{ question }}"}'))
    return control.releases.create(admin, "default", ReleaseRequest(route=ROUTE, prompt=f"{ROUTE}@1.0.0")).id


def write_dataset(directory: Path, cases: int) -> Path:
    rows = [
        {
            "id": f"case-{i:03d}",
            "variables": {"product": "lockgate", "question": f"question {i}"},
            "facts": [f"{i}"],
        }
        for i in range(cases)
    ]
    (directory / "golden.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    spec = {
        "name": "golden",
        "cases": "golden.jsonl",
        "scorers": [{"type": "json_valid"}, {"type": "contains"}],
    }
    path = directory / "golden.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_interrupted_run_resumes_without_repeating_or_losing_a_case(
    instance: Instance, admin: Actor, admin_token: str, slow_stub: StubUpstream, tmp_path: Path
) -> None:
    release = release_on(instance, admin)
    config = stub_config_file(tmp_path, slow_stub)
    env = {**os.environ, "LOCKGATE_DATA_DIR": str(instance.data), "LOCKGATE_TOKEN": admin_token}
    pushed = lockgate("datasets", "push", str(write_dataset(tmp_path, CASES)), env=env, cwd=tmp_path)
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.startswith(f"golden@1  {CASES} cases")

    command = [sys.executable, "-m", "lockgate", "eval", "run", "--release", release, "--dataset", "golden"]
    command += ["--concurrency", "4", "--config", str(config), "--output", str(tmp_path / "reports")]
    proc = subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )

    def recorded() -> int:
        with instance.engine.connect() as connection:
            return int(connection.execute(sa.select(sa.func.count()).select_from(eval_results)).scalar() or 0)

    deadline = time.monotonic() + 90
    while recorded() < 40:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted:" in err and "run the same command again to resume" in err
    first = recorded()
    assert 40 <= first < CASES

    resumed = subprocess.run(
        command, check=False, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming run_" in resumed.stderr and f"({first}/{CASES} done" in resumed.stderr
    assert "complete: 200 cases" in resumed.stdout

    with instance.engine.connect() as connection:
        rows = connection.execute(sa.select(eval_results.c.case_id, eval_results.c.repeat)).all()
    assert sorted(r.case_id for r in rows) == [f"case-{i:03d}" for i in range(CASES)]
    asked = Counter(
        request["body"]["messages"][-1]["content"]
        for request in slow_stub.received()
        if request["path"].endswith("/chat/completions")
    )
    assert len(asked) == CASES and set(asked.values()) == {1}, "a case reached the upstream twice"

    # The reports are on disk and in the store with the same hash.
    run_dir = next((tmp_path / "reports").iterdir())
    assert {p.name for p in run_dir.iterdir()} == {"report.json", "report.html", "junit.xml"}
    shown = lockgate("eval", "report", run_dir.name, "--format", "junit", env=env, cwd=tmp_path)
    assert shown.stdout.strip() == (run_dir / "junit.xml").read_text().strip()


def test_gate_commands_print_every_reason_and_exit_by_decision(
    instance: Instance, admin: Actor, admin_token: str, stub: StubUpstream, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from lockgate.cli.main import cli
    from lockgate.gates.policy import DEFAULT_TESTS

    release = release_on(instance, admin)
    config = stub_config_file(tmp_path, stub)
    env = {"LOCKGATE_DATA_DIR": str(instance.data), "LOCKGATE_TOKEN": admin_token}
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(cli, list(args), env=env)
        return result.exit_code, result.output

    assert run("datasets", "push", str(write_dataset(tmp_path, 5)))[0] == 0
    gate_file = tmp_path / "gate.yaml"
    gate_file.write_text(f"route: {ROUTE}\ndatasets: [golden]\nthresholds: {{p95_latency_ms: 0}}\n")
    code, output = run("gates", "set", str(gate_file))
    assert code == 1 and "gate.yaml: thresholds.p95_latency_ms: Input should be greater than 0" in output
    gate_file.write_text(f"route: {ROUTE}\ndatasets: [golden]\nthresholds: [oops\n")
    code, output = run("gates", "set", str(gate_file))
    assert code == 1 and "gate.yaml:4: not valid YAML" in output
    gate_file.write_text(f"route: {ROUTE}\ndatasets: [golden]\n")
    assert run("gates", "set", str(gate_file))[0] == 0

    code, output = run("eval", "gate", "--release", release, "--env", "stage")
    assert code == 1
    assert f"DENY: release {release} -> stage" in output
    assert f"deny: release {release} has no completed eval run on golden@1" in output

    code, output = run(
        "eval", "gate", "--release", release, "--env", "stage", "--run-missing", "--config", str(config)
    )
    assert code == 0, output
    assert "ALLOW" in output

    code, output = run(
        "eval",
        "run",
        "--release",
        release,
        "--dataset",
        "golden",
        "--repeat",
        "3",
        "--fresh",
        "--config",
        str(config),
        "--output",
        str(tmp_path / "out"),
    )
    assert code == 0, output
    assert "complete: 5 cases x 3" in output
    assert "quality over 3 repeats: 1.000 (95% CI 1.000 to 1.000)" in output, output

    tests = tmp_path / "gate_test.rego"
    tests.write_text(DEFAULT_TESTS)
    code, output = run("gates", "test", str(tests))
    assert code == 0 and "0 failed" in output
    tests.write_text(
        "package lockgate.gate_test\n\nimport rego.v1\n\ntest_always_denies if {\n"
        '\tdata.lockgate.gate.allow with input.missing as ["x"] with input.datasets as []\n}\n'
    )
    code, output = run("gates", "test", str(tests))
    assert code == 1 and "FAIL  " in output and "1 failed" in output
