"""The JSON, HTML and JUnit renderings of a run report, built from hand-made results and summary."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from lockgate.evals.cases import Case, CaseResult, Kind, Outcome, Score
from lockgate.evals.reports import Baseline, RunReport, render_all, render_html, render_json, render_junit
from lockgate.evals.stats import Interval
from lockgate.evals.summary import RunSummary, ScorerStats

SCRIPT = "<script>alert('pwned')</script>"


def score(name: str, value: float, passed: bool, reason: str, kind: Kind = "quality") -> Score:
    return Score(scorer=name, kind=kind, value=value, passed=passed, reason=reason)


def result(
    case_id: str,
    text: str,
    *scores: Score,
    repeat: int = 0,
    error: str | None = None,
    latency_ms: float = 250.0,
) -> CaseResult:
    case = Case(id=case_id, variables={"question": f"about {case_id}"}, expected="Paris", tags=["geo"])
    outcome = Outcome(
        text=text, latency_ms=latency_ms, cost_usd=0.0002, input_tokens=12, output_tokens=3, error=error
    )
    return CaseResult(case=case, repeat=repeat, outcome=outcome, scores=scores)


RESULTS = [
    result("capital-ok", "Paris", score("exact", 1.0, True, "matches"), latency_ms=1500.0),
    result("capital-injected", SCRIPT, score("exact", 0.0, False, 'expected "Paris" & got markup')),
    result(
        "capital-vague",
        "Somewhere in France",
        score("exact", 0.3, False, "no exact match"),
        score("judge", 0.6, False, "too vague"),
        score("refusal", 1.0, True, "did not refuse", kind="safety"),
    ),
    result("capital-timeout", "", score("exact", 0.0, False, "empty answer"), error="upstream timed out"),
]

SUMMARY = RunSummary(
    cases=4,
    runs=4,
    quality=0.8,
    quality_ci=Interval(0.8, 0.7, 0.9),
    pass_rate=0.25,
    safety_failures=0,
    safety_failure_rate=0.0,
    latency_p50_ms=250.0,
    latency_p95_ms=1320.0,
    cost_per_case_usd=0.0002,
    cost_per_1k_usd=0.2,
    error_rate=0.25,
    scorers={"exact": ScorerStats(mean=0.325, pass_rate=0.25)},
)

BASELINE: Baseline = {
    "run_id": "run-base",
    "release_id": "rel-1",
    "summary": {**SUMMARY.as_dict(), "quality": 0.6, "latency_p95_ms": 1000.0},
    "comparison": {
        "quality": {"delta": 0.2, "ci_low": 0.05, "ci_high": 0.35},
        "pass_rate": {"mcnemar_p": 0.0312, "better": 5, "worse": 0},
        "paired_cases": 4,
    },
}


def make_report(
    results: list[CaseResult] = RESULTS, repeats: int = 1, baseline: Baseline | None = None
) -> RunReport:
    return RunReport(
        run_id="run-42",
        release={
            "id": "rel-2",
            "route": "support-bot",
            "prompt": "faq@3",
            "model": "gemma",
            "git_commit": None,
        },
        dataset={"name": "capitals", "version": "1.2.0", "sha256": "ab" * 32},
        settings={"repeats": repeats, "concurrency": 4},
        started_at=datetime(2025, 3, 1, 12, 0, tzinfo=UTC),
        finished_at=datetime(2025, 3, 1, 12, 5, tzinfo=UTC),
        status="succeeded",
        summary=SUMMARY,
        results=results,
        baseline=baseline,
    )


def test_json_round_trips_with_every_case_run() -> None:
    document = json.loads(render_json(make_report(baseline=BASELINE)))
    assert document["run_id"] == "run-42"
    assert document["release"]["route"] == "support-bot"
    assert document["started_at"] == "2025-03-01T12:00:00+00:00"
    assert document["summary"] == SUMMARY.as_dict()
    assert document["baseline"] == BASELINE
    by_id = {row["case_id"]: row for row in document["results"]}
    assert list(by_id) == [r.case.id for r in RESULTS]
    injected = by_id["capital-injected"]
    assert injected["output"] == SCRIPT
    assert injected["variables"] == {"question": "about capital-injected"}
    assert injected["expected"] == "Paris"
    assert injected["tokens"] == {"input": 12, "output": 3}
    assert (injected["latency_ms"], injected["cost_usd"], injected["passed"]) == (250.0, 0.0002, False)
    assert injected["scores"] == [
        {
            "scorer": "exact",
            "kind": "quality",
            "value": 0.0,
            "passed": False,
            "reason": 'expected "Paris" & got markup',
            "weight": 1.0,
            "details": {},
        }
    ]
    assert by_id["capital-timeout"]["error"] == "upstream timed out"
    assert by_id["capital-ok"]["error"] is None


def test_json_is_deterministic_with_sorted_keys() -> None:
    text = render_json(make_report())
    assert text == render_json(make_report())
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def test_html_escapes_model_output() -> None:
    page = render_html(make_report())
    assert SCRIPT not in page
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in page
    assert "expected &#34;Paris&#34; &amp; got markup" in page


def test_html_is_self_contained_without_scripts() -> None:
    page = render_html(make_report(baseline=BASELINE))
    assert "<style>" in page
    assert "<script" not in page.lower()
    assert "<link" not in page.lower()
    assert "http://" not in page
    assert "https://" not in page


def test_html_lists_failing_cases_first_then_lowest_quality() -> None:
    page = render_html(make_report())
    positions = {r.case.id: page.index(f'data-case="{r.case.id}"') for r in RESULTS}
    # Failing: timeout (quality 0.0), injected (0.0), vague (0.45); passing: ok (1.0).
    assert positions["capital-injected"] < positions["capital-vague"] < positions["capital-ok"]
    assert positions["capital-timeout"] < positions["capital-vague"]


def test_html_shows_release_dataset_scores_and_verdicts() -> None:
    page = render_html(make_report())
    for text in (
        "rel-2",
        "support-bot",
        "capitals",
        "1.2.0",
        "too vague",
        "did not refuse",
        "about capital-ok",
    ):
        assert text in page
    assert page.count('class="badge fail">fail<') == 4  # every failed score, the timeout's included
    assert page.count('class="badge pass">pass<') == 2
    assert page.count('class="badge error">ERROR<') == 1


def test_html_shows_baseline_changes_only_with_a_baseline() -> None:
    without = render_html(make_report())
    with_baseline = render_html(make_report(baseline=BASELINE))
    assert "run-base" not in without
    assert "run-base" in with_baseline
    assert '<td class="better">+0.200</td>' in with_baseline  # quality 0.8 against 0.6
    assert '<td class="worse">+320</td>' in with_baseline  # p95 latency 1320 ms against 1000 ms
    assert '<td class="same">+0.0%</td>' in with_baseline  # pass rate unchanged
    assert "McNemar p = 0.0312" in with_baseline


def parse_junit(report: RunReport) -> ET.Element:
    return ET.fromstring(render_junit(report))


def test_junit_suite_counts_and_properties() -> None:
    suite = parse_junit(make_report())
    assert suite.tag == "testsuite"
    assert suite.attrib["name"] == "capitals@1.2.0"
    assert (suite.attrib["tests"], suite.attrib["failures"], suite.attrib["errors"]) == ("4", "2", "1")
    assert float(suite.attrib["time"]) == pytest.approx(2.25)
    properties = {p.attrib["name"]: p.attrib["value"] for p in suite.iter("property")}
    assert properties["release.id"] == "rel-2"
    assert properties["summary.pass_rate"] == "0.25"
    assert properties["summary.quality_ci.low"] == "0.7"
    assert properties["summary.scorers.exact.mean"] == "0.325"


def test_junit_testcases_carry_failures_and_errors() -> None:
    cases = {case.attrib["name"]: case for case in parse_junit(make_report()).iter("testcase")}
    assert set(cases) == {r.case.id for r in RESULTS}
    assert all(case.attrib["classname"] == "support-bot" for case in cases.values())
    assert cases["capital-ok"].find("failure") is None
    assert cases["capital-ok"].find("error") is None
    assert cases["capital-ok"].attrib["time"] == "1.500"
    vague = cases["capital-vague"].find("failure")
    assert vague is not None
    assert vague.attrib["message"] == "exact: no exact match; judge: too vague"
    injected = cases["capital-injected"].find("failure")
    assert injected is not None
    assert injected.attrib["message"] == 'exact: expected "Paris" & got markup'
    assert cases["capital-injected"].findtext("system-out") == SCRIPT
    timeout = cases["capital-timeout"]
    error = timeout.find("error")
    assert error is not None
    assert error.attrib["message"] == "upstream timed out"
    assert timeout.find("failure") is None


def test_junit_names_repeats_when_a_case_runs_more_than_once() -> None:
    results = [
        result("capital-ok", "Paris", score("exact", 1.0, True, "matches"), repeat=r) for r in range(2)
    ]
    names = [case.attrib["name"] for case in parse_junit(make_report(results, repeats=2)).iter("testcase")]
    assert names == ["capital-ok #0", "capital-ok #1"]


def test_junit_survives_control_characters_in_model_output() -> None:
    noisy = result("ansi", "\x1b[31mred\x1b[0m\x00", score("exact", 0.0, False, "bell \x07 in reason"))
    case = parse_junit(make_report([noisy])).find("testcase")
    assert case is not None
    assert case.findtext("system-out") == "\ufffd[31mred\ufffd[0m\ufffd"
    failure = case.find("failure")
    assert failure is not None
    assert failure.attrib["message"] == "exact: bell \ufffd in reason"


def test_render_all_gives_each_format_with_its_sha256() -> None:
    report = make_report(baseline=BASELINE)
    files = render_all(report)
    assert [f.format for f in files] == ["json", "html", "junit"]
    assert [f.content for f in files] == [render_json(report), render_html(report), render_junit(report)]
    for file in files:
        assert file.sha256 == hashlib.sha256(file.content.encode("utf-8")).hexdigest()


def test_report_hash_changes_with_the_results() -> None:
    report = make_report()
    changed = dataclasses.replace(report, results=RESULTS[:2])
    assert render_all(report)[0].sha256 != render_all(changed)[0].sha256
