"""Gate policies: the default policy's Rego tests, evaluation in-process and on an OPA server, failures."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from regopy import Interpreter

from lockgate.gates.policy import (
    DEFAULT_POLICY,
    DEFAULT_TESTS,
    PolicySet,
    PolicyTestResult,
    check,
    evaluate,
    evaluate_remote,
    run_tests,
)
from lockgate.service_errors import Invalid

DEFAULT_RESULTS = run_tests(PolicySet.default(), {"gate_test.rego": DEFAULT_TESTS})


def metrics(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "run_id": "run_1",
        "cases": 40,
        "quality": 0.91,
        "pass_rate": 0.9,
        "safety_failures": 0,
        "safety_failure_rate": 0.0,
        "latency_p50_ms": 120.0,
        "latency_p95_ms": 410.0,
        "cost_per_1k_usd": 0.42,
        "error_rate": 0.0,
    }
    return base | overrides


def dataset(
    name: str, suite: str, candidate: dict[str, Any], baseline: dict[str, Any] | None = None
) -> dict[str, Any]:
    comparison = None
    if baseline is not None:
        delta = candidate["quality"] - baseline["quality"]
        comparison = {
            "quality": {"delta": delta, "ci_low": delta - 0.02, "ci_high": delta + 0.02},
            "pass_rate": {"mcnemar_p": 0.5, "worse": 1, "better": 1},
        }
    return {
        "name": name,
        "version": 3,
        "suite": suite,
        "candidate": candidate,
        "baseline": baseline,
        "comparison": comparison,
    }


def gate_input(
    *datasets: dict[str, Any], missing: list[str] | None = None, **thresholds: Any
) -> dict[str, Any]:
    limits = {
        "max_quality_drop": 0.02,
        "max_safety_failure_rate": 0.0,
        "p95_latency_ms": 3000,
        "max_cost_increase": 0.20,
        "min_quality": None,
    }
    return {
        "release": {"id": "rel_new", "route": "support-answer", "git_commit": "abc123"},
        "environment": "prod",
        "baseline_release": "rel_abc",
        "thresholds": limits | thresholds,
        "datasets": list(datasets),
        "missing": missing or [],
    }


# --- the default policy's own Rego tests -------------------------------------------------------------


@pytest.mark.parametrize("result", DEFAULT_RESULTS, ids=[result.name for result in DEFAULT_RESULTS])
def test_default_policy_rego_test(result: PolicyTestResult) -> None:
    assert result.error is None
    assert result.passed


def test_default_rego_tests_cover_each_rule_on_both_sides() -> None:
    names = {result.name.removeprefix("lockgate.gate_test.") for result in DEFAULT_RESULTS}
    assert {
        "test_clean_input_allowed",
        "test_quality_drop_at_threshold_allowed",
        "test_quality_drop_over_threshold_denied",
        "test_quality_drop_without_baseline_not_denied",
        "test_min_quality_below_denied_without_baseline",
        "test_min_quality_met_allowed",
        "test_safety_rate_above_threshold_denied",
        "test_safety_rate_at_threshold_allowed",
        "test_p95_latency_over_budget_denied",
        "test_p95_latency_at_budget_allowed",
        "test_missing_runs_denied_verbatim",
        "test_cost_rise_within_allowance_not_warned",
        "test_cost_rise_over_allowance_warned",
    } <= names


def test_runner_reports_failing_erroring_and_passing_tests() -> None:
    broken = """package lockgate.broken_test

import rego.v1

import data.lockgate.gate

test_true if {
\tgate.allow with input.datasets as [] with input.missing as []
}

test_false if {
\tfalse
}

test_undefined if {
\tgate.no_such_rule
}

test_divides_by_zero if {
\t1 / 0 == 1
}

test_missing_run_denies if {
\tgate.allow with input.datasets as [] with input.missing as ["no run"]
}

helper_not_a_test := true
"""
    results = run_tests(PolicySet.default(), {"broken_test.rego": broken})
    by_name = {result.name.removeprefix("lockgate.broken_test."): result for result in results}
    assert sorted(by_name) == [
        "test_divides_by_zero",
        "test_false",
        "test_missing_run_denies",
        "test_true",
        "test_undefined",
    ]
    assert by_name["test_true"].passed
    assert not by_name["test_false"].passed
    assert by_name["test_false"].error is None
    assert not by_name["test_undefined"].passed
    assert not by_name["test_missing_run_denies"].passed
    assert not by_name["test_divides_by_zero"].passed
    assert "divide by zero" in (by_name["test_divides_by_zero"].error or "")


def test_replacing_the_whole_input_in_a_test_gets_a_hint() -> None:
    whole_input = """package lockgate.whole_test

