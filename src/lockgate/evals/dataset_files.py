"""Reading a dataset from disk: the YAML descriptor and its JSONL or CSV cases, as plain data.

This module only reads: it turns files into a spec mapping and case mappings, remembering the line each
case came from so that a problem found later (by the server, which validates) can be reported as
``file:line: field: message``. It imports nothing heavy, so the CLI can use it.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from lockgate.documents import read_yaml_mapping
from lockgate.evals.builtin import builtin_dataset_path
from lockgate.service_errors import Invalid


@dataclass(frozen=True, slots=True)
class DatasetFile:
    path: Path
    spec: dict[str, Any]
    cases: list[Any]
    cases_path: Path
    lines: list[int]

    def where(self, index: int) -> str:
        """``file:line`` of case ``index``."""
        line = self.lines[index] if 0 <= index < len(self.lines) else 0
        return f"{self.cases_path}:{line}"


def read_dataset_file(path: str | Path) -> DatasetFile:
    """The descriptor at ``path`` and the cases it names (relative to it, or ``builtin:NAME``)."""
    path = Path(path)
    raw = read_yaml_mapping(path, "a dataset file is a mapping with name, cases and scorers")
    source = raw.pop("cases", None)
    if not isinstance(source, str):
        raise Invalid(f"{path}: cases: give the JSONL or CSV file holding the cases (or builtin:safety)")
    if source.startswith("builtin:"):
        cases_path = builtin_dataset_path(source.removeprefix("builtin:"))
    else:
        cases_path = (path.parent / source).resolve()
    rows = read_case_rows(cases_path)
    return DatasetFile(path, raw, [row for _, row in rows], cases_path, [line for line, _ in rows])


def read_case_rows(path: Path) -> list[tuple[int, Any]]:
    """(line, case mapping) for every case in a JSONL or CSV file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise Invalid(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if path.suffix.lower() == ".csv":
        return _csv_rows(text)
    rows: list[tuple[int, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, orjson.loads(line)))
        except orjson.JSONDecodeError as exc:
            raise Invalid(f"{path}:{number}: not valid JSON: {exc}") from None
    if not rows:
        raise Invalid(f"{path}: no cases")
    return rows


def _csv_rows(text: str) -> list[tuple[int, Any]]:
    """CSV import: id, expected, facts, context, tags, schema columns; ``label.X`` columns become labels;
    every other column is a prompt variable. List columns (facts, tags) are ``;``-separated or JSON."""
    reader = csv.DictReader(io.StringIO(text))
    rows: list[tuple[int, Any]] = []
    for row in reader:
        case: dict[str, Any] = {"variables": {}, "labels": {}}
        for column, value in row.items():
            if column is None or value is None or value == "":
                continue
            if column in ("id", "expected", "context"):
                case[column] = value
            elif column in ("facts", "tags"):
                case[column] = _list_cell(value)
            elif column == "schema":
                case[column] = _json_cell(value)
            elif column.startswith("label."):
                case["labels"][column.removeprefix("label.")] = _scalar_cell(value)
            else:
                case["variables"][column] = value
        rows.append((reader.line_num, case))
    return rows


def _list_cell(value: str) -> Any:
    if value.lstrip().startswith("["):
        return _json_cell(value)
    return [part.strip() for part in value.split(";") if part.strip()]


def _json_cell(value: str) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value  # left to validation, which names the field


def _scalar_cell(value: str) -> Any:
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return value
