"""Property-based: no request the control API's own OpenAPI schema allows makes it answer 5xx.

Schemathesis generates requests for every operation from ``/openapi.json`` (valid and boundary
inputs) and sends them, authenticated as an admin, to the ASGI app in-process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

from lockgate.api.app import create_control_api
from lockgate.instance import bootstrap, load_config, open_instance

SETTINGS = hypothesis.settings(
    max_examples=15, deadline=None, suppress_health_check=list(hypothesis.HealthCheck), database=None
)


def test_no_operation_answers_5xx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKGATE_DATABASE_URL", f"sqlite:///{tmp_path / 'lockgate.db'}")
    instance = open_instance(tmp_path / "data")
    first = bootstrap(instance, load_config(None))
    assert first.control_token is not None
    headers = {"Authorization": f"Bearer {first.control_token.secret}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_control_api(instance.control()))

    tested: list[str] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()

        @SETTINGS
        @hypothesis.given(case=operation.as_strategy())
        def no_server_error(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(headers=headers, checks=[not_a_server_error])

        no_server_error()
        tested.append(operation.label)
    assert len(tested) >= 20, tested
    instance.engine.dispose()
