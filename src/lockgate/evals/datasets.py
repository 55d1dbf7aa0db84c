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
requests where the gateway is configured to store content; a request a user rated (``POST
/v1/feedback``) brings its rating along as labels.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Engine, func, select

from lockgate.errors import InvalidRequest
from lockgate.evals.cases import Case
from lockgate.evals.dataset_files import read_dataset_file
from lockgate.evals.scorers import validate_scorer_specs
from lockgate.security.audit import AuditEvent, AuditLog
from lockgate.security.permissions import Authorizer
from lockgate.security.rbac import Actor
from lockgate.service_errors import Invalid, NotFound
from lockgate.store.tables import datasets, feedback, request_content, request_log, tenants
from lockgate.store.tenancy import require_tenant_id
from lockgate.wire import prompt_variables

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


# --- validating what was read ---------------------------------------------------------------------


def load_file(path: str | Path) -> tuple[DatasetSpec, list[Case]]:
    """Read and validate a dataset file; every problem names the file, line and field."""
    found = read_dataset_file(path)
    return parse_spec(found.spec, where=str(found.path)), parse_cases(found.cases, found.where)


def parse_spec(raw: dict[str, Any], where: str) -> DatasetSpec:
    try:
        raw = {**raw, "scorers": validate_scorer_specs(raw.get("scorers") or [])}
    except Invalid as exc:
        raise Invalid(f"{where}: {exc.message}") from None
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as exc:
        raise Invalid(f"{where}: {_first_problem(exc)}") from None


def parse_cases(rows: Sequence[Any], where: Callable[[int], str] = lambda i: f"cases[{i}]") -> list[Case]:
    """Validate case mappings; a problem is reported at ``where(index)`` (a file line, or cases[i])."""
    cases: list[Case] = []
    seen: dict[str, int] = {}
    if not rows:
        raise Invalid("cases: a dataset needs at least one case")
    if len(rows) > MAX_CASES:
        raise Invalid(f"cases: {len(rows)} cases; at most {MAX_CASES}")
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise Invalid(f"{where(index)}: a case is a JSON object")
        try:
            case = Case.model_validate(row)
        except ValidationError as exc:
            raise Invalid(f"{where(index)}: {_first_problem(exc)}") from None
        if case.id in seen:
            raise Invalid(f"{where(index)}: id: {case.id!r} is already used by {where(seen[case.id])}")
        seen[case.id] = index
        cases.append(case)
    return cases


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "(root)"
    return f"{where}: {error['msg']}"


# --- the store -------------------------------------------------------------------------------------


class DatasetService:
    def __init__(self, engine: Engine, audit: AuditLog, authz: Authorizer) -> None:
        self._engine = engine
        self._audit = audit
        self._authz = authz

    def push(self, actor: Actor, tenant: str, spec: DatasetSpec, cases: Sequence[Case]) -> StoredDataset:
        """Store a version; the same content again returns the version that already holds it."""
        self._authz.require(actor, "datasets.push", tenant, f"dataset:{tenant}/{spec.name}")
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
        return self.find(tenant, spec.name, version)

    def get(self, actor: Actor, tenant: str, name: str, version: int | None = None) -> StoredDataset:
        self._authz.require(actor, "datasets.get", tenant)
        return self.find(tenant, name, version)

    def find(self, tenant: str, name: str, version: int | None = None) -> StoredDataset:
        """A version (the latest when ``version`` is None), for a caller already authorised."""
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
        return self.find(tenant, name, int(version) if version else None)

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

    def list(self, actor: Actor, tenant: str) -> list[StoredDataset]:
        self._authz.require(actor, "datasets.list", tenant)
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
        only_rated: bool = False,
        min_feedback: float | None = None,
    ) -> StoredDataset:
        """Make a dataset version from production calls of ``route`` whose content the gateway stored.

        Each captured case keeps the caller's variables and the answer the release gave as ``expected``,
        tagged ``captured`` for a person to review before it gates anything. A call its user rated
        carries the rating as labels ``feedback_score`` (0..1) and ``feedback_label`` (when given).
        ``only_rated`` keeps only rated calls; ``min_feedback`` only calls rated at least that (say 1 for
        thumbs up: answers users liked, fit to be expected answers).
        """
        self._authz.require(actor, "datasets.capture", tenant, f"dataset:{tenant}/{spec.name}")
        if min_feedback is not None and not 0.0 <= min_feedback <= 1.0:
            raise Invalid(f"min_feedback: a rating is between 0 and 1, got {min_feedback}")
        with self._engine.connect() as connection:
            tenant_id = require_tenant_id(connection, tenant)
            query = (
                select(
                    request_log.c.id,
                    request_content.c.request_body,
                    request_content.c.response_body,
                    feedback.c.score.label("feedback_score"),
                    feedback.c.label.label("feedback_label"),
                )
                .join(request_content, request_content.c.request_id == request_log.c.id)
                .outerjoin(feedback, feedback.c.request_id == request_log.c.id)
                .where(
                    request_log.c.tenant_id == tenant_id,
                    request_log.c.route == route,
                    request_log.c.status_code == 200,
                    request_log.c.created_at >= since,
                    request_log.c.shadow.is_(False),
                )
            )
            if only_rated or min_feedback is not None:
                query = query.where(feedback.c.score.is_not(None))
            if min_feedback is not None:
                query = query.where(feedback.c.score >= min_feedback)
            rows = connection.execute(query.order_by(request_log.c.created_at.desc()).limit(limit)).all()
        cases = [case for row in rows if (case := _captured_case(row)) is not None]
        if not cases:
            rated = " rated" if only_rated or min_feedback is not None else ""
            raise NotFound(
                f"no stored{rated} production content for route {route!r} since {since:%Y-%m-%d %H:%M}Z; "
                "content is stored only when request_log.store_content is on"
            )
        return self.push(actor, tenant, spec, cases)


def _captured_case(row: Any) -> Case | None:
    try:
        body = orjson.loads(row.request_body)
    except orjson.JSONDecodeError:
        return None
    try:
        variables = prompt_variables(body) if isinstance(body, dict) else None
    except InvalidRequest:
        return None
    if not isinstance(variables, dict):
        return None
    expected = _answer_text(row.response_body)
    labels: dict[str, Any] = {}
    if row.feedback_score is not None:
        labels["feedback_score"] = float(row.feedback_score)
        if row.feedback_label is not None:
            labels["feedback_label"] = row.feedback_label
    return Case(
        id=f"captured-{row.id}", variables=variables, expected=expected, labels=labels, tags=["captured"]
    )


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
