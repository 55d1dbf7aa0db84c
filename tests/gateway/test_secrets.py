"""Provider credentials and API keys never reach clients, logs or metrics."""

from __future__ import annotations

import logging

import httpx
import pytest

from lockgate.config.loader import load_mapping
from lockgate.instance import Instance
from lockgate.security.apikeys import IssuedKey
from tests.support.gateway import run_gateway
from tests.support.processes import StubUpstream

PROVIDER_KEY = "sk-upstream-secret-0123456789abcdef"


def test_an_upstream_echoing_our_credential_is_scrubbed_everywhere(
    instance: Instance,
    admin_key: IssuedKey,
    stub: StubUpstream,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("STUB_PROVIDER_KEY", PROVIDER_KEY)
    monkeypatch.setenv("LG_TEST_METRICS_TOKEN", "scrape-secrets")
    config = load_mapping(
        {
            "providers": {
                "stub": {"kind": "openai", "base_url": stub.base_url, "api_key": "${STUB_PROVIDER_KEY}"}
            },
            "models": [{"name": "m", "deployments": [{"provider": "stub", "model": "s"}]}],
            "routing": {"retries": 0},
            "server": {"metrics_token": "${LG_TEST_METRICS_TOKEN}"},
        }
    )
    caplog.set_level(logging.DEBUG)
    stub.script(
        fail=[
            {"status": 500, "message": f"backend crashed handling key {PROVIDER_KEY}"},
            {"status": 401, "message": f"Incorrect API key provided: {PROVIDER_KEY}"},
            {"status": 400, "message": f"bad request from {PROVIDER_KEY}"},
        ]
    )
    headers = {"authorization": f"Bearer {admin_key.secret}"}
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    with run_gateway(instance, config) as running:
        answers = [
            httpx.post(f"{running.base_url}/chat/completions", json=body, headers=headers) for _ in range(3)
        ]
        scraped = httpx.get(f"{running.url}/metrics", headers={"authorization": "Bearer scrape-secrets"})
        metrics = scraped.text
    assert scraped.status_code == 200
    assert 'lockgate_requests_total{endpoint="chat.completions"' in metrics
    # The upstream did receive the credential: the gateway sent it, and only there.
    assert stub.received()[0]["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert [a.status_code for a in answers] == [502, 502, 400]
    assert "[redacted]" in answers[0].text
    assert "refused the credentials" in answers[1].text
    for answer in answers:
        assert PROVIDER_KEY not in answer.text
        assert admin_key.secret not in answer.text
    assert PROVIDER_KEY not in caplog.text
    assert admin_key.secret not in caplog.text
    assert PROVIDER_KEY not in metrics
    assert admin_key.secret not in metrics


def test_loaded_config_never_prints_its_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUB_PROVIDER_KEY", PROVIDER_KEY)
    config = load_mapping(
        {
            "providers": {
                "p": {"kind": "openai", "base_url": "http://x/v1", "api_key": "${STUB_PROVIDER_KEY}"}
            },
            "models": [{"name": "m", "deployments": [{"provider": "p", "model": "s"}]}],
        }
    )
    assert PROVIDER_KEY not in repr(config)
    assert PROVIDER_KEY not in str(config.providers)


def test_the_metrics_token_never_prints_either(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LG_TEST_METRICS_TOKEN", "scrape-0123456789abcdef")
    config = load_mapping(
        {
            "providers": {"p": {"kind": "openai", "base_url": "http://x/v1"}},
            "models": [{"name": "m", "deployments": [{"provider": "p", "model": "s"}]}],
            "server": {"metrics_token": "${LG_TEST_METRICS_TOKEN}"},
        }
    )
    assert "scrape-0123456789abcdef" not in repr(config)
    token = config.gateway.server.metrics_token
    assert token is not None and token.get_secret_value() == "scrape-0123456789abcdef"
