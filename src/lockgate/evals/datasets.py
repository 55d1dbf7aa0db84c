"""Golden datasets: JSONL (or CSV) cases plus how to score them, stored content-addressed and versioned.

A dataset is described by a small YAML file, kept in git next to the prompts::

    name: support-golden
    description: Questions customers really ask, with the facts a good answer states.
    suite: quality            # or: safety (its failures count against the route's risk threshold)
    cases: support-golden.jsonl   # relative to this file; .jsonl or .csv; or builtin:safety
    scorers:
      - {type: json_schema}
      - {type: contains, threshold: 1.0, weight: 2}

Pushing the same content again returns the version it already has; any change makes a new version.
The version's sha256 covers the spec and every case (canonical JSON), so an eval report and the evidence
of a promotion name exactly the data they were made on. Cases can also be captured from production
requests where the gateway is configured to store content.
"""

from __future__ import annotations

import csv
import hashlib
import io
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Engine, func, select

from lockgate.control.errors import Invalid, NotFound
from lockgate.control.tenancy import require_tenant_id
from lockgate.evals.builtin import builtin_dataset_path
from lockgate.evals.cases import Case
from lockgate.evals.scorers import validate_scorer_specs
from lockgate.security.audit import AuditEvent, AuditLog
from lockgate.security.rbac import Actor, Role
from lockgate.store.tables import datasets, request_content, request_log, tenants

DATASET_NAME = r"^[a-z0-9][a-z0-9_.-]*$"
MAX_CASES = 100_000
Suite = Literal["quality", "safety"]


