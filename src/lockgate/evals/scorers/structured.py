"""Structured-output scorers: the answer is valid JSON, and it satisfies a JSON Schema.

Models often wrap JSON in a Markdown fence (```json ... ```), so an answer that is exactly one fenced
block is unwrapped first; JSON with prose around it is not valid JSON and fails. Schemas are checked
with ``jsonschema`` (the draft named by ``$schema``, 2020-12 by default, formats checked); the reason
names the JSON path of the most relevant error, as ``jsonschema.exceptions.best_match`` ranks them.
A spec's own schema is checked when the spec is validated; a case's schema when the case is scored.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

import orjson
from pydantic import ConfigDict, Field, field_validator

from lockgate.evals.cases import Case, Outcome, ScoringContext
from lockgate.evals.scorers.base import BaseScorer, ScorerSpec, Verdict, shorten, unscorable

if TYPE_CHECKING:
    import jsonschema

_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n(?P<body>.*?)\n?```", re.DOTALL)


class ParseFailure(ValueError):
    pass


def parse_json_answer(text: str) -> Any:
    """The JSON value of an answer, unwrapping one surrounding Markdown fence; ParseFailure otherwise."""
    stripped = text.strip()
    fenced = _FENCE.fullmatch(stripped)
    try:
        return orjson.loads(fenced.group("body") if fenced else stripped)
    except orjson.JSONDecodeError as exc:
        raise ParseFailure(f"not valid JSON: {exc}") from None


class JsonValidSpec(ScorerSpec):
    type: Literal["json_valid"]

    def build(self, context: ScoringContext) -> JsonValidScorer:
        return JsonValidScorer(self)


class JsonValidScorer(BaseScorer[JsonValidSpec]):
    async def evaluate(self, case: Case, outcome: Outcome) -> Verdict:
        try:
            parse_json_answer(outcome.text)
        except ParseFailure as exc:
            return Verdict(0.0, str(exc))
        return Verdict(1.0, "valid JSON")


class JsonSchemaSpec(ScorerSpec):
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    type: Literal["json_schema"]
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")

    @field_validator("json_schema")
    @classmethod
    def _is_a_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            check_schema(schema)
        return schema

    def build(self, context: ScoringContext) -> JsonSchemaScorer:
        return JsonSchemaScorer(self)


class JsonSchemaScorer(BaseScorer[JsonSchemaSpec]):
    async def evaluate(self, case: Case, outcome: Outcome) -> Verdict:
        schema = self.spec.json_schema if self.spec.json_schema is not None else case.json_schema
        if schema is None:
            return unscorable("set `schema` on the scorer or on the case")
        try:
            check_schema(schema)
        except ValueError as exc:
            return Verdict(0.0, f"the case's schema is {exc}", failed=True)
        try:
            document = parse_json_answer(outcome.text)
        except ParseFailure as exc:
            return Verdict(0.0, str(exc))
        from jsonschema.exceptions import best_match

        error = best_match(_validator(schema).iter_errors(document))
        if error is None:
            return Verdict(1.0, "matches the schema")
        return Verdict(0.0, f"at {error.json_path}: {shorten(error.message, 200)}")


def check_schema(schema: dict[str, Any]) -> None:
    import jsonschema  # on first use: it costs the server about 10 MB where nothing needs it

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"not a valid JSON Schema: {exc.message} (at {exc.json_path})") from None


def _validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    import jsonschema

    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)
