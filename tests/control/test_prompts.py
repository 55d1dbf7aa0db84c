"""The prompt catalog: spec validation, sandboxed rendering, lint, and pushes against a real store."""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from jinja2.exceptions import SecurityError
from pydantic import ValidationError

from lockgate.control.prompts import PromptCatalog, PromptSpec, lint, render, template_variables
from lockgate.control.semver import Bump
from lockgate.instance import Instance
from lockgate.security.rbac import Actor, Role
from lockgate.service_errors import Conflict, Forbidden, Invalid, NotFound
from lockgate.services import Services
from lockgate.store.tables import audit_log, prompts
from tests.control.test_semver import BASE, RULES, Mutation, variant
from tests.support.people import person


def spec(mutate: Mutation = lambda _: None, **fields: Any) -> PromptSpec:
    return variant(mutate, **fields)


# --- the document -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "complaint"),
    [
        ("name", "Support Answer", "name: String should match pattern"),
        ("version", "1.2", "version: String should match pattern"),
        ("version", "01.2.0", "version: String should match pattern"),
        ("temprature", 0.2, "temprature: Extra inputs are not permitted"),
        ("settings", {"model": "m", "temprature": 0.2}, "settings.temprature: Extra inputs"),
        ("messages", [{"role": "narrator", "content": "hi"}], "messages.0.role: Input should be 'system'"),
        ("variables", {"type": "array"}, "variables must be a JSON Schema with type: object"),
        ("variables", {"type": "object", "properties": {"x": {"type": "text"}}}, "not a valid JSON Schema"),
        ("output_schema", {"type": "object", "required": "answer"}, "output_schema is not a valid JSON"),
        (
            "messages",
            [{"role": "user", "content": "{{ question"}],
            "message 1 (user) is not a valid template",
        ),
        (
            "messages",
            [{"role": "user", "content": "{{ cycler.__init__.__globals__ }}"}],
            "message 1 (user) is not a valid template: line 1: global 'cycler' is not allowed",
        ),
        (
            "messages",
            [{"role": "user", "content": "{{ question|center(10) }}"}],
            "message 1 (user) is not a valid template: line 1: filter 'center' is not allowed",
        ),
    ],
)
def test_spec_refuses_what_it_cannot_serve(field: str, value: Any, complaint: str) -> None:
    data = copy.deepcopy(BASE)
    data[field] = value
    with pytest.raises(ValidationError) as caught:
        PromptSpec.model_validate(data)
    errors = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in caught.value.errors()]
    assert any(complaint in error for error in errors), errors


def test_render_returns_openai_messages_with_defaults_applied() -> None:
    messages = render(spec(), {"product": "Lockgate", "question": "How do I rotate a key?"})
    assert messages == [
        {"role": "system", "content": "You are a support agent for Lockgate. Answer in English."},
        {"role": "user", "content": "How do I rotate a key?"},
    ]
    german = render(spec(), {"product": "Lockgate", "question": "Wie?", "language": "German"})
    assert german[0]["content"].endswith("Answer in German.")


def test_render_names_a_missing_required_variable() -> None:
    with pytest.raises(Invalid, match=r"^variable 'question' is required$"):
        render(spec(), {"product": "Lockgate"})


def test_render_names_a_variable_of_the_wrong_type() -> None:
    with pytest.raises(Invalid, match=r"^variable 'product': 42 is not of type 'string'$"):
        render(spec(), {"product": 42, "question": "Why?"})


def test_render_names_the_path_inside_a_nested_variable() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["variables"]["properties"]["filters"] = {
            "type": "object",
            "properties": {"since": {"type": "string"}},
        }
        d["messages"][1]["content"] = "{{ question }} {{ filters | default({}) }}"

    with pytest.raises(Invalid, match=r"variable 'filters\.since': 5 is not of type 'string'"):
        render(spec(mutate), {"product": "p", "question": "q", "filters": {"since": 5}})


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ product.__class__.__base__.__subclasses__() }}",
    ],
)
def test_the_sandbox_blocks_attribute_tricks(template: str) -> None:
    attack = spec(lambda d: d["messages"][1].update(content=template + "{{ question }}"))
    with pytest.raises(Invalid, match=r"message 2 \(user\) could not be rendered: .*unsafe") as caught:
        render(attack, {"product": "p", "question": "q"})
    assert isinstance(caught.value.__context__, SecurityError)