class DatasetSpec(BaseModel):
    """Everything about a dataset except its cases; hashed together with them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=DATASET_NAME, max_length=200)
    description: str = ""
    suite: Suite = "quality"
    scorers: list[dict[str, Any]] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class StoredDataset:
    id: str
    tenant: str
    name: str
    version: int
    sha256: str
    spec: DatasetSpec
    cases: tuple[Case, ...]
    created_by: str
    created_at: datetime

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def case(self, case_id: str) -> Case:
        for case in self.cases:
            if case.id == case_id:
                return case
        raise NotFound(f"dataset {self.ref} has no case {case_id!r}")


def content_sha256(spec: dict[str, Any], cases: Sequence[dict[str, Any]]) -> str:
    """The dataset hash an auditor recomputes: canonical JSON of spec and cases."""
    body = orjson.dumps({"spec": spec, "cases": list(cases)}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()


def case_dicts(cases: Sequence[Case]) -> list[dict[str, Any]]:
    return [case.model_dump(mode="json", by_alias=True, exclude_defaults=True) for case in cases]


# --- reading files ---------------------------------------------------------------------------------


def load_file(path: str | Path) -> tuple[DatasetSpec, list[Case]]:
    """Read a dataset YAML file and its cases; every problem names the file, line and field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise Invalid(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    except OSError as exc:
        raise Invalid(f"{path}: cannot read: {exc.strerror}") from None
    if not isinstance(raw, dict):
        raise Invalid(f"{path}: a dataset file is a mapping with name, cases and scorers")
    source = raw.pop("cases", None)
    if not isinstance(source, str):
        raise Invalid(f"{path}: cases: give the JSONL or CSV file holding the cases (or builtin:safety)")
    spec = parse_spec(raw, where=str(path))
    if source.startswith("builtin:"):
        cases_path = builtin_dataset_path(source.removeprefix("builtin:"))
    else:
        cases_path = (path.parent / source).resolve()
    return spec, read_cases(cases_path)


def parse_spec(raw: dict[str, Any], where: str) -> DatasetSpec:
    try:
        raw = {**raw, "scorers": validate_scorer_specs(raw.get("scorers") or [])}
    except Invalid as exc:
        raise Invalid(f"{where}: {exc.message}") from None
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as exc:
        raise Invalid(f"{where}: {_first_problem(exc)}") from None


def read_cases(path: Path) -> list[Case]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise Invalid(f"{path}: cannot read: {exc.strerror}") from None
    if path.suffix.lower() == ".csv":
        rows = [(line, row) for line, row in _csv_rows(text)]
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append((number, orjson.loads(line)))
            except orjson.JSONDecodeError as exc:
                raise Invalid(f"{path}:{number}: not valid JSON: {exc}") from None
    return _validated(path, rows)


def _validated(path: Path, rows: Sequence[tuple[int, Any]]) -> list[Case]:
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for number, row in rows:
        if not isinstance(row, dict):
            raise Invalid(f"{path}:{number}: a case is a JSON object")
        try:
            case = Case.model_validate(row)
        except ValidationError as exc:
            raise Invalid(f"{path}:{number}: {_first_problem(exc)}") from None
        if case.id in seen:
            raise Invalid(f"{path}:{number}: id: {case.id!r} is already used on line {seen[case.id]}")
        seen[case.id] = number
        cases.append(case)
    if not cases:
        raise Invalid(f"{path}: no cases")
    if len(cases) > MAX_CASES:
        raise Invalid(f"{path}: {len(cases)} cases; at most {MAX_CASES}")
    return cases


def _csv_rows(text: str) -> list[tuple[int, dict[str, Any]]]:
    """CSV import: id, expected, facts, context, tags, schema columns; ``label.X`` columns become labels;
    every other column is a prompt variable. List columns (facts, tags) are ``;``-separated or JSON."""
    reader = csv.DictReader(io.StringIO(text))
    rows: list[tuple[int, dict[str, Any]]] = []
    for row in reader:
        case: dict[str, Any] = {"variables": {}, "labels": {}}
        for column, value in row.items():
            if column is None or value is None or value == "":
                continue
            if column in ("id", "expected", "context"):
                case[column] = value
            elif column in ("facts", "tags"):
                case[column] = _list_cell(value)
            elif column == "schema":
                case[column] = _json_cell(value)
            elif column.startswith("label."):
                case["labels"][column.removeprefix("label.")] = _scalar_cell(value)
            else:
                case["variables"][column] = value
        rows.append((reader.line_num, case))
    return rows


def _list_cell(value: str) -> Any:
    if value.lstrip().startswith("["):
        return _json_cell(value)
    return [part.strip() for part in value.split(";") if part.strip()]


def _json_cell(value: str) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value  # left to validation, which names the field


def _scalar_cell(value: str) -> Any:
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return value


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "(root)"
    return f"{where}: {error['msg']}"


# --- the store -------------------------------------------------------------------------------------


class DatasetService:
    def __init__(self, engine: Engine, audit: AuditLog) -> None:
        self._engine = engine
        self._audit = audit

    def push(self, actor: Actor, tenant: str, spec: DatasetSpec, cases: Sequence[Case]) -> StoredDataset:
        """Store a version; the same content again returns the version that already holds it."""
        event = AuditEvent("dataset.push", f"dataset:{tenant}/{spec.name}")
        self._audit.authorize(self._engine, actor, tenant, Role.EDITOR, event)
        spec_json = spec.model_dump(mode="json", exclude={"name"})
        rows = case_dicts(cases)
        digest = content_sha256(spec_json, rows)
        with self._engine.begin() as connection:
            tenant_id = require_tenant_id(connection, tenant)
            found = connection.execute(
                select(datasets).where(
                    datasets.c.tenant_id == tenant_id,
                    datasets.c.name == spec.name,
                    datasets.c.sha256 == digest,
                )
            ).first()
            if found is not None:
                return _stored(found, tenant)
            latest = connection.execute(
                select(func.max(datasets.c.version)).where(
                    datasets.c.tenant_id == tenant_id, datasets.c.name == spec.name
                )
            ).scalar()
            version = int(latest or 0) + 1
            values = {
                "id": f"ds_{uuid.uuid4().hex[:24]}",
                "tenant_id": tenant_id,
                "name": spec.name,
                "version": version,
                "sha256": digest,
                "spec": spec_json,
                "cases": rows,
                "created_by": actor.name,
                "created_at": datetime.now(UTC),
            }
            connection.execute(datasets.insert().values(**values))
            self._audit.append(
                connection,
                actor,
                AuditEvent(
                    "dataset.push",
                    f"dataset:{tenant}/{spec.name}@{version}",
                    after={"sha256": digest, "cases": len(rows)},
                ),
            )
        return self.get(tenant, spec.name, version)

    def get(self, tenant: str, name: str, version: int | None = None) -> StoredDataset:
        with self._engine.connect() as connection:
            tenant_id = require_tenant_id(connection, tenant)
            query = select(datasets).where(datasets.c.tenant_id == tenant_id, datasets.c.name == name)
            if version is not None:
                query = query.where(datasets.c.version == version)
            row = connection.execute(query.order_by(datasets.c.version.desc()).limit(1)).first()
        if row is None:
            which = f"{name}@{version}" if version is not None else name
            raise NotFound(f"unknown dataset {which!r}; push it with `lockgate datasets push FILE`")
        return _stored(row, tenant)

    def resolve(self, tenant: str, reference: str) -> StoredDataset:
        """``name`` (latest version) or ``name@version``."""
        name, _, version = reference.partition("@")
        if version and not version.isdigit():
            raise Invalid(f"dataset reference {reference!r}: the version is a number, e.g. {name}@3")
        return self.get(tenant, name, int(version) if version else None)

    def by_id(self, dataset_id: str) -> StoredDataset:
        with self._engine.connect() as connection:
            row = connection.execute(
                select(datasets, tenants.c.name.label("tenant_name"))
                .join(tenants)
                .where(datasets.c.id == dataset_id)
            ).first()
        if row is None:
            raise NotFound(f"unknown dataset id {dataset_id!r}")
        return _stored(row, row.tenant_name)

    def list(self, tenant: str) -> list[StoredDataset]:
        with self._engine.connect() as connection:
            tenant_id = require_tenant_id(connection, tenant)
            rows = connection.execute(
                select(datasets)
                .where(datasets.c.tenant_id == tenant_id)
                .order_by(datasets.c.name, datasets.c.version)
            ).all()
        return [_stored(row, tenant) for row in rows]

    def capture(
        self,
        actor: Actor,
        tenant: str,
        spec: DatasetSpec,
        *,
        route: str,
        since: datetime,
        limit: int = 500,
    ) -> StoredDataset:
        """Make a dataset version from production calls of ``route`` whose content the gateway stored.

        Each captured case keeps the caller's variables and the answer the release gave as ``expected``,
        tagged ``captured`` for a person to review before it gates anything.
        """
        with self._engine.connect() as connection:
            tenant_id = require_tenant_id(connection, tenant)
            rows = connection.execute(
                select(request_log.c.id, request_content.c.request_body, request_content.c.response_body)
                .join(request_content, request_content.c.request_id == request_log.c.id)
                .where(
                    request_log.c.tenant_id == tenant_id,
                    request_log.c.route == route,
                    request_log.c.status_code == 200,
                    request_log.c.created_at >= since,
                )
                .order_by(request_log.c.created_at.desc())
                .limit(limit)
            ).all()
        cases = [case for row in rows if (case := _captured_case(row)) is not None]
        if not cases:
            raise NotFound(
                f"no stored production content for route {route!r} since {since:%Y-%m-%d %H:%M}Z; "
                "content is stored only when request_log.store_content is on"
            )
        return self.push(actor, tenant, spec, cases)


def _captured_case(row: Any) -> Case | None:
    try:
        body = orjson.loads(row.request_body)
    except orjson.JSONDecodeError:
        return None
    variables = body.get("variables")
    metadata = body.get("metadata")
    if variables is None and isinstance(metadata, dict):
        variables = metadata.get("variables")
        if isinstance(variables, str):
            try:
                variables = orjson.loads(variables)
            except orjson.JSONDecodeError:
                return None
    if not isinstance(variables, dict):
        return None
    expected = _answer_text(row.response_body)
    return Case(id=f"captured-{row.id}", variables=variables, expected=expected, tags=["captured"])


def _answer_text(response: str | None) -> str | None:
    if not response:
        return None
    try:
        body = orjson.loads(response)
    except orjson.JSONDecodeError:
        return response  # a stream is stored as its text
    choices = body.get("choices") if isinstance(body, dict) else None
    if not choices:
        return None
    return str((choices[0].get("message") or {}).get("content") or "") or None


def _stored(row: Any, tenant: str) -> StoredDataset:
    spec = DatasetSpec.model_validate({**row.spec, "name": row.name})
    return StoredDataset(
        id=row.id,
        tenant=tenant,
        name=row.name,
        version=int(row.version),
        sha256=row.sha256,
        spec=spec,
        cases=tuple(Case.model_validate(c) for c in row.cases),
        created_by=row.created_by,
        created_at=row.created_at,
    )