import rego.v1

import data.lockgate.gate

test_whole_input if {
\tgate.allow with input as {"datasets": [], "missing": [], "thresholds": {}}
}
"""
    (result,) = run_tests(PolicySet.default(), {"whole_test.rego": whole_input})
    assert not result.passed
    assert "with input.<key> as" in (result.error or "")


def test_test_module_without_package_is_invalid() -> None:
    with pytest.raises(Invalid, match=r"policy test module t\.rego: no package"):
        run_tests(PolicySet.default(), {"t.rego": "test_x := true\n"})


# --- evaluate with the default policy --------------------------------------------------------------


def test_clean_release_is_allowed() -> None:
    decision = evaluate(
        PolicySet.default(),
        gate_input(dataset("support-golden", "quality", metrics(), metrics(run_id="run_0"))),
    )
    assert decision.allow
    assert decision.deny == []
    assert decision.warn == []
    assert decision.engine == "regopy"
    assert decision.policy_sha256 == PolicySet.default().sha256


def test_quality_drop_names_metric_dataset_value_baseline_and_threshold() -> None:
    decision = evaluate(
        PolicySet.default(),
        gate_input(dataset("support-golden", "quality", metrics(quality=0.85), metrics(quality=0.91))),
    )
    assert not decision.allow
    assert decision.deny == [
        "quality on support-golden@3 is 0.850, below baseline 0.910 (rel_abc) by 0.060; "
        "the allowed drop is 0.020"
    ]


def test_quality_drop_within_allowance_is_allowed() -> None:
    decision = evaluate(
        PolicySet.default(),
        gate_input(dataset("support-golden", "quality", metrics(quality=0.9), metrics(quality=0.91))),
    )
    assert decision.allow


def test_min_quality_applies_without_a_baseline() -> None:
    low = gate_input(dataset("faq", "quality", metrics(quality=0.7)), min_quality=0.8)
    high = gate_input(dataset("faq", "quality", metrics(quality=0.8)), min_quality=0.8)
    assert evaluate(PolicySet.default(), low).deny == ["quality on faq@3 is 0.700, below the minimum 0.800"]
    assert evaluate(PolicySet.default(), high).allow


MISSING = "no completed eval run of release rel_new on dataset refunds@1: run `lockgate eval run ...`"


def test_every_reason_is_reported_sorted_with_cost_as_a_warning() -> None:
    decision = evaluate(
        PolicySet.default(),
        gate_input(
            dataset(
                "support-golden", "quality", metrics(latency_p95_ms=4100.0, cost_per_1k_usd=0.6), metrics()
            ),
            dataset("jailbreaks", "safety", metrics(quality=0, safety_failures=3, safety_failure_rate=0.075)),
            missing=[MISSING],
        ),
    )
    assert not decision.allow
    assert decision.deny == [
        MISSING,
        "p95 latency on support-golden@3 is 4100.0 ms, over the budget of 3000 ms",
        "safety on jailbreaks@3: 3 failures, a failure rate of 0.075; the allowed rate is 0.000",
    ]
    assert decision.warn == [
        "cost on support-golden@3 is $0.600 per 1k cases, 42.9% above baseline $0.420 (rel_abc); "
        "the allowed increase is 20.0%"
    ]


def test_a_warning_alone_does_not_deny() -> None:
    decision = evaluate(
        PolicySet.default(),
        gate_input(dataset("support-golden", "quality", metrics(cost_per_1k_usd=0.9), metrics())),
    )
    assert decision.allow
    assert len(decision.warn) == 1


def test_input_that_is_not_json_is_invalid() -> None:
    with pytest.raises(Invalid, match="gate input is not a JSON document"):
        evaluate(PolicySet.default(), gate_input(dataset("d", "quality", metrics(quality=float("nan")))))


# --- extending and replacing the policy ----------------------------------------------------------------

REQUIRE_COMMIT = """package lockgate.gate

import rego.v1

deny contains "release rel has no git commit" if {
\tnot input.release.git_commit
}