def test_a_template_cannot_read_an_undeclared_variable_even_when_given() -> None:
    sneaky = spec(lambda d: d["messages"][1].update(content="{{ question }} {{ secret }}"))
    with pytest.raises(Invalid, match="'secret' is undefined"):
        render(sneaky, {"product": "p", "question": "q", "secret": "s3cr3t"})


def test_template_variables_lists_what_templates_read_but_not_jinja_globals() -> None:
    looped = spec(
        lambda d: d["messages"][1].update(content="{% for i in range(2) %}{{ question }}{% endfor %}")
    )
    assert template_variables(looped) == {"product", "language", "question"}


def test_lint_passes_a_consistent_spec() -> None:
    assert lint(spec()) == []


def test_lint_catches_an_undeclared_template_variable_and_an_unused_required_one() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["messages"][1]["content"] = "{{ customer }} needs help"

    assert lint(spec(mutate)) == [
        "template uses variable 'customer', which is not declared in variables.properties",
        "required variable 'question' is not used by any message",
    ]


# --- the catalog ----------------------------------------------------------------------------------------


@dataclass
class People:
    admin: Actor
    editor: Actor
    viewer: Actor


@pytest.fixture
def people(services: Services, admin_token: str) -> People:
    """The admin of ``default`` and of ``other`` (they created it), an editor and a viewer of ``default``."""
    services.tenants.create(services.tokens.authenticate(admin_token), "other")
    admin = services.tokens.authenticate(admin_token)
    return People(
        admin=admin,
        editor=person(services, admin, "erin", Role.EDITOR),
        viewer=person(services, admin, "vic", Role.VIEWER),
    )


@pytest.fixture
def catalog(services: Services) -> PromptCatalog:
    return services.prompts


def stored_rows(instance: Instance) -> list[sa.Row[Any]]:
    with instance.engine.connect() as connection:
        return list(connection.execute(sa.select(prompts).order_by(prompts.c.created_at)))


def audit_rows(instance: Instance, action: str) -> list[sa.Row[Any]]:
    with instance.engine.connect() as connection:
        query = sa.select(audit_log).where(audit_log.c.action == action).order_by(audit_log.c.seq)
        return list(connection.execute(query))


