"""Run calls through the gateway pipeline in-process, exactly as a client's request would go.

The eval runner does not reimplement rendering, parameters, fallbacks or the output contract: it builds
the same ``Call`` the HTTP layer builds, pins the release under test (so a release can be evaluated
before any environment points at it) and hands it to the gateway's composed handler. Requests are
recorded in the request log like any other, under the tenant of the release, with key id ``eval``, and
within the tenant's model allow-list. The judge and gateway-served embeddings use the same path with a
plain model name. The client remembers every deployment that answered a case: the run's fingerprint.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from lockgate.errors import GatewayError
from lockgate.evals.cases import Case, Outcome
from lockgate.gateway.pipeline import Call, Endpoint
from lockgate.gateway.routebook import ServingRelease
from lockgate.gateway.runtime import Gateway
from lockgate.gateway.stages.account import estimate_tokens, prompt_text
from lockgate.gateway.stages.release import PREFIX, OutputContractViolation
from lockgate.security.keyring import principal_for
from lockgate.wire import ChatCompletionRequest, EmbeddingRequest, validate

TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})


class PipelineClient:
    def __init__(
        self, gateway: Gateway, tenant_id: str, tenant: str, allowed_models: frozenset[str] | None = None
    ) -> None:
        self._gateway = gateway
        self._principal = principal_for(
            key_id="eval",
            key_prefix="eval",
            tenant_id=tenant_id,
            tenant=tenant,
            role="member",
            key_list=None,
            tenant_list=sorted(allowed_models) if allowed_models is not None else None,
        )
        self.answered: dict[str, dict[str, Any]] = {}
        """Deployment name -> its description, for every deployment that answered a case."""

    def deployments(self) -> list[dict[str, Any]]:
        return [self.answered[name] for name in sorted(self.answered)]

    async def run_case(self, release: ServingRelease, case: Case) -> Outcome:
        """One case through the release; gateway errors become a failed ``Outcome`` (raised if transient)."""
        body: dict[str, Any] = {
            "model": PREFIX + release.content.route,
            "messages": list(case.messages),
            "variables": dict(case.variables),
        }
        call = self._call("chat.completions", body, ChatCompletionRequest)
        call.release = release
        started = time.perf_counter()
        try:
            reply = await self._gateway.handle(call)
        except OutputContractViolation as error:
            return self._failed(call, started, error, error.output)
        except GatewayError as error:
            if error.status in TRANSIENT:
                raise
            return self._failed(call, started, error, "")
        latency_ms = (time.perf_counter() - started) * 1000.0
        reply_body = reply.body or {}
        text = _answer(reply_body)
        input_tokens, output_tokens = _usage(reply_body, call, text)
        deployment = call.deployment
        if deployment is None:
            return Outcome(text, latency_ms, 0.0, input_tokens, output_tokens)
        self.answered.setdefault(deployment.name, deployment.describe())
        cost = deployment.cost(input_tokens, output_tokens)
        return Outcome(text, latency_ms, cost, input_tokens, output_tokens, deployment=deployment.name)

    async def complete(
        self, model: str, messages: Sequence[dict[str, Any]], extra_body: dict[str, Any]
    ) -> str:
        """A plain chat completion (the judge); raises ``GatewayError`` on failure."""
        call = self._call(
            "chat.completions",
            {**extra_body, "model": model, "messages": list(messages)},
            ChatCompletionRequest,
        )
        reply = await self._gateway.handle(call)
        return _answer(reply.body or {})

    async def embed(self, model: str | None, texts: Sequence[str]) -> list[list[float]]:
        if model is None:
            raise ValueError("the gateway serves named embedding models; None means the local model")
        call = self._call("embeddings", {"model": model, "input": list(texts)}, EmbeddingRequest)
        reply = await self._gateway.handle(call)
        data = sorted((reply.body or {}).get("data") or (), key=lambda item: int(item.get("index", 0)))
        return [[float(x) for x in item["embedding"]] for item in data]

    def _call(self, endpoint: Endpoint, body: dict[str, Any], kind: type[Any]) -> Call:
        return Call(
            request_id=f"eval_{uuid.uuid4().hex}",
            endpoint=endpoint,
            raw=orjson.dumps(body),
            body=body,
            request=validate(body, kind),
            authorization=None,
            principal=self._principal,
        )

    def _failed(self, call: Call, started: float, error: GatewayError, text: str) -> Outcome:
        latency_ms = (time.perf_counter() - started) * 1000.0
        cost = 0.0
        deployment = call.deployment
        if deployment is not None:
            self.answered.setdefault(deployment.name, deployment.describe())
            if text:
                cost = deployment.cost(estimate_tokens(prompt_text(call)), estimate_tokens(text))
        detail = f"{error.code or type(error).__name__}: {error.message}"
        return Outcome(
            text, latency_ms, cost, error=detail, deployment=deployment.name if deployment else None
        )


def _answer(body: dict[str, Any]) -> str:
    choices = body.get("choices") or ()
    if not choices:
        return ""
    return str((choices[0].get("message") or {}).get("content") or "")


def _usage(body: dict[str, Any], call: Call, text: str) -> tuple[int, int]:
    usage = body.get("usage") or {}
    if isinstance(usage.get("prompt_tokens"), int):
        return int(usage["prompt_tokens"]), int(usage.get("completion_tokens") or 0)
    return estimate_tokens(prompt_text(call)), estimate_tokens(text)
