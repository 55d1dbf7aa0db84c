"""The OpenAI request wire format: parsed once, validated once, passed through intact.

The body is decoded a single time into plain Python objects, which are forwarded to OpenAI-compatible
upstreams as they are (so vendor extensions such as ``top_k`` survive). A typed view of the same
objects is built with ``msgspec.convert`` to check every field the gateway understands; a type error
becomes a 400 that names the field at fault.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from lockgate.errors import InvalidRequest

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
Temperature = Annotated[float, msgspec.Meta(ge=0, le=2)]
Probability = Annotated[float, msgspec.Meta(ge=0, le=1)]
Penalty = Annotated[float, msgspec.Meta(ge=-2, le=2)]


class FunctionCall(msgspec.Struct, forbid_unknown_fields=False):
    name: str
    arguments: str


class ToolCall(msgspec.Struct, forbid_unknown_fields=False):
    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class ChatMessage(msgspec.Struct, forbid_unknown_fields=False):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class FunctionSpec(msgspec.Struct, forbid_unknown_fields=False):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(msgspec.Struct, forbid_unknown_fields=False):
    function: FunctionSpec
    type: Literal["function"] = "function"


class StreamOptions(msgspec.Struct, forbid_unknown_fields=False):
    include_usage: bool = False


class ResponseFormat(msgspec.Struct, forbid_unknown_fields=False):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class ChatCompletionRequest(msgspec.Struct, forbid_unknown_fields=False):
    model: str
    messages: list[ChatMessage]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=128)] | None = None
    stop: str | Annotated[list[str], msgspec.Meta(max_length=4)] | None = None
    seed: int | None = None
    user: str | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None
    metadata: dict[str, Any] | None = None

    @property
    def output_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def wants_stream_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class EmbeddingRequest(msgspec.Struct, forbid_unknown_fields=False):
    model: str
    input: str | Annotated[list[Any], msgspec.Meta(min_length=1)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: PositiveInt | None = None
    user: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.input, str):
            return
        for index, item in enumerate(self.input):
            tokens = isinstance(item, list) and all(
                isinstance(t, int) and not isinstance(t, bool) for t in item
            )
            if not (isinstance(item, str | int) and not isinstance(item, bool)) and not tokens:
                raise InvalidRequest(
                    f"Invalid type for 'input[{index}]': expected a string, a token or a list of tokens.",
                    param=f"input[{index}]",
                    code="invalid_type",
                )

    @property
    def is_text(self) -> bool:
        return isinstance(self.input, str) or all(isinstance(item, str) for item in self.input)

    @property
    def texts(self) -> list[str]:
        """The inputs as text; token-array inputs are refused by providers that only take text."""
        if isinstance(self.input, str):
            return [self.input]
        if not self.is_text:
            raise InvalidRequest(
                "This model takes text input, not token arrays.", param="input", code="invalid_type"
            )
        return [str(item) for item in self.input]


_decoder = msgspec.json.Decoder()
_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_TYPE = re.compile(r"^Expected `(?P<expected>[^`]+)`, got `(?P<got>[^`]+)`")

RequestT = TypeVar("RequestT", ChatCompletionRequest, EmbeddingRequest)


MAX_DEPTH = 64
"""Deepest nesting of arrays and objects a request may have (upstream encoders stop near 255)."""


def decode_object(body: bytes) -> dict[str, Any]:
    """Decode a request body that must be one JSON object, valid UTF-8, nested at most ``MAX_DEPTH``."""
    try:
        obj = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request: {_plain(str(exc))}", code="invalid_json"
        ) from None
    except UnicodeDecodeError:
        raise InvalidRequest(
            f"The request body is not valid UTF-8 (byte {_bad_utf8_offset(body)}).", code="invalid_encoding"
        ) from None
    except RecursionError:
        raise _too_deep() from None
    if not isinstance(obj, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    # Counting brackets runs at memory speed; only a body that could be deep is walked.
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _depth_exceeds(obj, MAX_DEPTH):
        raise _too_deep()
    return obj


def prompt_variables(body: dict[str, Any]) -> Any:
    """The prompt variables a chat call carries: ``variables``, else ``metadata.variables`` (an object, or
    one as a JSON string, since OpenAI metadata values are strings); None when it has neither.

    A ``metadata.variables`` string that is not JSON is an ``InvalidRequest`` naming that field; whether the
    value is an object is the caller's to check.
    """
    variables = body.get("variables")
    metadata = body.get("metadata")
    if variables is None and isinstance(metadata, dict):
        variables = metadata.get("variables")
        if isinstance(variables, str):
            try:
                variables = msgspec.json.decode(variables)
            except msgspec.DecodeError:
                raise InvalidRequest(
                    "metadata.variables is not valid JSON.", param="metadata.variables"
                ) from None
    return variables


def _bad_utf8_offset(body: bytes) -> int:
    # msgspec reports the offset within the string it was decoding, not within the body.
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start
    return 0


def _too_deep() -> InvalidRequest:
    return InvalidRequest(
        f"The request body is nested too deeply; at most {MAX_DEPTH} levels of arrays and objects.",
        code="invalid_json",
    )


def _depth_exceeds(obj: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values() if isinstance(item, dict | list))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value if isinstance(item, dict | list))
    return False


def validate(obj: dict[str, Any], kind: type[RequestT]) -> RequestT:
    """Build the typed view of ``obj``; a field of the wrong type or out of range is a 400 naming it."""
    try:
        return msgspec.convert(obj, kind)
    except InvalidRequest:
        raise
    except msgspec.ValidationError as exc:
        raise _field_error(str(exc)) from None


def _field_error(text: str) -> InvalidRequest:
    match = _PATH.search(text)
    param = match.group("path").lstrip(".") if match else None
    detail = text[: match.start()] if match else text
    if detail.startswith("Object missing required field"):
        field = detail.split("`")[1]
        param = f"{param}.{field}" if param else field
        return InvalidRequest(
            f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
        )
    typed = _TYPE.match(detail)
    if typed:
        message = f"Invalid type for '{param}': expected {typed['expected']}, but got {typed['got']}."
        return InvalidRequest(message, param=param, code="invalid_type")
    return InvalidRequest(
        f"Invalid value for '{param}': {_plain(detail)}.", param=param, code="invalid_value"
    )


def _plain(text: str) -> str:
    return text.replace("`", "'")
