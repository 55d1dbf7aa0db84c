"""Datasets: files in, content-addressed versions out; every bad input named by file, line and field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import yaml

from lockgate.evals.datasets import DatasetSpec, content_sha256, load_file
from lockgate.instance import Instance
from lockgate.ops.records import RequestRecord
from lockgate.security.rbac import Actor, Role
from lockgate.service_errors import Forbidden, Invalid, NotFound
from lockgate.services import Services
from lockgate.store.tables import request_content, request_log, tenants
from tests.support.people import person

SCORERS = [{"type": "icontains", "threshold": 1.0}]


def write(directory: Path, cases: str, name: str = "cases.jsonl", **spec: object) -> Path:
    (directory / name).write_text(cases, encoding="utf-8")
    path = directory / "dataset.yaml"
    path.write_text(yaml.safe_dump({"name": "golden", "cases": name, "scorers": SCORERS, **spec}))
    return path


def jsonl(*rows: dict[str, object]) -> str:
    return "".join(orjson.dumps(row).decode() + "\n" for row in rows)


def test_jsonl_and_csv_give_the_same_cases(tmp_path: Path) -> None:
    from_jsonl = load_file(
        write(
            tmp_path,
            jsonl(
                {
                    "id": "fr",
                    "variables": {"question": "Capital of France?"},
                    "facts": ["Paris"],
                    "labels": {"expect_refusal": False},
                    "tags": ["geo", "eu"],
                }
            ),
        )
    )
    csv_text = "id,question,facts,tags,label.expect_refusal\nfr,Capital of France?,Paris,geo;eu,false\n"
    from_csv = load_file(write(tmp_path, csv_text, name="cases.csv"))
    assert from_jsonl[1] == from_csv[1]
    assert from_csv[1][0].variables == {"question": "Capital of France?"}
    assert from_jsonl[0].scorers == from_csv[0].scorers


@pytest.mark.parametrize(
    ("cases", "message"),
    [
        ('{"id": "a"}\n{"id": "a"}\n', "cases.jsonl:2: id: 'a' is already used by "),
        ('{"id": "a"}\n{"id": \n', "cases.jsonl:2: not valid JSON"),
        ('{"id": "a", "facts": "Paris"}\n', "cases.jsonl:1: facts: Input should be a valid list"),
        ('{"id": "a", "answer": 1}\n', "cases.jsonl:1: answer: Extra inputs are not permitted"),
        ("[1, 2]\n", "cases.jsonl:1: a case is a JSON object"),
        ("\n\n", "cases.jsonl: no cases"),
    ],
)
def test_bad_cases_are_named_by_line_and_field(tmp_path: Path, cases: str, message: str) -> None:
    with pytest.raises(Invalid) as caught:
        load_file(write(tmp_path, cases))
    assert message in caught.value.message


def test_bad_spec_names_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, jsonl({"id": "a"}))
    raw = yaml.safe_load(path.read_text())
    raw["scorers"] = [{"type": "icontains"}, {"type": "regex", "pattern": "(unclosed"}]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(Invalid, match=r"dataset.yaml: scorers\[1\]\.pattern"):
        load_file(path)
    path.write_text("name: golden\ncases: [oops\n")
    with pytest.raises(Invalid, match=r"dataset.yaml:3: not valid YAML"):
        load_file(path)
    path.write_text(yaml.safe_dump({"name": "Bad Name", "cases": "cases.jsonl", "scorers": SCORERS}))
    with pytest.raises(Invalid, match=r"dataset\.yaml: name: String should match pattern"):
        load_file(path)


def test_builtin_safety_probes_load(tmp_path: Path) -> None:
    path = tmp_path / "safety.yaml"
    path.write_text(
        yaml.safe_dump(
            {"name": "safety", "suite": "safety", "cases": "builtin:safety", "scorers": [{"type": "safety"}]}
        )
    )
    spec, cases = load_file(path)
    assert spec.suite == "safety"
    categories = {case.labels["category"] for case in cases}
    assert categories == {"prompt_injection", "jailbreak", "pii_leak"}


def test_a_duplicate_case_id_names_both_lines(tmp_path: Path) -> None:
    with pytest.raises(Invalid) as caught:
        load_file(write(tmp_path, '{"id": "a"}\n{"id": "b"}\n{"id": "a"}\n'))
    cases = tmp_path.resolve() / "cases.jsonl"
    assert caught.value.message == f"{cases}:3: id: 'a' is already used by {cases}:1"


def test_versions_are_content_addressed(services: Services, admin: Actor, tmp_path: Path) -> None:
    service = services.datasets
    spec, cases = load_file(write(tmp_path, jsonl({"id": "a", "facts": ["x"]})))
    first = service.push(admin, "default", spec, cases)
    again = service.push(admin, "default", spec, cases)
    assert (first.version, again.version, again.id) == (1, 1, first.id)
    spec2, cases2 = load_file(write(tmp_path, jsonl({"id": "a", "facts": ["y"]})))
    second = service.push(admin, "default", spec2, cases2)
    assert second.version == 2 and second.sha256 != first.sha256
    assert service.resolve("default", "golden").version == 2
    assert service.resolve("default", "golden@1").cases[0].facts == ["x"]
    # The hash is recomputable from what is stored (an auditor's check).
    assert first.sha256 == content_sha256(
        first.spec.model_dump(mode="json", exclude={"name"}),
        [c.model_dump(mode="json", by_alias=True, exclude_defaults=True) for c in first.cases],
    )
    with pytest.raises(NotFound, match="unknown dataset 'golden@9'"):
        service.resolve("default", "golden@9")
    with pytest.raises(Invalid, match="the version is a number"):
        service.resolve("default", "golden@latest")


def test_pushing_needs_an_editor(services: Services, admin: Actor, tmp_path: Path) -> None:
    vic = person(services, admin, "vic", Role.VIEWER)
    spec, cases = load_file(write(tmp_path, jsonl({"id": "a"})))
    with pytest.raises(Forbidden):
        services.datasets.push(vic, "default", spec, cases)
    assert services.datasets.list(vic, "default") == []
    with pytest.raises(Forbidden):
        services.datasets.capture(vic, "default", spec, route="support-answer", since=datetime.now(UTC))


def test_capture_from_stored_production_content(services: Services, instance: Instance, admin: Actor) -> None:
    with instance.engine.begin() as connection:
        tenant_id = connection.execute(tenants.select().where(tenants.c.name == "default")).first().id  # type: ignore[union-attr]
        for i, status in enumerate((200, 200, 500)):
            record = RequestRecord(
                id=f"req_{i}",
                created_at=datetime.now(UTC),
                endpoint="chat.completions",
                stream=False,
                status_code=status,
                latency_ms=1.0,
                tenant_id=tenant_id,
                route="support-answer",
            )
            connection.execute(request_log.insert().values(**record.row()))
            body = {"model": "route:support-answer", "messages": [], "variables": {"question": f"q{i}"}}
            answer = {"choices": [{"message": {"role": "assistant", "content": f"a{i}"}}]}
            connection.execute(
                request_content.insert().values(
                    request_id=f"req_{i}",
                    request_body=orjson.dumps(body).decode(),
                    response_body=orjson.dumps(answer).decode(),
                    expires_at=datetime.now(UTC) + timedelta(days=1),
                )
            )
    spec = DatasetSpec(name="captured", scorers=SCORERS)
    stored = services.datasets.capture(
        admin, "default", spec, route="support-answer", since=datetime.now(UTC) - timedelta(hours=1)
    )
    assert sorted((c.variables["question"], c.expected) for c in stored.cases) == [("q0", "a0"), ("q1", "a1")]
    assert all(c.tags == ["captured"] for c in stored.cases)
    with pytest.raises(NotFound, match="store_content"):
        services.datasets.capture(admin, "default", spec, route="other", since=datetime.now(UTC))
