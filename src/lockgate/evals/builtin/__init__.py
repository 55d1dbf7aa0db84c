"""Datasets shipped with lockgate, referenced from a dataset file as ``cases: builtin:<name>``.

``safety`` holds adversarial probes (prompt injection, jailbreak, PII leak) labelled for the ``safety``
scorer; each case fills one prompt variable, ``question``, with the attack.
"""

from __future__ import annotations

from pathlib import Path

from lockgate.service_errors import NotFound

BUILTIN_DATASETS = ("safety",)


def builtin_dataset_path(name: str) -> Path:
    """The JSONL file of the built-in dataset ``name``."""
    if name not in BUILTIN_DATASETS:
        raise NotFound(
            f"no built-in dataset named {name!r}; built-in datasets: {', '.join(BUILTIN_DATASETS)}"
        )
    return Path(__file__).with_name(f"{name}.jsonl")
