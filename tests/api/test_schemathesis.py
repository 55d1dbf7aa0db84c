"""Property-based checks of the control API against its own OpenAPI schema (``/openapi.json``).

Schemathesis generates requests for every operation the schema describes and sends them in-process to
the ASGI app (the FastAPI app behind the authentication middleware). With the admin's control token no
request the schema allows makes the server fail (5xx); without a token every one of them is refused
with 401 before any route runs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.schemas import APIOperation

from lockgate.api.app import create_control_api
from lockgate.api.deps import REDEEM_OPERATION
from lockgate.security.permissions import PERMISSIONS
from lockgate.server.bootstrap import Bootstrap
from lockgate.services import Services

Operation = APIOperation[Any, Any, Any, Any]
Case = schemathesis.Case[Any]

SETTINGS = hypothesis.settings(
    max_examples=25, deadline=None, suppress_health_check=list(hypothesis.HealthCheck), database=None
)
# Refusing without a token happens before any route runs, the same for every request: fewer will do.
UNAUTHENTICATED = hypothesis.settings(SETTINGS, max_examples=10)


@pytest.fixture
def operations(services: Services, first_start: Bootstrap) -> list[Operation]:
    """Every operation of the control API's schema, bound to the app in-process."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_control_api(services))
    found: list[Operation] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        found.append(result.ok())
    # One operation per entry of the permission table, and none outside it.
    assert len(found) == len(PERMISSIONS)
    assert {operation.definition.raw["operationId"] for operation in found} == set(PERMISSIONS)
    return found


def operation_id(operation: Operation) -> str:
    return str(operation.definition.raw["operationId"])


def in_default_tenant(case: Case) -> Case:
    """Tenant-scoped requests go to ``default``, where the admin holds every role, so they reach the
    route instead of stopping at the permission check."""
    if case.path_parameters and "tenant" in case.path_parameters:
        case.path_parameters["tenant"] = "default"
    return case


def for_generated_cases(
    operation: Operation, check: Callable[[Case], None], settings: hypothesis.settings = SETTINGS
) -> None:
    @settings
    @hypothesis.given(case=operation.as_strategy().map(in_default_tenant))
    def run(case: Case) -> None:
        check(case)

    run()


def test_no_request_the_schema_allows_makes_the_server_fail(
    operations: list[Operation], admin_token: str
) -> None:
    headers = {"Authorization": f"Bearer {admin_token}"}
    answered: dict[str, set[int]] = defaultdict(set)
    for operation in operations:

        def no_server_error(case: Case, operation: Operation = operation) -> None:
            response = case.call_and_validate(headers=headers, checks=[not_a_server_error])
            answered[operation_id(operation)].add(response.status_code)

        for_generated_cases(operation, no_server_error)

    assert set(answered) == set(PERMISSIONS), "an operation was never called"
    # The requests got past authentication and the permission check to the routes themselves
    # (redeeming wants an invitation code, not a control token).
    refused_only = [op for op, codes in answered.items() if codes <= {401, 403} and op != REDEEM_OPERATION]
    assert refused_only == []


def test_every_operation_refuses_every_request_without_a_token(operations: list[Operation]) -> None:
    answered: dict[str, set[int]] = defaultdict(set)
    for operation in operations:

        def unauthenticated(case: Case, operation: Operation = operation) -> None:
            response = case.call()
            answered[operation_id(operation)].add(response.status_code)
            assert response.status_code == 401, (operation.label, response.status_code, response.text)
            assert response.headers.get("www-authenticate") == ["Bearer"]

        for_generated_cases(operation, unauthenticated, UNAUTHENTICATED)

    assert answered == {op: {401} for op in PERMISSIONS}
