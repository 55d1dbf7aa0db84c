"""Loading ``lockgate.yaml``: each problem names file, line and field, and secrets stay secret."""

from __future__ import annotations

import traceback
from pathlib import Path
from textwrap import dedent

import pytest

from lockgate.config.loader import ConfigError, LoadedConfig, Problem, load_file, load_text
from lockgate.instance import load_config
from lockgate.providers.anthropic import AnthropicSettings
from lockgate.providers.openai_compat import OpenAICompatibleSettings
from lockgate.providers.registry import known_kinds

PROVIDERS = """\
providers:
  up:
    kind: openai
    base_url: http://upstream.test/v1
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lockgate.yaml"
    path.write_text(dedent(text), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_file(path)
    return caught.value.problems


def only_problem(path: Path) -> Problem:
    problems = problems_of(path)
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def test_out_of_range_field_names_file_line_and_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        PROVIDERS
        + """\
models:
  - name: a
    deployments:
      - provider: up
        model: x
  - name: b
    deployments:
      - provider: up
        model: y
        timeout: 0
""",
    )
    problem = only_problem(path)
    assert (problem.line, problem.path) == (14, "models[1].deployments[0].timeout")
    assert str(problem) == f"{path}:14: models[1].deployments[0].timeout: must be > 0"


def test_several_problems_are_all_reported_with_their_own_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        providers:
          up:
            kind: openai
            base_url: http://upstream.test/v1
            max_connections: 0
            colour: red
        """,
    )
    problems = problems_of(path)
    assert {(p.line, p.path) for p in problems} == {
        (5, "providers.up.max_connections"),
        (6, "providers.up.colour"),
    }


def test_unknown_field_reports_its_own_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        PROVIDERS
        + """\
models:
  - name: a
    deployments:
      - provider: up
        model: x
        colour: red
""",
    )
    assert str(only_problem(path)) == f"{path}:10: models[0].deployments[0].colour: unknown field"


def test_unknown_top_level_section(tmp_path: Path) -> None:
    path = write(tmp_path, PROVIDERS + "rutning:\n  retries: 1\n")
    assert str(only_problem(path)) == f"{path}:5: rutning: unknown field"


def test_missing_required_field_points_at_the_enclosing_item(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        PROVIDERS
        + """\
models:
  - name: a
    deployments:
      - model: x
""",
    )
    problem = only_problem(path)
    assert problem.path == "models[0].deployments[0].provider"
    assert problem.message == "required field is missing"
    assert problem.line == 8


def test_duplicate_model_name(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        PROVIDERS
        + """\
models:
  - name: a
    deployments: [{provider: up, model: x}]
  - name: a
    deployments: [{provider: up, model: y}]
""",
    )
    assert str(only_problem(path)) == f"{path}:8: models[1].name: duplicate model name 'a'"


def test_deployment_on_unknown_provider(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        PROVIDERS
        + """\
models:
  - name: a
    deployments:
      - provider: up
        model: x
      - provider: upp
        model: y
""",
    )
    assert str(only_problem(path)) == f"{path}:10: models[0].deployments[1].provider: unknown provider 'upp'"


def test_fallback_to_unknown_model(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        PROVIDERS
        + """\
models:
  - name: a
    deployments: [{provider: up, model: x}]
    fallbacks:
      - b
      - nope
  - name: b
    deployments: [{provider: up, model: y}]
""",
    )
    problem = only_problem(path)
    assert (problem.line, problem.path) == (10, "models[0].fallbacks[1]")
    assert "nope" in problem.message


def test_fallback_to_itself_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        PROVIDERS
        + """\
models:
  - name: a
    deployments: [{provider: up, model: x}]
    fallbacks: [a]
""",
    )
    assert only_problem(path).path == "models[0].fallbacks[0]"


def test_tenant_allowing_unknown_model(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        PROVIDERS
        + """\
models:
  - name: a
    deployments: [{provider: up, model: x}]
tenants:
  - name: acme
    allowed_models: [a, ghost]
""",
    )
    problem = only_problem(path)
    assert (problem.line, problem.path) == (10, "tenants[0].allowed_models[1]")
    assert "ghost" in problem.message


