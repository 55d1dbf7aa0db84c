"""A prompt version as a document: its format, its content hash, its lint rules and how it renders.

Templates are Jinja2 run in the bounded sandbox of ``templating``, with strict undefined variables, so a
template can neither reach Python internals (``{{ ''.__class__ }}``), nor silently render a missing
variable as an empty string, nor spend unbounded time or memory. Constructs the sandbox refuses are
refused when the prompt is pushed. Variables are checked against the prompt's JSON Schema before any
template runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Self

import orjson
from jinja2 import TemplateError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lockgate.control import templating
from lockgate.service_errors import Invalid

if TYPE_CHECKING:
    import jsonschema

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"
VERSION_PATTERN = r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$"

MAX_MESSAGE_CHARS = 100_000


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "developer", "user", "assistant"]
    content: str


class PromptSettings(BaseModel):
    """Model and sampling defaults; a release may override them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: list[str] | None = None


class PromptSpec(BaseModel):
    """One version of a prompt, as written in ``prompts/<name>/<version>.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, max_length=200)
    version: str = Field(pattern=VERSION_PATTERN, max_length=50)
    description: str = ""
    messages: list[Message] = Field(min_length=1)
    variables: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    settings: PromptSettings
    output_schema: dict[str, Any] | None = None
    tags: list[str] = Field(default_factory=list)

    @field_validator("variables")
    @classmethod
    def _variables_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        _check_schema(schema, "variables")
        if schema.get("type") != "object":
            raise ValueError("variables must be a JSON Schema with type: object")
        return schema

    @field_validator("output_schema")
    @classmethod
    def _output_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            _check_schema(schema, "output_schema")
        return schema

    @model_validator(mode="after")
    def _templates_parse(self) -> Self:
        for index, message in enumerate(self.messages, start=1):
            if len(message.content) > MAX_MESSAGE_CHARS:
                limit = f"{MAX_MESSAGE_CHARS} characters"
                raise ValueError(f"message {index} ({message.role}) is longer than {limit}")
            try:
                templating.check_template(message.content)
            except templating.TemplateRejected as exc:
                raise ValueError(f"message {index} ({message.role}) is not a valid template: {exc}") from None
        return self

    def declared(self) -> dict[str, Any]:
        """Variable name -> its schema, from ``variables.properties``."""
        return dict(self.variables.get("properties", {}))

    def required(self) -> list[str]:
        return list(self.variables.get("required", []))


def parse_prompt(raw: Any) -> tuple[PromptSpec | None, list[str]]:
    """The spec, or the problems that stop it from being one, each as ``field.path: message``."""
    try:
        return PromptSpec.model_validate(raw), []
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        return None, problems


def _check_schema(schema: dict[str, Any], field: str) -> None:
    import jsonschema  # on first use: it costs the server about 10 MB where nothing needs it

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"{field} is not a valid JSON Schema: {exc.message}") from None


def canonical_json(spec: PromptSpec) -> bytes:
    return orjson.dumps(spec.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)


def content_hash(spec: PromptSpec) -> str:
    """sha256 of the spec's canonical JSON (sorted keys): equal hashes mean byte-identical content."""
    return hashlib.sha256(canonical_json(spec)).hexdigest()


def template_variables(spec: PromptSpec) -> set[str]:
    """Names the templates read from their context, leaving out Jinja's own globals such as ``range``."""
    found: set[str] = set()
    for message in spec.messages:
        found |= templating.template_variables(message.content)
    return found


def lint(spec: PromptSpec) -> list[str]:
    """Problems a valid spec can still have: templates and the variable schema disagreeing."""
    declared = set(spec.declared())
    used = template_variables(spec)
    problems = [
        f"template uses variable {name!r}, which is not declared in variables.properties"
        for name in sorted(used - declared)
    ]
    for name in spec.required():
        if name not in declared:
            problems.append(f"required variable {name!r} is not declared in variables.properties")
        elif name not in used:
            problems.append(f"required variable {name!r} is not used by any message")
    return problems


def render(spec: PromptSpec, variables: Mapping[str, Any]) -> list[dict[str, str]]:
    """The prompt's messages, OpenAI-style, after checking ``variables`` against the schema."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(spec.variables)
    problems = sorted(set(_variable_problems(validator.iter_errors(dict(variables)))))
    if problems:
        raise Invalid("; ".join(problems))
    declared = spec.declared()
    # Only declared variables reach the templates, so an undeclared one fails like a missing one.
    context = {name: value for name, value in variables.items() if name in declared}
    messages: list[dict[str, str]] = []
    for index, message in enumerate(spec.messages, start=1):
        try:
            text = templating.compile_template(message.content).render(context)
        except TemplateError as exc:
            raise Invalid(f"message {index} ({message.role}) could not be rendered: {exc}") from None
        messages.append({"role": message.role, "content": text})
    return messages


def _variable_problems(errors: Iterable[jsonschema.ValidationError]) -> Iterable[str]:
    for error in errors:
        path = list(error.absolute_path)
        keyword = list(error.relative_schema_path)[-1:]
        required = error.validator_value if keyword == ["required"] else None
        if isinstance(required, list) and isinstance(error.instance, dict):
            for name in required:
                if name not in error.instance:
                    yield f"variable {_dotted([*path, name])!r} is required"
        elif path:
            yield f"variable {_dotted(path)!r}: {error.message}"
        else:
            yield f"variables: {error.message}"


def _dotted(path: list[str | int]) -> str:
    text = str(path[0])
    for part in path[1:]:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text
