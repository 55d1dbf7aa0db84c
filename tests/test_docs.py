"""The configuration reference names every field the schema accepts, so the two cannot drift apart."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from lockgate.config.schema import (
    ControlConfig,
    DeploymentConfig,
    GatewayConfig,
    ModelConfig,
    RequestLogConfig,
    RoutingConfig,
    ServerConfig,
    TenantConfig,
)
from lockgate.providers.registry import known_kinds, provider_class

REFERENCE = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
MODELS: list[type[BaseModel]] = [
    GatewayConfig,
    ModelConfig,
    DeploymentConfig,
    TenantConfig,
    RoutingConfig,
    ServerConfig,
    RequestLogConfig,
    ControlConfig,
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_config_field_is_documented(model: type[BaseModel]) -> None:
    missing = [name for name in model.model_fields if f"`{name}`" not in REFERENCE]
    assert missing == []


def section(heading: str) -> str:
    """The text under a ``## heading`` of the configuration reference, up to the next one."""
    assert f"\n## {heading}\n" in REFERENCE
    return REFERENCE.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize(
    ("heading", "model"),
    [("`server`", ServerConfig), ("`control`", ControlConfig), ("`routing`", RoutingConfig)],
)
def test_each_section_has_a_row_for_each_of_its_fields(heading: str, model: type[BaseModel]) -> None:
    table = section(heading)
    missing = [name for name in model.model_fields if f"| `{name}` |" not in table]
    assert missing == []


@pytest.mark.parametrize("kind", known_kinds())
def test_every_provider_kind_and_field_is_documented(kind: str) -> None:
    heading = f"### kind `{kind}`"
    assert heading in REFERENCE
    section = REFERENCE.split(heading, 1)[1].split("\n#", 1)[0]
    settings = provider_class(kind).Settings
    missing = [name for name in settings.model_fields if f"| `{name}` |" not in section]
    assert missing == []


EVALS = (Path(__file__).parents[1] / "docs" / "evals.md").read_text()


def test_every_scorer_type_gate_field_and_case_field_is_documented() -> None:
    from lockgate.evals.cases import Case
    from lockgate.evals.scorers import SCORER_TYPES
    from lockgate.gates.gate import GateSpec, Thresholds

    scorers = [t for t in SCORER_TYPES if f"`{t}`" not in EVALS]
    gate = [f for f in [*GateSpec.model_fields, *Thresholds.model_fields] if f"`{f}`" not in EVALS]
    cases = [
        f.alias or name for name, f in Case.model_fields.items() if f"| `{f.alias or name}` |" not in EVALS
    ]
    assert (scorers, gate, cases) == ([], [], [])
