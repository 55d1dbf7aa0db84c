"""The model registry against a real store (SQLite and PostgreSQL): cards, references, statuses, audit."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
import yaml

from lockgate.control.registry import ModelCard, ModelRegistry, ModelStatus, TrainingSpec, parse_card
from lockgate.instance import Instance
from lockgate.security.rbac import Actor, Role
from lockgate.service_errors import Conflict, Forbidden, Invalid, NotFound
from lockgate.services import Services
from lockgate.store.tables import audit_log
from tests.support.people import person

GUIDE = (Path(__file__).parents[2] / "docs" / "registry.md").read_text()


@dataclass(frozen=True)
class People:
    registry: ModelRegistry
    admin: Actor
    editor: Actor
    viewer: Actor


@pytest.fixture
def people(services: Services, admin: Actor) -> People:
    """admin, eddie (editor) and eve (viewer) in tenant ``default``."""
    editor = person(services, admin, "eddie", Role.EDITOR)
    viewer = person(services, admin, "eve", Role.VIEWER)
    return People(services.registry, admin, editor, viewer)


def card(version: str = "1", name: str = "support-llm", gateway_model: str = "m", **extra: Any) -> ModelCard:
    """A card served by ``gateway_model``, one of the models the test server serves (m, other)."""
    return parse_card(
        {
            "name": name,
            "version": version,
            "gateway_model": gateway_model,
            "provider": "openai",
            "license": "proprietary",
            "intended_use": "answering support tickets",
            "owner_team": "support-platform",
            **extra,
        }
    )


def audit_entries(instance: Instance, action: str) -> list[dict[str, Any]]:
    with instance.engine.connect() as connection:
        rows = connection.execute(
            sa.select(audit_log).where(audit_log.c.action == action).order_by(audit_log.c.seq)
        ).all()
    return [
        {
            "actor": r.actor,
            "resource": r.resource,
            "outcome": r.outcome,
            "before": orjson.loads(r.before) if r.before else None,
            "after": orjson.loads(r.after) if r.after else None,
        }
        for r in rows
    ]


def test_register_then_resolve_by_alias_version_and_bare_name(people: People, instance: Instance) -> None:
    registry, editor = people.registry, people.editor
    first = registry.register(editor, "default", card("1", context_window=8192, input_price_per_1m=0.5))
    registry.register(editor, "default", card("2", gateway_model="other"))
    registry.register(editor, "default", card("1", name="other-llm"))
    registry.set_alias(editor, "default", "support-llm", "champion", "1")

    assert first.status is ModelStatus.ACTIVE
    assert first.created_by == "eddie"
    viewer = people.viewer
    assert registry.resolve(viewer, "default", "support-llm@champion").card == first.card
    assert registry.resolve(viewer, "default", "support-llm@champion").aliases == ("champion",)
    assert registry.resolve(viewer, "default", "support-llm:2").card.gateway_model == "other"
    assert registry.resolve(viewer, "default", "support-llm").version == "2"
    assert registry.get(viewer, "default", "support-llm", "1").card.context_window == 8192

    registry.set_status(editor, "default", "support-llm", "2", ModelStatus.DEPRECATED)
    assert registry.resolve(viewer, "default", "support-llm").version == "1"
    assert [m.reference for m in registry.list(viewer, "default")] == [
        "other-llm:1",
        "support-llm:1",
        "support-llm:2",
    ]
    assert [m.version for m in registry.list(viewer, "default", "support-llm")] == ["1", "2"]

    registered = audit_entries(instance, "model.register")
    assert len(registered) == 3
    entry = registered[0]
    assert entry["resource"] == "model:default/support-llm:1"
    assert entry["outcome"] == "success"
    assert entry["after"]["gateway_model"] == "m"


def test_unknown_references_are_not_found(people: People) -> None:
    people.registry.register(people.editor, "default", card("1"))
    for reference in ("support-llm:9", "support-llm@champion", "nothing"):
        with pytest.raises(NotFound):
            people.registry.resolve(people.viewer, "default", reference)
    # A tenant nobody gave you a role in, existing or not, is refused alike.
    with pytest.raises(Forbidden):
        people.registry.list(people.editor, "acme")


def test_duplicate_name_and_version_is_refused(people: People) -> None:
    people.registry.register(people.editor, "default", card("1"))
    with pytest.raises(Conflict, match="support-llm:1 already exists"):
        people.registry.register(people.editor, "default", card("1", gateway_model="other"))
    [only] = people.registry.list(people.viewer, "default")
    assert only.card.gateway_model == "m"


def test_file_artifact_must_match_its_sha256(people: People, tmp_path: Path) -> None:
    weights = tmp_path / "tiny.gguf"
    weights.write_bytes(b"GGUF" + bytes(range(256)) * 10)
    right = hashlib.sha256(weights.read_bytes()).hexdigest()
    uri = weights.as_uri()

    with pytest.raises(Invalid, match="the card says"):
        people.registry.register(people.editor, "default", card("1", artifact_uri=uri, sha256="0" * 64))
    missing = (tmp_path / "gone.gguf").as_uri()
    with pytest.raises(Invalid, match="does not exist"):
        people.registry.register(people.editor, "default", card("1", artifact_uri=missing, sha256=right))
    with pytest.raises(Invalid, match="needs its sha256"):
        card("1", artifact_uri=uri)
    assert people.registry.list(people.viewer, "default") == []

    accepted = people.registry.register(people.editor, "default", card("1", artifact_uri=uri, sha256=right))
    assert accepted.card.sha256 == right
    assert people.registry.resolve(people.viewer, "default", "support-llm:1").card.artifact_uri == uri


def test_remote_artifacts_are_recorded_without_a_download(people: People) -> None:
    model = people.registry.register(people.editor, "default", card("1", artifact_uri="hf://org/repo"))
    assert model.card.artifact_uri == "hf://org/repo"


def test_retired_models_cannot_enter_a_release_but_deprecated_ones_can(people: People) -> None:
    registry = people.registry
    registry.register(people.editor, "default", card("1"))
    registry.register(people.editor, "default", card("2"))
    registry.set_alias(people.editor, "default", "support-llm", "champion", "1")
    registry.set_status(people.admin, "default", "support-llm", "1", ModelStatus.RETIRED)
    registry.set_status(people.editor, "default", "support-llm", "2", ModelStatus.DEPRECATED)

    for reference in ("support-llm:1", "support-llm@champion"):
        with pytest.raises(Invalid) as refused:
            registry.ensure_usable("default", reference)
        assert refused.value.message == "model support-llm:1 is retired and cannot enter a new release"
    assert registry.ensure_usable("default", "support-llm:2").status is ModelStatus.DEPRECATED

    with pytest.raises(Invalid, match="retirement is final"):
        registry.set_status(people.admin, "default", "support-llm", "1", ModelStatus.ACTIVE)
    back = registry.set_status(people.editor, "default", "support-llm", "2", ModelStatus.ACTIVE)
    assert back.status is ModelStatus.ACTIVE
    assert registry.ensure_usable("default", "support-llm").version == "2"


def test_a_viewer_cannot_register_and_the_refusal_is_audited(people: People, instance: Instance) -> None:
    with pytest.raises(Forbidden, match=r"eve may not models\.register in tenant 'default': it needs editor"):
        people.registry.register(people.viewer, "default", card("1"))
    assert people.registry.list(people.viewer, "default") == []
    assert audit_entries(instance, "model.register") == []
    assert audit_entries(instance, "models.register") == [
        {
            "actor": "eve",
            "resource": "model:default/support-llm:1",
            "outcome": "denied",
            "before": None,
            "after": None,
        }
    ]


def test_an_editor_can_deprecate_but_not_retire(people: People, instance: Instance) -> None:
    people.registry.register(people.editor, "default", card("1"))
    with pytest.raises(Forbidden, match="it needs admin"):
        people.registry.set_status(people.editor, "default", "support-llm", "1", ModelStatus.RETIRED)
    assert people.registry.get(people.viewer, "default", "support-llm", "1").status is ModelStatus.ACTIVE

    people.registry.set_status(people.editor, "default", "support-llm", "1", ModelStatus.DEPRECATED)
    people.registry.set_status(people.admin, "default", "support-llm", "1", ModelStatus.RETIRED)
    refusals = [(e["actor"], e["outcome"], e["resource"]) for e in audit_entries(instance, "models.retire")]
    assert refusals == [("eddie", "denied", "model:default/support-llm:1")]
    statuses = [
        (e["actor"], e["outcome"], e["before"], e["after"]) for e in audit_entries(instance, "model.status")
    ]
    assert statuses == [
        ("eddie", "success", {"status": "active"}, {"status": "deprecated"}),
        ("admin", "success", {"status": "deprecated"}, {"status": "retired"}),
    ]


def test_a_card_must_name_a_model_this_server_serves(people: People, instance: Instance) -> None:
    with pytest.raises(Invalid) as refused:
        people.registry.register(people.editor, "default", card("1", gateway_model="gpt-nope"))
    assert refused.value.status == 422
    assert refused.value.message == "gateway_model: unknown model(s) gpt-nope; this gateway serves m, other"
    assert people.registry.list(people.viewer, "default") == []
    assert audit_entries(instance, "model.register") == []


def test_a_card_must_name_a_model_the_tenant_may_use(services: Services, admin_token: str) -> None:
    services.tenants.create(services.tokens.authenticate(admin_token), "acme", allowed_models=["m"])
    admin = services.tokens.authenticate(admin_token)
    editor = person(services, admin, "ann", Role.EDITOR, tenant="acme")
    with pytest.raises(Invalid, match="gateway_model: tenant 'acme' may not use other"):
        services.registry.register(editor, "acme", card("1", gateway_model="other"))
    assert services.registry.register(editor, "acme", card("1")).card.gateway_model == "m"


def test_moving_an_alias_records_before_and_after(people: People, instance: Instance) -> None:
    registry, editor = people.registry, people.editor
    registry.register(editor, "default", card("1"))
    registry.register(editor, "default", card("2", gateway_model="other"))
    registry.set_alias(editor, "default", "support-llm", "champion", "1")
    moved = registry.set_alias(editor, "default", "support-llm", "champion", "2")

    assert moved.aliases == ("champion",)
    assert registry.get(people.viewer, "default", "support-llm", "1").aliases == ()
    assert registry.resolve(people.viewer, "default", "support-llm@champion").version == "2"
    entries = audit_entries(instance, "model.alias")
    assert [(e["resource"], e["before"], e["after"]) for e in entries] == [
        ("model:default/support-llm:1", None, {"alias": "champion", "version": "1"}),
        (
            "model:default/support-llm:2",
            {"alias": "champion", "version": "1"},
            {"alias": "champion", "version": "2"},
        ),
    ]


def test_aliases_are_checked(people: People) -> None:
    registry, editor = people.registry, people.editor
    registry.register(editor, "default", card("1"))
    with pytest.raises(Invalid, match="must start with a letter"):
        registry.set_alias(editor, "default", "support-llm", "Champion", "1")
    with pytest.raises(NotFound):
        registry.set_alias(editor, "default", "support-llm", "champion", "7")
    with pytest.raises(Forbidden):
        registry.set_alias(people.viewer, "default", "support-llm", "champion", "1")
    registry.set_status(people.admin, "default", "support-llm", "1", ModelStatus.RETIRED)
    with pytest.raises(Invalid, match="retired"):
        registry.set_alias(editor, "default", "support-llm", "champion", "1")
    with pytest.raises(NotFound):
        registry.resolve(people.viewer, "default", "support-llm@champion")


LORA = {"base_model": "llama-3-8b", "method": "lora", "rank": 16, "alpha": 32, "target_modules": ["q_proj"]}


@pytest.mark.parametrize(
    ("training", "problem"),
    [
        ({**LORA, "rank": None}, "training: a lora fine-tune needs both rank and alpha"),
        ({**LORA, "method": "qlora", "alpha": None}, "training: a qlora fine-tune needs both rank and alpha"),
        ({**LORA, "method": "full"}, "training: rank and alpha apply only to lora and qlora"),
        ({**LORA, "method": "dpo"}, "training.method: Input should be 'lora', 'qlora' or 'full'"),
        ({**LORA, "rank": 0}, "training.rank: Input should be greater than 0"),
        ({**LORA, "dataset_sha256": "not-a-hash"}, "training.dataset_sha256: String should match"),
        ({**LORA, "temperature": 0.7}, "training.temperature: Extra inputs are not permitted"),
    ],
)
def test_training_specs_are_validated(training: dict[str, Any], problem: str) -> None:
    with pytest.raises(Invalid, match=problem):
        card("1", training=training)


def test_cards_are_validated() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": "Support LLM"}, "card: name: String should match pattern"),
        ({"version": "-1"}, "card: version: String should match pattern"),
        ({"context_window": 0}, "card: context_window: Input should be greater than 0"),
        ({"input_price_per_1m": -1}, "card: input_price_per_1m: Input should be greater than or equal to 0"),
        ({"artifact_uri": "file://relative/x.gguf", "sha256": "a" * 64}, "card: .* not an absolute file URI"),
        ({"owner": "someone"}, "card: owner: Extra inputs are not permitted"),
    ]
    for extra, problem in cases:
        with pytest.raises(Invalid, match=problem):
            card(**{"version": "1", **extra})
    full = card("1", training={**LORA, "method": "full", "rank": None, "alpha": None, "epochs": 3})
    assert full.training is not None
    assert full.training.method == "full"
    assert card("1", sha256="AB" * 32).sha256 == "ab" * 32


def test_the_guide_documents_every_card_field_and_its_example_is_valid() -> None:
    first_columns = [line.split("|")[1] for line in GUIDE.splitlines() if line.startswith("| `")]
    documented = set(re.findall(r"`(\w+)`", " ".join(first_columns)))
    assert set(ModelCard.model_fields) - documented == set()
    assert set(TrainingSpec.model_fields) - documented == set()
    example = GUIDE.split("```yaml\n", 1)[1].split("```", 1)[0]
    example_card = parse_card(yaml.safe_load(example))
    assert example_card.version == "2025-06-01"
    assert example_card.training is not None
    assert example_card.training.rank == 16