def test_unknown_provider_kind_lists_the_known_kinds(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        providers:
          up:
            kind: openia
        """,
    )
    problem = only_problem(path)
    assert (problem.line, problem.path) == (3, "providers.up.kind")
    assert "'openia'" in problem.message
    assert {"openai", "anthropic", "llama_cpp"} <= set(known_kinds())
    for kind in known_kinds():
        assert kind in problem.message


def test_provider_without_kind(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  up:\n    base_url: http://x/v1\n")
    problem = only_problem(path)
    assert (problem.path, problem.line) == ("providers.up", 2)
    assert "kind" in problem.message


def test_header_values_are_secrets_never_printed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AZURE_TOKEN", "azure-token-9f8e7d6c5b4a")
    path = write(
        tmp_path,
        "providers:\n  az:\n    kind: openai\n    base_url: http://x/v1\n"
        "    headers:\n      api-key: ${AZURE_TOKEN}\n      x-team: platform\n",
    )
    loaded = load_file(path)
    settings = loaded.providers["az"]
    assert isinstance(settings, OpenAICompatibleSettings)
    assert settings.headers["api-key"].get_secret_value() == "azure-token-9f8e7d6c5b4a"
    assert "azure-token-9f8e7d6c5b4a" not in repr(loaded)
    from lockgate.providers.openai_compat import OpenAICompatibleProvider

    provider = OpenAICompatibleProvider("az", settings)
    assert provider.http.scrub("echo azure-token-9f8e7d6c5b4a") == "echo [redacted]"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("routing:\n  retries: 1\n  cooldown: 2: 3\n", 3),
        ("routing:\n  retries: 1\n\tcooldown: 2\n", 3),
        ("models:\n  - name: a\n    fallbacks: [b\n    description: x\n", 4),
    ],
    ids=["mapping-in-scalar", "tab", "unclosed-flow"],
)
def test_invalid_yaml_reports_the_line(tmp_path: Path, text: str, line: int) -> None:
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert problem.line == line
    assert problem.message.startswith("invalid YAML: ")
    assert str(problem).startswith(f"{path}:{line}: ")


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- a\n- b\n")
    assert "mapping" in only_problem(path).message


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    problem = only_problem(tmp_path / "absent.yaml")
    assert problem.line is None
    assert str(problem).startswith(f"{tmp_path / 'absent.yaml'}: ")
    assert "cannot read" in problem.message


def test_env_interpolation_in_base_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LG_TEST_HOST", "llm.internal")
    monkeypatch.delenv("LG_TEST_PORT", raising=False)
    monkeypatch.setenv("LG_TEST_SCHEME", "https")
    path = write(
        tmp_path,
        """\
        providers:
          up:
            kind: openai
            base_url: ${LG_TEST_SCHEME:-http}://${LG_TEST_HOST}:${LG_TEST_PORT:-8000}/v1
        """,
    )
    settings = load_file(path).providers["up"]
    assert isinstance(settings, OpenAICompatibleSettings)
    assert settings.base_url == "https://llm.internal:8000/v1"


def test_env_interpolation_of_unset_variable_names_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("LG_TEST_UNSET_HOST", raising=False)
    path = write(
        tmp_path, "providers:\n  up:\n    kind: openai\n    base_url: http://${LG_TEST_UNSET_HOST}/v1\n"
    )
    problem = only_problem(path)
    assert (problem.line, problem.path) == (4, "providers.up.base_url")
    assert "LG_TEST_UNSET_HOST" in problem.message


def test_literal_api_key_is_refused_without_echoing_it(tmp_path: Path) -> None:
    literal = "sk-live-abc123secret"
    path = write(tmp_path, PROVIDERS + f"    api_key: {literal}\n    colour: red\n")
    with pytest.raises(ConfigError) as caught:
        load_file(path)
    problems = {p.path: p for p in caught.value.problems}
    assert problems["providers.up.api_key"].line == 5
    assert "${" in problems["providers.up.api_key"].message
    assert "providers.up.colour" in problems
    rendered = "".join(traceback.format_exception(caught.value))
    for text in (str(caught.value), repr(caught.value), rendered, *(repr(p) for p in caught.value.problems)):
        assert literal not in text
        assert "abc123" not in text


def test_literal_api_key_mixed_with_a_reference_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LG_TEST_KEY", "x")
    path = write(tmp_path, PROVIDERS + "    api_key: sk-live-${LG_TEST_KEY}\n")
    problem = only_problem(path)
    assert problem.path == "providers.up.api_key"
    assert "sk-live" not in str(problem)


def test_api_key_from_missing_variable_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MISSING_VAR", raising=False)
    path = write(tmp_path, PROVIDERS + "    api_key: ${MISSING_VAR}\n")
    assert (
        str(only_problem(path))
        == f"{path}:5: providers.up.api_key: environment variable MISSING_VAR is not set"
    )


def test_resolved_secret_never_prints(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = "sk-resolved-Zk81qv0secret"
    monkeypatch.setenv("LG_TEST_OPENAI_KEY", secret)
    monkeypatch.setenv("LG_TEST_ANTHROPIC_KEY", secret + "-ant")
    path = write(
        tmp_path,
        PROVIDERS
        + """\
    api_key: ${LG_TEST_OPENAI_KEY}
  claude:
    kind: anthropic
    api_key: ${LG_TEST_ANTHROPIC_KEY}
""",
    )
    loaded = load_file(path)
    openai_settings = loaded.providers["up"]
    anthropic_settings = loaded.providers["claude"]
    assert isinstance(openai_settings, OpenAICompatibleSettings)
    assert isinstance(anthropic_settings, AnthropicSettings)
    assert openai_settings.api_key is not None
    assert openai_settings.api_key.get_secret_value() == secret
    assert anthropic_settings.api_key.get_secret_value() == secret + "-ant"
    for text in (
        repr(loaded),
        str(loaded),
        repr(openai_settings),
        str(openai_settings),
        repr(anthropic_settings),
        openai_settings.model_dump_json(),
        repr(loaded.gateway),
    ):
        assert secret not in text


def test_good_file_loads(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        PROVIDERS
        + """\
models:
  - name: a
    deployments:
      - provider: up
        model: x
        weight: 3
        timeout: 2.5
    fallbacks: [b]
  - name: b
    deployments: [{provider: up, model: y}]
tenants:
  - name: acme
    allowed_models: [a]
routing:
  retries: 0
""",
    )
    loaded = load_file(path)
    assert isinstance(loaded, LoadedConfig)
    assert loaded.source == str(path)
    gateway = loaded.gateway
    assert [m.name for m in gateway.models] == ["a", "b"]
    deployment = gateway.models[0].deployments[0]
    assert (deployment.weight, deployment.timeout, deployment.display_name) == (3.0, 2.5, "up/x")
    assert gateway.models[0].fallbacks == ["b"]
    assert gateway.tenants[0].allowed_models == ["a"]
    assert gateway.routing.retries == 0
    assert gateway.routing.cooldown == 30.0


def test_empty_text_is_an_empty_config() -> None:
    loaded = load_text("", source="empty.yaml")
    assert loaded.gateway.models == []
    assert loaded.providers == {}


def test_embedded_defaults_define_the_local_model() -> None:
    loaded = load_config(None)
    assert loaded.source == "<embedded defaults>"
    assert [m.name for m in loaded.gateway.models] == ["gemma-3-270m"]
    assert loaded.providers["local"].kind == "llama_cpp"
    assert loaded.gateway.models[0].deployments[0].provider == "local"
    assert [t.name for t in loaded.gateway.tenants] == ["default"]


def test_control_and_metrics_token_load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LG_TEST_SCRAPE", "scrape-Qp3x0secret")
    path = write(
        tmp_path,
        PROVIDERS
        + """\
server:
  metrics_token: ${LG_TEST_SCRAPE}
control:
  gates_required: false
  opa_urls: ["http://opa.test:8181"]
  max_body_bytes: 1024
""",
    )
    loaded = load_file(path)
    token = loaded.gateway.server.metrics_token
    assert token is not None and token.get_secret_value() == "scrape-Qp3x0secret"
    control = loaded.gateway.control
    assert (control.gates_required, control.opa_urls, control.max_body_bytes) == (
        False,
        ["http://opa.test:8181"],
        1024,
    )
    assert "scrape-Qp3x0secret" not in repr(loaded)


def test_control_defaults_require_gates_and_allow_no_opa_server() -> None:
    loaded = load_text("", source="empty.yaml")
    assert loaded.gateway.server.metrics_token is None
    control = loaded.gateway.control
    assert (control.gates_required, control.opa_urls, control.max_body_bytes) == (True, [], 16 * 1024 * 1024)


def test_literal_metrics_token_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = write(tmp_path, PROVIDERS + "server:\n  metrics_token: scrape-literal-0xsecret\n")
    problem = only_problem(path)
    assert (problem.line, problem.path) == (6, "server.metrics_token")
    assert "${" in problem.message
    assert "0xsecret" not in str(problem)


def test_unknown_control_field_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, PROVIDERS + "control:\n  gates_requird: false\n")
    assert str(only_problem(path)) == f"{path}:6: control.gates_requird: unknown field"