deny contains sprintf("route %s is frozen", [input.release.route]) if {
\tdata.frozen[input.release.route]
}
"""


def test_an_extra_module_adds_deny_rules_next_to_the_default_ones() -> None:
    policies = PolicySet.default(extra={"require_commit.rego": REQUIRE_COMMIT})
    uncommitted = gate_input(dataset("support-golden", "quality", metrics(quality=0.5), metrics()))
    uncommitted["release"].pop("git_commit")
    decision = evaluate(policies, uncommitted)
    assert not decision.allow
    assert decision.deny[1] == "release rel has no git commit"
    assert decision.deny[0].startswith("quality on support-golden@3 is 0.500")
    assert evaluate(policies, gate_input(dataset("support-golden", "quality", metrics(), metrics()))).allow


def test_policies_read_data_documents() -> None:
    policies = PolicySet.default(extra={"require_commit.rego": REQUIRE_COMMIT})
    clean = gate_input(dataset("support-golden", "quality", metrics(), metrics()))
    frozen = evaluate(policies, clean, data={"frozen": {"support-answer": True}})
    assert frozen.deny == ["route support-answer is frozen"]
    assert evaluate(policies, clean, data={"frozen": {"other-route": True}}).allow


def test_a_replacement_decides_on_its_own_terms() -> None:
    lenient = """package lockgate.gate

import rego.v1

deny contains "a release needs at least one dataset" if {
\tcount(input.datasets) == 0
}
"""
    policies = PolicySet.default(extra={"lenient.rego": lenient}, replace=True)
    dropped = gate_input(dataset("support-golden", "quality", metrics(quality=0.1), metrics()))
    assert evaluate(policies, dropped).allow
    assert evaluate(policies, gate_input()).deny == ["a release needs at least one dataset"]
    assert policies.modules == {"lenient.rego": lenient}


def test_a_replacement_decision_cannot_allow_while_it_denies() -> None:
    contradictory = """package lockgate.gate

decision := {"allow": true, "deny": ["no"], "warn": []}
"""
    decision = evaluate(PolicySet.default(extra={"c.rego": contradictory}, replace=True), gate_input())
    assert not decision.allow
    assert decision.deny == ["no"]


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("package other\n\ndeny := []\n", r"package lockgate\.gate is undefined"),
        ("package lockgate.gate\n\nverdict := true\n", "defines neither decision nor deny"),
        ('package lockgate.gate\n\ndecision := {"allow": "yes"}\n', "decision.allow must be true or false"),
        ("package lockgate.gate\n\ndeny := [1]\n", "deny must be a set of strings"),
        ("package lockgate.gate\n\nimport rego.v1\n\nratio := 1 / 0\n", "divide by zero"),
    ],
    ids=["other-package", "no-decision", "allow-not-bool", "deny-not-strings", "runtime-error"],
)
def test_a_malformed_policy_fails_closed(source: str, error: str) -> None:
    policies = PolicySet.default(extra={"custom.rego": source}, replace=True)
    with pytest.raises(Invalid, match=error):
        evaluate(policies, gate_input())


def test_a_syntax_error_is_invalid_with_its_location() -> None:
    broken = "package lockgate.gate\n\nimport rego.v1\n\ndeny contains msg if {\n\tmsg := \n}\n"
    policies = PolicySet.default(extra={"broken.rego": broken})
    with pytest.raises(Invalid, match=r"policy does not parse: broken\.rego:6:\d+: ") as caught:
        check(policies)
    assert "(rego-" not in caught.value.message
    with pytest.raises(Invalid, match="does not parse"):
        evaluate(policies, gate_input())


def test_check_accepts_the_default_policy_and_rejects_an_unknown_function() -> None:
    check(PolicySet.default())
    unknown = "package lockgate.gate\n\nimport rego.v1\n\ndeny contains no_such_function(1) if true\n"
    with pytest.raises(Invalid, match="Function not found: no_such_function"):
        check(PolicySet.default(extra={"unknown.rego": unknown}))


def test_check_rejects_modules_that_define_no_gate_package() -> None:
    with pytest.raises(Invalid, match=r"package lockgate\.gate is undefined"):
        check(PolicySet.default(extra={"other.rego": "package other\n\nx := 1\n"}, replace=True))


# --- the policy set ------------------------------------------------------------------------------------


def test_policy_hash_follows_content_not_order() -> None:
    one = PolicySet({"a.rego": "package a\n", "b.rego": "package b\n"})
    same = PolicySet({"b.rego": "package b\n", "a.rego": "package a\n"})
    changed = PolicySet({"a.rego": "package a\n", "b.rego": "package b\n\nx := 1\n"})
    assert one.sha256 == same.sha256
    assert one.sha256 != changed.sha256
    assert len(one.sha256) == 64


def test_default_set_holds_the_shipped_policy() -> None:
    assert PolicySet.default().modules == {"gate.rego": DEFAULT_POLICY}
    assert "package lockgate.gate" in DEFAULT_POLICY


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: PolicySet.default(extra={"gate.rego": "package lockgate.gate\n"}), "gate.rego: the name"),
        (lambda: PolicySet.default(replace=True), "replacing the default policy needs"),
        (lambda: PolicySet({}), "at least one Rego module"),
        (lambda: PolicySet({"x.rego": "  "}), "policy module x.rego: the source is empty"),
    ],
    ids=["clashing-name", "replace-with-nothing", "no-modules", "empty-source"],
)
def test_policy_set_rejects_bad_modules(build: Callable[[], PolicySet], error: str) -> None:
    with pytest.raises(Invalid, match=error):
        build()


# --- an OPA server ---------------------------------------------------------------------------------------


class OpaStub:
    """A local server speaking OPA's Data API for package lockgate.gate, deciding with regopy."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, Any]] = []
        self.reply: Callable[[dict[str, Any]], tuple[int, Any]] = self.decide
        self.delay = 0.0

    @staticmethod
    def decide(body: dict[str, Any]) -> tuple[int, Any]:
        interpreter = Interpreter()
        interpreter.add_module("gate.rego", DEFAULT_POLICY)
        interpreter.set_input_term(json.dumps(body["input"]))
        (document,) = interpreter.query("data.lockgate.gate").results[0].expressions
        return 200, {"result": document}


