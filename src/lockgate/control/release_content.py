"""The release bundle: exactly what a release pins down, and the hash that names it.

Kept apart from the release service so the gateway can serve bundles without importing the prompt
catalog or the model registry.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PromptSnapshot(Frozen):
    name: str
    version: str
    content_hash: str
    messages: list[dict[str, str]]
    variables: dict[str, Any]


class ModelSnapshot(Frozen):
    reference: str
    name: str
    version: str
    gateway_model: str


class ReleaseContent(Frozen):
    """Exactly what is hashed into the release id."""

    route: str
    prompt: PromptSnapshot
    model: ModelSnapshot
    parameters: dict[str, Any]
    output_contract: dict[str, Any] | None
    retrieval: dict[str, Any]
    tools: list[str]
    fallbacks: list[str]
    git_commit: str | None

    def release_id(self, tenant: str) -> str:
        """``rel_`` + 32 hex digits of SHA-256 over the tenant and the canonical content: the same
        bundle is the same release within a tenant, and another release in any other tenant."""
        document = {"tenant": tenant, "content": self.model_dump(mode="json")}
        return "rel_" + hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]

    @property
    def legacy_release_id(self) -> str:
        """The id releases created before schema 0004 have: the content alone, without the tenant."""
        canonical = orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        return "rel_" + hashlib.sha256(canonical).hexdigest()[:32]
