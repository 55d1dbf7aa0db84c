"""Every bad input gets its documented status and an OpenAI-style body; nothing leaks; serving goes on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import openai
import pytest

from lockgate.instance import Instance
from lockgate.security.apikeys import IssuedKey
from lockgate.security.rbac import Actor
from lockgate.services import Services
from tests.support.gateway import RunningGateway, run_gateway, stub_config
from tests.support.processes import StubUpstream

GOOD = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
METRICS_TOKEN = "scrape-errors"
SCRAPE = {"authorization": f"Bearer {METRICS_TOKEN}"}


@pytest.fixture
def running(
    instance: Instance, admin_key: IssuedKey, stub: StubUpstream, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunningGateway]:
    monkeypatch.setenv("LG_TEST_METRICS_TOKEN", METRICS_TOKEN)
    config = stub_config(
        ("primary", stub.base_url),
        server={"max_body_bytes": 2048, "metrics_token": "${LG_TEST_METRICS_TOKEN}"},
    )
    with run_gateway(instance, config) as gateway:
        yield gateway


@pytest.fixture
def roomy(instance: Instance, admin_key: IssuedKey, stub: StubUpstream) -> Iterator[httpx.Client]:
    """A gateway with the default body limit (4 MiB), for bodies that are large but not too large."""
    with run_gateway(instance, stub_config(("primary", stub.base_url))) as gateway:
        headers = {"authorization": f"Bearer {admin_key.secret}"}
        with httpx.Client(base_url=gateway.base_url, headers=headers, timeout=30) as client:
            yield client


@pytest.fixture
def http(running: RunningGateway, admin_key: IssuedKey) -> Iterator[httpx.Client]:
    headers = {"authorization": f"Bearer {admin_key.secret}"}
    with httpx.Client(base_url=running.base_url, headers=headers, timeout=30) as client:
        yield client


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()["error"]
    assert set(body) >= {"message", "type", "param", "code"}
    assert "Traceback" not in response.text and 'File "' not in response.text
    return body


def still_serving(http: httpx.Client) -> None:
    answer = http.post("/chat/completions", json=GOOD)
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"] == "echo: hi"


def test_malformed_json_is_400(http: httpx.Client) -> None:
    error = error_of(
        http.post("/chat/completions", content=b'{"model": "m", "messages": [', headers=_json()), 400
    )
    assert error["code"] == "invalid_json"
    still_serving(http)


def test_body_that_is_not_an_object_is_400(http: httpx.Client) -> None:
    assert error_of(http.post("/chat/completions", json=[1, 2]), 400)["code"] == "invalid_json"


def nested(depth: int) -> bytes:
    """A chat body carrying an extra field whose value is ``depth`` - 1 arrays deep."""
    return (
        b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "extra": '
        + b"[" * (depth - 1)
        + b"]" * (depth - 1)
        + b"}"
    )


@pytest.mark.parametrize("depth", [100_000, 100])
def test_a_body_nested_too_deeply_is_400_and_serving_goes_on(
    roomy: httpx.Client, stub: StubUpstream, depth: int
) -> None:
    error = error_of(roomy.post("/chat/completions", content=nested(depth), headers=_json()), 400)
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_json")
    assert "nested too deeply" in error["message"]
    assert stub.received() == []
    still_serving(roomy)


def test_a_body_that_is_not_utf8_is_400_and_serving_goes_on(http: httpx.Client, stub: StubUpstream) -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "caf\xe9 \xff"}]}'
    error = error_of(http.post("/chat/completions", content=body, headers=_json()), 400)
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_encoding")
    assert error["message"].startswith("The request body is not valid UTF-8")
    assert stub.received() == []
    still_serving(http)


def test_a_deep_ish_tool_schema_reaches_the_upstream_intact(roomy: httpx.Client, stub: StubUpstream) -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(10):  # 20 levels of nesting in the schema alone
        schema = {"type": "object", "properties": {"field": schema}}
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": schema}}]
    answer = roomy.post("/chat/completions", json={**GOOD, "tools": tools})
    assert answer.status_code == 200, answer.text
    assert stub.received()[-1]["body"]["tools"] == tools


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"max_tokens": "ten"}, "max_tokens"),
        ({"temperature": 3.5}, "temperature"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": []}, "messages"),
        ({"stream": "yes"}, "stream"),
        ({"n": 0}, "n"),
        ({"model": 7}, "model"),
    ],
)
def test_wrong_types_and_values_are_400_naming_the_field(
    http: httpx.Client, patch: dict[str, Any], param: str
) -> None:
    error = error_of(http.post("/chat/completions", json={**GOOD, **patch}), 400)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


def test_missing_required_field_is_400_naming_it(http: httpx.Client) -> None:
    error = error_of(http.post("/chat/completions", json={"model": "m"}), 400)
    assert (error["param"], error["code"]) == ("messages", "missing_required_parameter")


def test_malformed_embedding_input_is_400_but_token_arrays_pass(
    http: httpx.Client, stub: StubUpstream
) -> None:
    error = error_of(http.post("/embeddings", json={"model": "m", "input": ["ok", {"a": 1}]}), 400)
    assert error["param"] == "input[1]"
    assert http.post("/embeddings", json={"model": "m", "input": [[1, 2, 3]]}).status_code == 200
    assert stub.received()[-1]["body"]["input"] == [[1, 2, 3]]


def test_oversized_body_is_413_and_nothing_reaches_upstream(http: httpx.Client, stub: StubUpstream) -> None:
    big = {**GOOD, "messages": [{"role": "user", "content": "x" * 5000}]}
    assert error_of(http.post("/chat/completions", json=big), 413)["code"] == "request_too_large"
    assert stub.received() == []
    still_serving(http)


def test_oversized_chunked_body_without_length_is_413(http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "m", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}]}'

    assert error_of(http.post("/chat/completions", content=chunks(), headers=_json()), 413)


def test_unknown_model_is_404(http: httpx.Client) -> None:
    error = error_of(http.post("/chat/completions", json={**GOOD, "model": "nope"}), 404)
    assert (error["code"], error["param"]) == ("model_not_found", "model")


def test_model_outside_the_keys_allow_list_is_403(
    running: RunningGateway, instance: Instance, services: Services, admin: Actor
) -> None:
    limited = services.keys.create(admin, "default", allowed_models=["other"])
    running.gateway.keyring.load(instance.engine)
    answer = httpx.post(
        f"{running.base_url}/chat/completions",
        json=GOOD,
        headers={"authorization": f"Bearer {limited.secret}"},
    )
    assert error_of(answer, 403)["code"] == "model_not_allowed"


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"authorization": "Bearer lg-00000000-not-a-real-key"}, "invalid_api_key"),
        ({"authorization": "Bearer sk-something-else"}, "invalid_api_key"),
        ({"authorization": "Basic Zm9vOmJhcg=="}, "invalid_api_key"),
    ],
)
def test_missing_or_invalid_key_is_401(running: RunningGateway, headers: dict[str, str], code: str) -> None:
    answer = httpx.post(f"{running.base_url}/chat/completions", json=GOOD, headers=headers)
    error = error_of(answer, 401)
    assert error["code"] == code
    assert "not-a-real-key" not in answer.text


def test_expired_key_is_401(
    running: RunningGateway, instance: Instance, services: Services, admin: Actor
) -> None:
    expiring = services.keys.create(admin, "default", expires_at=datetime.now(UTC) + timedelta(seconds=1))
    running.gateway.keyring.load(instance.engine)
    headers = {"authorization": f"Bearer {expiring.secret}"}
    assert httpx.post(f"{running.base_url}/chat/completions", json=GOOD, headers=headers).status_code == 200
    time.sleep(1.1)
    answer = httpx.post(f"{running.base_url}/chat/completions", json=GOOD, headers=headers)
    assert error_of(answer, 401)["code"] == "expired_api_key"


def test_sdk_raises_typed_errors(running: RunningGateway) -> None:
    client = openai.OpenAI(base_url=running.base_url, api_key="lg-00000000-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])


def test_unknown_path_and_method_are_openai_style(http: httpx.Client) -> None:
    assert error_of(http.get("/nowhere"), 404)["code"] == "not_found"
    assert error_of(http.get("/chat/completions"), 405)["code"] == "method_not_allowed"


def test_upstream_client_error_is_400_without_retry(http: httpx.Client, stub: StubUpstream) -> None:
    stub.script(fail=[{"status": 400, "message": "context length exceeded"}])
    error = error_of(http.post("/chat/completions", json=GOOD), 400)
    assert "context length exceeded" in error["message"]
    assert len(stub.received()) == 1


def test_upstream_failures_after_retries_are_502_with_request_id(
    http: httpx.Client, stub: StubUpstream
) -> None:
    stub.script(fail=[{"status": 500}, {"status": 503}])
    answer = http.post("/chat/completions", json=GOOD)
    error = error_of(answer, 502)
    assert error["request_id"] == answer.headers["x-request-id"]
    assert answer.headers["x-request-id"] in error["message"]
    assert len(stub.received()) == 2  # one try and one retry
    still_serving(http)


def test_transient_upstream_failure_is_retried_invisibly(http: httpx.Client, stub: StubUpstream) -> None:
    stub.script(fail=[{"status": 429, "retry_after": 0.01}])
    answer = http.post("/chat/completions", json=GOOD)
    assert answer.status_code == 200
    assert answer.headers["x-lockgate-attempts"] == "2"


def test_upstream_timeout_is_504(instance: Instance, admin_key: IssuedKey, stub: StubUpstream) -> None:
    config = stub_config(("primary", stub.base_url), routing={"retries": 0})
    slow = config.gateway.models[0].deployments[0].model_copy(update={"timeout": 0.3})
    model = config.gateway.models[0].model_copy(update={"deployments": [slow]})
    config = type(config)(
        config.gateway.model_copy(update={"models": [model, *config.gateway.models[1:]]}), config.providers
    )
    stub.script(fail=[{"hang": 1.0}])
    with run_gateway(instance, config) as running:
        answer = httpx.post(
            f"{running.base_url}/chat/completions",
            json=GOOD,
            headers={"authorization": f"Bearer {admin_key.secret}"},
        )
    assert error_of(answer, 504)["code"] == "upstream_timeout"


def test_all_circuits_open_is_503(running: RunningGateway, http: httpx.Client, stub: StubUpstream) -> None:
    stub.script(fail=[{"status": 500}] * 3)
    assert http.post("/chat/completions", json=GOOD).status_code == 502  # 2 failures
    assert http.post("/chat/completions", json=GOOD).status_code == 502  # 3rd opens the circuit
    error = error_of(http.post("/chat/completions", json=GOOD), 503)
    assert error["code"] == "no_healthy_deployment"
    ready = httpx.get(f"{running.url}/readyz", headers=SCRAPE)
    # Still ready: another model's deployment is healthy. Only the failing one rests.
    assert ready.status_code == 200
    assert ready.json()["deployments"] == {"primary/upstream-m": "open", "primary/upstream-other": "closed"}


def test_stream_failing_midway_ends_with_an_error_event(
    running: RunningGateway, admin_key: IssuedKey, stub: StubUpstream
) -> None:
    stub.script(break_stream_after=2)
    client = openai.OpenAI(base_url=running.base_url, api_key=admin_key.secret, max_retries=0)
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "a b c d e f"}], stream=True
    )
    seen: list[str] = []

    def drain() -> None:
        seen.extend(chunk.choices[0].delta.content or "" for chunk in stream)

    with pytest.raises(openai.APIError) as caught:
        drain()
    assert "".join(seen) == "echo: a"
    assert "upstream" in str(caught.value.message)


def _json() -> dict[str, str]:
    return {"content-type": "application/json"}
