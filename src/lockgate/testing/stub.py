"""A small OpenAI-compatible upstream server, run as its own process.

It answers deterministically (``echo: <last user message>``, or exactly ``<text>`` for a last user
message ``reply:<text>``), can be told to fail the next requests
(status codes, hangs, a stream that breaks midway) or to behave badly from now on (a share of requests
failing at random, extra latency), and remembers what it received, so tests can check exactly what the
gateway forwarded. ``python -m lockgate.testing.stub --port 9000`` starts one.

Control endpoints (test use only): ``POST /_stub/script`` with ``{"fail": [{"status": 500}, {"hang": 2},
{"status": 429, "retry_after": 0.1}], "break_stream_after": 2}`` (the ``fail`` entries are played once
each, by the next requests), or with ``{"behaviour": {"error_rate": 0.3, "latency_ms": 200, "seed": 1,
"status": 500}}`` (every request from now on waits ``latency_ms`` more, then fails with ``status`` at
``error_rate``, drawn from a generator seeded with ``seed``; all fields optional; a new ``behaviour``
replaces the old one, ``null`` ends it); ``GET /_stub/requests``; ``POST /_stub/reset`` (forgets
scripts, behaviour and received requests).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import time
from collections import deque
from typing import Any

import orjson
from aiohttp import web

STUB_MODEL = "stub-model"


class StubState:
    def __init__(self, name: str, latency: float) -> None:
        self.name = name
        self.latency = latency
        self.failures: deque[dict[str, Any]] = deque()
        self.break_stream_after: int | None = None
        self.received: deque[dict[str, Any]] = deque(maxlen=2000)
        self.count = 0
        self.behaviour: Behaviour | None = None


class Behaviour:
    """How every request goes until reset: extra latency, then a failure at ``error_rate``."""

    def __init__(self, plan: dict[str, Any]) -> None:
        self.error_rate = float(plan.get("error_rate", 0.0))
        self.latency = float(plan.get("latency_ms", 0.0)) / 1000.0
        self.status = int(plan.get("status", 500))
        self.random = random.Random(plan.get("seed"))

    async def play(self) -> web.Response | None:
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.error_rate and self.random.random() < self.error_rate:
            message = f"scripted failure {self.status} (error rate {self.error_rate:g})"
            return _json({"error": {"message": message, "type": "stub"}}, self.status)
        return None


def _reply_text(body: dict[str, Any]) -> str:
    messages = body.get("messages") or []
    last: dict[str, Any] = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    content = last.get("content")
    if not isinstance(content, str):
        return "echo"
    # "reply:<text>" answers exactly <text>, so tests can make the upstream return JSON or not.
    return content[len("reply:") :] if content.startswith("reply:") else f"echo: {content}"


def _usage(body: dict[str, Any], text: str) -> dict[str, int]:
    prompt = sum(len(str(m.get("content") or "").split()) for m in body.get("messages") or []) + 1
    completion = len(text.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload), status=status, content_type="application/json", headers=headers
    )


def build_app(state: StubState) -> web.Application:
    async def scripted_failure() -> web.Response | None:
        if not state.failures:
            return await state.behaviour.play() if state.behaviour is not None else None
        failure = state.failures.popleft()
        if "hang" in failure:
            await asyncio.sleep(float(failure["hang"]))
        status = int(failure.get("status", 500))
        headers = {"retry-after": str(failure["retry_after"])} if "retry_after" in failure else None
        error = {"error": {"message": failure.get("message", f"scripted failure {status}"), "type": "stub"}}
        return _json(error, status, headers)

    async def receive(request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
        """Record the request, then play the next scripted failure if there is one."""
        body: dict[str, Any] = orjson.loads(await request.read())
        state.count += 1
        headers = {str(k).lower(): v for k, v in request.headers.items()}
        state.received.append({"path": request.path, "headers": headers, "body": body})
        return body, await scripted_failure()

    async def chat(request: web.Request) -> web.StreamResponse:
        body, failed = await receive(request)
        if failed is not None:
            return failed
        if state.latency:
            await asyncio.sleep(state.latency)
        text = _reply_text(body)
        created = int(time.time())
        if not body.get("stream"):
            n = int(body.get("n") or 1)
            choices = [
                {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                for i in range(n)
            ]
            return _json(
                {
                    "id": f"chatcmpl-stub-{state.count}",
                    "object": "chat.completion",
                    "created": created,
                    "model": body.get("model", STUB_MODEL),
                    "system_fingerprint": state.name,
                    "choices": choices,
                    "usage": _usage(body, text),
                }
            )
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        base = {"id": f"chatcmpl-stub-{state.count}", "object": "chat.completion.chunk", "created": created}
        base["model"] = body.get("model", STUB_MODEL)
        words = text.split(" ")
        for i, word in enumerate(words):
            if state.break_stream_after is not None and i >= state.break_stream_after:
                state.break_stream_after = None
                # Drop the connection mid-stream, as a crashing upstream would.
                assert request.transport is not None
                request.transport.close()
                return response
            delta: dict[str, Any] = {"content": word if i == 0 else " " + word}
            if i == 0:
                delta["role"] = "assistant"
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        final = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await response.write(b"data: " + orjson.dumps(final) + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {**base, "choices": [], "usage": _usage(body, text)}
            await response.write(b"data: " + orjson.dumps(usage) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response

    async def embeddings(request: web.Request) -> web.Response:
        body, failed = await receive(request)
        if failed is not None:
            return failed
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = []
        for i, text in enumerate(inputs):
            digest = hashlib.sha256(str(text).encode()).digest()
            data.append({"object": "embedding", "index": i, "embedding": [b / 255.0 for b in digest[:8]]})
        tokens = sum(len(str(t).split()) for t in inputs)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return _json({"object": "list", "data": data, "model": body.get("model"), "usage": usage})

    async def models(_: web.Request) -> web.Response:
        return _json({"object": "list", "data": [{"id": STUB_MODEL, "object": "model", "owned_by": "stub"}]})

    async def script(request: web.Request) -> web.Response:
        plan = orjson.loads(await request.read())
        state.failures.extend(plan.get("fail", []))
        state.break_stream_after = plan.get("break_stream_after")
        if "behaviour" in plan:
            behaviour = plan["behaviour"]
            state.behaviour = Behaviour(behaviour) if behaviour is not None else None
        return _json({"ok": True})

    async def received(_: web.Request) -> web.Response:
        return _json({"count": state.count, "requests": list(state.received)})

    async def reset(_: web.Request) -> web.Response:
        state.failures.clear()
        state.received.clear()
        state.break_stream_after = None
        state.behaviour = None
        state.count = 0
        return _json({"ok": True})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/_stub/script", script)
    app.router.add_get("/_stub/requests", received)
    app.router.add_post("/_stub/reset", reset)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="stub")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    import uvloop

    app = build_app(StubState(args.name, args.latency_ms / 1000.0))
    web.run_app(
        app, host=args.host, port=args.port, print=None, access_log=None, loop=uvloop.new_event_loop()
    )


if __name__ == "__main__":
    main()
