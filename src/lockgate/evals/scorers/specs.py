"""Scorer specs as a dataset stores them: validation, normalisation and building the scorers.

Specs form a pydantic union discriminated on ``type``; every problem is reported in one ``Invalid``
whose entries name the field at fault as ``scorers[<index>].<field>``, the way a dataset author reads
their YAML. Names must be unique within a dataset (reports key scores by name), so a second scorer of
the same type needs its own ``name``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, get_args

from pydantic import Field, TypeAdapter, ValidationError

from lockgate.evals.cases import ScoringContext
from lockgate.evals.scorers.base import Scorer, SpecError
from lockgate.evals.scorers.embedding import EmbeddingSpec
from lockgate.evals.scorers.grounded import GroundednessSpec
from lockgate.evals.scorers.judge import JudgeSpec
from lockgate.evals.scorers.numeric import NumericSpec
from lockgate.evals.scorers.performance import CostSpec, LatencySpec
from lockgate.evals.scorers.refusal import RefusalSpec
from lockgate.evals.scorers.safety import SafetySpec
from lockgate.evals.scorers.structured import JsonSchemaSpec, JsonValidSpec
from lockgate.evals.scorers.text import ContainsSpec, ExactSpec, RegexSpec
from lockgate.service_errors import Invalid

AnySpec = Annotated[
    ExactSpec
    | ContainsSpec
    | RegexSpec
    | JsonValidSpec
    | JsonSchemaSpec
    | NumericSpec
    | EmbeddingSpec
    | JudgeSpec
    | GroundednessSpec
    | RefusalSpec
    | LatencySpec
    | CostSpec
    | SafetySpec,
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[AnySpec] = TypeAdapter(AnySpec)
SCORER_TYPES: tuple[str, ...] = tuple(
    tag for spec in get_args(get_args(AnySpec)[0]) for tag in get_args(spec.model_fields["type"].annotation)
)


def parse_scorer_specs(specs: Sequence[Mapping[str, Any]]) -> list[AnySpec]:
    """Validated specs; ``Invalid`` lists every problem, each prefixed with ``scorers[i].<field>``."""
    if isinstance(specs, str | bytes) or not isinstance(specs, Sequence):
        raise Invalid("scorers: give a list of scorer specs")
    parsed: list[AnySpec] = []
    problems: list[str] = []
    for index, raw in enumerate(specs):
        try:
            parsed.append(_ADAPTER.validate_python(raw))
        except ValidationError as exc:
            problems.extend(_problems(index, exc))
    if not problems:
        problems = _duplicate_names(parsed)
    if problems:
        raise Invalid("; ".join(problems))
    return parsed


def validate_scorer_specs(specs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The specs with defaults filled in (``name`` included), as JSON-ready dicts to store."""
    return [
        {**spec.model_dump(mode="json", by_alias=True), "name": spec.scorer_name}
        for spec in parse_scorer_specs(specs)
    ]


def build_scorers(specs: Sequence[Mapping[str, Any]], context: ScoringContext) -> list[Scorer]:
    """One scorer per spec, in order; ``Invalid`` for a bad spec or a service ``context`` lacks."""
    scorers: list[Scorer] = []
    for index, spec in enumerate(parse_scorer_specs(specs)):
        try:
            scorers.append(spec.build(context))
        except SpecError as exc:
            raise Invalid(f"scorers[{index}].{exc.field_name}: {exc.message}") from None
    return scorers


def _problems(index: int, exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            where, message = ".type", f"give one of {', '.join(SCORER_TYPES)}"
            if error["type"] == "union_tag_invalid":
                message = f"unknown scorer type {(error.get('ctx') or {}).get('tag')!r}; {message}"
        else:
            # The first location entry is the union member, i.e. the scorer type itself.
            where, message = _path(error["loc"][1:]), error["msg"].removeprefix("Value error, ")
        problems.append(f"scorers[{index}]{where}: {message}")
    return problems


def _path(loc: Sequence[int | str]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def _duplicate_names(specs: list[AnySpec]) -> list[str]:
    seen: set[str] = set()
    problems = []
    for index, spec in enumerate(specs):
        if spec.scorer_name in seen:
            problems.append(
                f"scorers[{index}].name: {spec.scorer_name!r} is already used by an earlier scorer; "
                "give this one its own name"
            )
        seen.add(spec.scorer_name)
    return problems
