"""Render a finished eval run as a JSON document, a self-contained HTML page and JUnit XML.

The three formats read the same ``RunReport``:

- JSON is the archival form: deterministic (sorted keys, fixed indent, case-runs in the order the
  report holds them), so its sha256 can be signed into deployment evidence;
- HTML is for people: one page with inline CSS and no script, rendered by a Jinja2 template with
  autoescaping on, because model output is untrusted text; failing cases come first, then the
  lowest quality, so a reviewer reads the problems before the successes;
- JUnit XML is for CI systems: one testcase per case-run, built with ElementTree so every attribute
  and text node is escaped; characters XML 1.0 cannot carry (terminal escapes in model output, ...)
  are replaced so the file always parses.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypedDict

from jinja2 import Environment, PackageLoader, StrictUndefined

from lockgate.evals.cases import CaseResult
from lockgate.evals.summary import RunSummary

ReportFormat = Literal["json", "html", "junit"]


@dataclass(frozen=True, slots=True)
class Metric:
    """A summary key shown in the HTML header: how to label and format it, and which way is better."""

    key: str
    label: str
    spec: str
    higher_is_better: bool


HEADLINE_METRICS = (
    Metric("quality", "Quality", ".3f", higher_is_better=True),
    Metric("pass_rate", "Pass rate", ".1%", higher_is_better=True),
    Metric("safety_failure_rate", "Safety failure rate", ".1%", higher_is_better=False),
    Metric("error_rate", "Error rate", ".1%", higher_is_better=False),
    Metric("latency_p50_ms", "Latency p50 (ms)", ".0f", higher_is_better=False),
    Metric("latency_p95_ms", "Latency p95 (ms)", ".0f", higher_is_better=False),
    Metric("cost_per_1k_usd", "Cost per 1k cases (USD)", ".4f", higher_is_better=False),
)

_XML_ILLEGAL = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

_TEMPLATES = Environment(
    loader=PackageLoader("lockgate.evals", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


class Baseline(TypedDict):
    """The run a report is compared with: its ids, ``RunSummary.as_dict()`` and ``Comparison.as_dict()``."""

    run_id: str
    release_id: str
    summary: dict[str, Any]
    comparison: dict[str, Any]


@dataclass(frozen=True)
class RunReport:
    """Everything known about one finished run. ``release`` holds id, route, prompt, model, git_commit;
    ``dataset`` holds name, version, sha256; ``settings`` holds repeats, concurrency and the rest."""

    run_id: str
    release: dict[str, Any]
    dataset: dict[str, Any]
    settings: dict[str, Any]
    started_at: datetime
    finished_at: datetime
    status: str
    summary: RunSummary
    results: Sequence[CaseResult]
    baseline: Baseline | None = None


@dataclass(frozen=True, slots=True)
class ReportFile:
    format: ReportFormat
    content: str
    sha256: str


def render_json(report: RunReport) -> str:
    document = {
        "run_id": report.run_id,
        "release": report.release,
        "dataset": report.dataset,
        "settings": report.settings,
        "started_at": report.started_at.isoformat(),
        "finished_at": report.finished_at.isoformat(),
        "status": report.status,
        "summary": report.summary.as_dict(),
        "baseline": report.baseline,
        "results": [_case_run(result) for result in report.results],
    }
    return json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def render_html(report: RunReport) -> str:
    return _TEMPLATES.get_template("report.html.j2").render(
        report=report,
        summary=report.summary.as_dict(),
        metrics=_headline(report),
        comparison=report.baseline["comparison"] if report.baseline else None,
        results=sorted(report.results, key=_review_order),
        repeated=_repeats(report) > 1,
        to_json=_pretty_json,
    )


def render_junit(report: RunReport) -> str:
    results = report.results
    suite = ET.Element(
        "testsuite",
        name=f"{report.dataset['name']}@{report.dataset['version']}",
        tests=str(len(results)),
        failures=str(sum(1 for r in results if r.outcome.error is None and not r.passed)),
        errors=str(sum(1 for r in results if r.outcome.error is not None)),
        time=_seconds(sum(r.outcome.latency_ms for r in results)),
        timestamp=report.started_at.isoformat(),
    )
    properties = ET.SubElement(suite, "properties")
    for name, value in _junit_properties(report):
        ET.SubElement(properties, "property", name=name, value=_xml_safe(value))
    for result in results:
        _junit_case(suite, result, classname=str(report.release["route"]), repeated=_repeats(report) > 1)
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


def render_all(report: RunReport) -> list[ReportFile]:
    rendered: list[tuple[ReportFormat, str]] = [
        ("json", render_json(report)),
        ("html", render_html(report)),
        ("junit", render_junit(report)),
    ]
    return [
        ReportFile(fmt, content, hashlib.sha256(content.encode("utf-8")).hexdigest())
        for fmt, content in rendered
    ]


def _case_run(result: CaseResult) -> dict[str, Any]:
    case, outcome = result.case, result.outcome
    return {
        "case_id": case.id,
        "repeat": result.repeat,
        "tags": case.tags,
        "variables": case.variables,
        "expected": case.expected,
        "output": outcome.text,
        "error": outcome.error,
        "latency_ms": outcome.latency_ms,
        "cost_usd": outcome.cost_usd,
        "tokens": {"input": outcome.input_tokens, "output": outcome.output_tokens},
        "passed": result.passed,
        "quality": result.quality,
        "scores": [score.as_dict() for score in result.scores],
    }


def _repeats(report: RunReport) -> int:
    return int(report.settings.get("repeats", 1))


def _review_order(result: CaseResult) -> tuple[bool, float, str, int]:
    """Failing case-runs first, then lowest quality (none last), then by case id and repeat."""
    quality = math.inf if result.quality is None else result.quality
    return (result.passed, quality, result.case.id, result.repeat)


def _headline(report: RunReport) -> list[dict[str, str]]:
    """Each headline metric formatted, with the baseline's value and the change when there is a baseline."""
    current = report.summary.as_dict()
    previous = report.baseline["summary"] if report.baseline else {}
    return [
        _headline_row(metric, current[metric.key], previous.get(metric.key)) for metric in HEADLINE_METRICS
    ]