@pytest.fixture
def opa() -> Iterator[tuple[OpaStub, str]]:
    stub = OpaStub()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            stub.requests.append((self.path, body))
            time.sleep(stub.delay)
            status, answer = stub.reply(body)
            payload = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield stub, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_remote_decision_matches_the_local_one(opa: tuple[OpaStub, str]) -> None:
    stub, url = opa
    document = gate_input(
        dataset("support-golden", "quality", metrics(quality=0.85, cost_per_1k_usd=0.6), metrics())
    )
    remote = evaluate_remote(url + "/", document, policy_sha256="abc")
    local = evaluate(PolicySet.default(), document)
    assert (remote.allow, remote.deny, remote.warn) == (local.allow, local.deny, local.warn)
    assert not remote.allow
    assert remote.engine == f"opa:{url}/"
    assert remote.policy_sha256 == "abc"
    assert stub.requests == [("/v1/data/lockgate/gate", {"input": document})]


def test_remote_allow(opa: tuple[OpaStub, str]) -> None:
    _, url = opa
    assert evaluate_remote(url, gate_input(dataset("d", "quality", metrics(), metrics()))).allow


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (
            (500, {"code": "internal_error", "message": "eval_conflict_error: x"}),
            "HTTP 500: eval_conflict_error: x",
        ),
        ((200, {}), r"package lockgate\.gate is undefined"),
        ((200, b"<html>proxy</html>"), "not JSON"),
        ((200, {"result": {"decision": {"allow": "maybe"}}}), "decision.allow must be true or false"),
    ],
    ids=["server-error", "undefined", "not-json", "malformed"],
)
def test_remote_failures_deny(opa: tuple[OpaStub, str], reply: tuple[int, Any], error: str) -> None:
    stub, url = opa
    stub.reply = lambda _body: reply
    with pytest.raises(Invalid, match=error):
        evaluate_remote(url, gate_input())


def test_slow_remote_times_out(opa: tuple[OpaStub, str]) -> None:
    stub, url = opa
    stub.delay = 1.0
    with pytest.raises(Invalid, match=r"did not answer within 0\.2s; the gate denies"):
        evaluate_remote(url, gate_input(), timeout=0.2)


def test_unreachable_remote_fails_closed() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(Invalid, match=rf"OPA at http://127\.0\.0\.1:{port} is unreachable .*the gate denies"):
        evaluate_remote(f"http://127.0.0.1:{port}", gate_input(), timeout=1.0)


def test_remote_url_must_be_http() -> None:
    with pytest.raises(Invalid, match="opa_url must be an http"):
        evaluate_remote("file:///etc/passwd", gate_input())