def test_push_stores_the_spec_with_its_content_hash_and_audits_it(
    instance: Instance, catalog: PromptCatalog, people: People
) -> None:
    pushed = catalog.push(people.editor, "default", spec())

    canonical = json.dumps(spec().model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    expected_hash = hashlib.sha256(canonical.encode()).hexdigest()
    [row] = stored_rows(instance)
    assert (row.name, row.version, row.content_hash) == ("support-answer", "1.2.0", expected_hash)
    assert row.created_by == "erin"
    assert PromptSpec.model_validate(row.spec) == spec()
    assert pushed.content_hash == expected_hash
    assert not pushed.unchanged

    [entry] = audit_rows(instance, "prompt.push")
    assert entry.resource == "prompt:default/support-answer@1.2.0"
    assert (entry.actor, entry.outcome) == ("erin", "success")
    assert json.loads(entry.after) == {"version": "1.2.0", "content_hash": expected_hash, "bump": "initial"}


def test_identical_repush_is_a_no_op(instance: Instance, catalog: PromptCatalog, people: People) -> None:
    first = catalog.push(people.editor, "default", spec())
    again = catalog.push(people.editor, "default", spec())
    assert again.unchanged
    assert (again.content_hash, again.created_at) == (first.content_hash, first.created_at)
    assert len(stored_rows(instance)) == 1
    assert len(audit_rows(instance, "prompt.push")) == 1


def test_same_version_with_other_content_is_a_conflict(
    instance: Instance, catalog: PromptCatalog, people: People
) -> None:
    catalog.push(people.editor, "default", spec())
    with pytest.raises(Conflict, match=r"support-answer@1\.2\.0 already exists with other content"):
        catalog.push(people.editor, "default", spec(description="Edited in place."))
    assert [r.content_hash for r in stored_rows(instance)] == [
        catalog.get(people.viewer, "default", "support-answer").content_hash
    ]


@pytest.mark.parametrize("version", ["1.1.9", "1.2.0"])
def test_a_version_not_above_the_latest_is_refused(
    catalog: PromptCatalog, people: People, version: str
) -> None:
    catalog.push(people.editor, "default", spec())
    lower = spec(lambda d: d["messages"][1].update(content="Q: {{ question }}"), version=version)
    with pytest.raises((Invalid, Conflict)) as caught:
        catalog.push(people.editor, "default", lower)
    if version != "1.2.0":
        assert caught.value.message == (
            f"version {version} of support-answer is not higher than the latest version, 1.2.0"
        )
    assert [v.version for v in catalog.versions(people.viewer, "default", "support-answer")] == ["1.2.0"]


UNDER_DECLARED = {Bump.MAJOR: "1.3.0", Bump.MINOR: "1.2.1"}
CORRECT = {Bump.MAJOR: "2.0.0", Bump.MINOR: "1.3.0", Bump.PATCH: "1.2.1"}


def test_every_semver_rule_refuses_an_under_declared_push_and_accepts_the_right_bump(
    catalog: PromptCatalog, people: People, subtests: pytest.Subtests
) -> None:
    for index, rule in enumerate(RULES):
        with subtests.test(rule.id):
            name = f"rule-{index}"
            catalog.push(people.editor, "default", spec(name=name))
            if rule.bump in UNDER_DECLARED:
                under = UNDER_DECLARED[rule.bump]
                with pytest.raises(Invalid) as caught:
                    catalog.push(people.editor, "default", spec(rule.mutate, name=name, version=under))
                declared = "MINOR" if rule.bump is Bump.MAJOR else "PATCH"
                assert caught.value.message.startswith(
                    f"version {under} declares a {declared} bump but the change from 1.2.0 "
                    f"needs {rule.bump.name}: "
                )
                assert rule.reason in caught.value.message
            accepted = catalog.push(
                people.editor, "default", spec(rule.mutate, name=name, version=CORRECT[rule.bump])
            )
            assert (
                catalog.get(people.viewer, "default", name).version == accepted.version == CORRECT[rule.bump]
            )


def test_refusal_message_states_the_required_bump_and_every_reason(
    catalog: PromptCatalog, people: People
) -> None:
    catalog.push(people.editor, "default", spec())

    def mutate(d: dict[str, Any]) -> None:
        d["variables"]["properties"].pop("question")
        d["variables"]["required"] = ["product"]
        d["messages"][1]["content"] = "Help!"
        d["settings"]["temperature"] = 0.9

    with pytest.raises(Invalid) as caught:
        catalog.push(people.editor, "default", spec(mutate, version="1.2.1"))
    assert caught.value.message == (
        "version 1.2.1 declares a PATCH bump but the change from 1.2.0 needs MAJOR: "
        "variable 'question' removed; settings.temperature changed from 0.2 to 0.9"
    )


def test_a_viewer_cannot_push_and_the_refusal_is_audited(
    instance: Instance, catalog: PromptCatalog, people: People
) -> None:
    with pytest.raises(Forbidden, match=r"vic may not prompts\.push in tenant 'default': it needs editor"):
        catalog.push(people.viewer, "default", spec())
    assert stored_rows(instance) == []
    assert audit_rows(instance, "prompt.push") == []
    [entry] = audit_rows(instance, "prompts.push")
    assert (entry.actor, entry.outcome, entry.resource) == (
        "vic",
        "denied",
        "prompt:default/support-answer@1.2.0",
    )


def test_an_editor_of_one_tenant_cannot_push_to_another(catalog: PromptCatalog, people: People) -> None:
    with pytest.raises(Forbidden):
        catalog.push(people.editor, "other", spec())


def test_a_viewer_can_read_but_a_stranger_cannot(catalog: PromptCatalog, people: People) -> None:
    catalog.push(people.editor, "default", spec())
    assert catalog.get(people.viewer, "default", "support-answer").version == "1.2.0"
    assert [v.name for v in catalog.list(people.viewer, "default")] == ["support-answer"]
    stranger = Actor(name="mallory", roles={"other": frozenset({Role.ADMIN})})
    with pytest.raises(Forbidden):
        catalog.get(stranger, "default", "support-answer")
    with pytest.raises(Forbidden):
        catalog.versions(stranger, "default", "support-answer")


def test_latest_and_versions_follow_semver_not_text_order(catalog: PromptCatalog, people: People) -> None:
    catalog.push(people.editor, "default", spec())
    catalog.push(
        people.editor, "default", spec(lambda d: d["settings"].update(temperature=0.3), version="1.9.0")
    )
    catalog.push(
        people.editor, "default", spec(lambda d: d["settings"].update(temperature=0.4), version="1.10.0")
    )

    assert catalog.get(people.viewer, "default", "support-answer").version == "1.10.0"
    assert catalog.get(people.viewer, "default", "support-answer", "1.9.0").spec.settings.temperature == 0.3
    assert [v.version for v in catalog.versions(people.viewer, "default", "support-answer")] == [
        "1.2.0",
        "1.9.0",
        "1.10.0",
    ]
    [latest] = catalog.list(people.viewer, "default")
    assert latest.version == "1.10.0"


def test_prompts_are_kept_per_tenant(catalog: PromptCatalog, people: People) -> None:
    catalog.push(people.editor, "default", spec())
    catalog.push(people.admin, "other", spec(name="other-prompt"))
    assert [v.name for v in catalog.list(people.viewer, "default")] == ["support-answer"]
    assert [v.name for v in catalog.list(people.admin, "other")] == ["other-prompt"]
    with pytest.raises(NotFound, match="no prompt support-answer in tenant 'other'"):
        catalog.get(people.admin, "other", "support-answer")


def test_unknown_prompt_version_and_tenant_are_not_found(catalog: PromptCatalog, people: People) -> None:
    catalog.push(people.editor, "default", spec())
    with pytest.raises(NotFound, match=r"no prompt support-answer@9\.9\.9 in tenant 'default'"):
        catalog.get(people.viewer, "default", "support-answer", "9.9.9")
    with pytest.raises(NotFound, match="unknown tenant 'nope'"):
        catalog.find("nope", "support-answer")


def test_push_refuses_a_spec_that_fails_lint(
    instance: Instance, catalog: PromptCatalog, people: People
) -> None:
    broken = spec(lambda d: d["messages"][1].update(content="{{ question }} for {{ customer }}"))
    with pytest.raises(Invalid, match="template uses variable 'customer'"):
        catalog.push(people.editor, "default", broken)
    assert stored_rows(instance) == []


def test_diff_shows_the_changed_line_and_the_settings_change(catalog: PromptCatalog, people: People) -> None:
    catalog.push(people.editor, "default", spec())

    def mutate(d: dict[str, Any]) -> None:
        d["messages"][1]["content"] = "Customer question: {{ question }}"
        d["settings"]["temperature"] = 0.5

    catalog.push(people.editor, "default", spec(mutate, version="1.3.0"))
    text = catalog.diff(people.viewer, "default", "support-answer", "1.2.0", "1.3.0")
    lines = text.splitlines()
    assert lines[:2] == ["--- support-answer@1.2.0", "+++ support-answer@1.3.0"]
    assert "-{{ question }}" in lines
    assert "+Customer question: {{ question }}" in lines
    assert "1.2.0 -> 1.3.0 needs a MINOR bump:" in lines
    assert "  MINOR  settings.temperature changed from 0.2 to 0.5" in lines
    assert "  PATCH  message 2 (user) wording changed" in lines


def store_legacy_prompt(instance: Instance, name: str, template: str) -> None:
    """A prompt version as an older release stored it, before the sandbox's push-time rules existed."""
    document = spec(name=name).model_dump(mode="json")
    document["messages"][1]["content"] = template
    with instance.engine.begin() as connection:
        tenant_id = connection.execute(sa.text("SELECT id FROM tenants WHERE name = 'default'")).scalar()
        connection.execute(
            prompts.insert().values(
                id=f"prm_{uuid.uuid4().hex[:24]}",
                tenant_id=tenant_id,
                name=name,
                version="1.2.0",
                spec=document,
                content_hash=hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest(),
                created_by="erin",
                created_at=datetime.now(UTC),
            )
        )


def test_a_stored_prompt_that_breaks_todays_rules_is_refused_by_name(
    instance: Instance, catalog: PromptCatalog, people: People
) -> None:
    store_legacy_prompt(instance, "legacy", "{{ question|center(80) }}")
    with pytest.raises(Invalid) as refused:
        catalog.get(people.viewer, "default", "legacy")
    assert refused.value.message.startswith("prompt legacy@1.2.0 as stored is no longer valid: ")
    assert "message 2 (user) is not a valid template: line 1: filter 'center' is not allowed" in (
        refused.value.message
    )