def _headline_row(metric: Metric, value: float, before: float | None) -> dict[str, str]:
    """``trend`` is "better", "worse" or "same" (empty without a baseline) and only colours the change."""
    row = {"label": metric.label, "value": format(value, metric.spec)}
    if before is None:
        return row | {"baseline": "", "delta": "", "trend": ""}
    delta = value - before
    improved = delta > 0 if metric.higher_is_better else delta < 0
    trend = "same" if delta == 0 else "better" if improved else "worse"
    return row | {
        "baseline": format(before, metric.spec),
        "delta": format(delta, "+" + metric.spec),
        "trend": trend,
    }


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def _junit_properties(report: RunReport) -> list[tuple[str, str]]:
    pairs = [("run.id", report.run_id), ("release.id", str(report.release["id"]))]
    pairs += _flatten("summary", report.summary.as_dict())
    return pairs


def _flatten(prefix: str, document: dict[str, Any]) -> list[tuple[str, str]]:
    """Dotted names for nested metrics (summary.scorers.exact.mean); lists become JSON."""
    pairs: list[tuple[str, str]] = []
    for key, value in document.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            pairs += _flatten(name, value)
        else:
            pairs.append((name, json.dumps(value) if isinstance(value, list) else str(value)))
    return pairs


def _junit_case(suite: ET.Element, result: CaseResult, classname: str, repeated: bool) -> None:
    name = f"{result.case.id} #{result.repeat}" if repeated else result.case.id
    case = ET.SubElement(
        suite,
        "testcase",
        classname=_xml_safe(classname),
        name=_xml_safe(name),
        time=_seconds(result.outcome.latency_ms),
    )
    if result.outcome.error is not None:
        error = ET.SubElement(case, "error", message=_xml_safe(result.outcome.error), type="call")
        error.text = _xml_safe(result.outcome.error)
    failed = [score for score in result.scores if not score.passed]
    if failed and result.outcome.error is None:
        failure = ET.SubElement(
            case,
            "failure",
            message=_xml_safe("; ".join(f"{s.scorer}: {s.reason}" for s in failed)),
            type=",".join(s.scorer for s in failed),
        )
        failure.text = _xml_safe(
            "\n".join(f"{s.scorer} ({s.kind}) value={s.value:g}: {s.reason}" for s in failed)
        )
    if result.outcome.text:
        ET.SubElement(case, "system-out").text = _xml_safe(result.outcome.text)


def _seconds(milliseconds: float) -> str:
    return f"{milliseconds / 1000:.3f}"


def _xml_safe(text: str) -> str:
    """``text`` with the characters XML 1.0 forbids (control codes, lone surrogates) replaced by U+FFFD."""
    return _XML_ILLEGAL.sub("\ufffd", text)
