"""The `cache` section: checked when loaded, documented field by field, and nothing loaded when off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from lockgate.config.loader import ConfigError
from lockgate.config.schema import CacheConfig, CacheTargetConfig, SemanticCacheConfig
from lockgate.gateway.stages.cache import build_cache
from lockgate.ops.metrics import GatewayMetrics
from tests.support.gateway import stub_config

REFERENCE = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()


def cache_section() -> str:
    assert "\n## `cache`\n" in REFERENCE
    return REFERENCE.split("\n## `cache`\n", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize(
    "model", [CacheConfig, SemanticCacheConfig, CacheTargetConfig], ids=lambda m: m.__name__
)
def test_every_cache_field_has_a_row_in_the_reference(model: type[BaseModel]) -> None:
    section = cache_section()
    missing = [name for name in model.model_fields if f"| `{name}` |" not in section]
    assert missing == []


@pytest.mark.parametrize(
    ("cache", "path"),
    [
        ({"enabled": True, "backend": "redis"}, "cache.backend"),
        ({"semantic": {"model": "nope"}}, "cache.semantic.model"),
        ({"models": {"nope": {"semantic": True}}}, "cache.models.nope"),
        ({"routes": {"faq": {"threshold": 1.5}}}, "cache.routes.faq.threshold"),
        ({"backend": "disk"}, "cache.backend"),
        ({"ttl": 0}, "cache.ttl"),
    ],
)
def test_a_wrong_cache_section_is_refused_naming_the_field(cache: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        stub_config(("primary", "http://127.0.0.1:9/v1"), cache=cache)
    assert [p.path for p in caught.value.problems] == [path]


def test_no_cache_stage_and_no_embedder_unless_asked_for() -> None:
    def built(**cache: Any) -> Any:
        config = stub_config(("primary", "http://127.0.0.1:9/v1"), cache=cache).gateway
        return build_cache(config.cache, config.redis, GatewayMetrics())

    assert built() is None
    assert built(enabled=False, semantic={"enabled": True}, models={"m": {"semantic": True}}) is None
    # Semantic matching on, but no route or model opted in: no model to load.
    assert built(enabled=True, semantic={"enabled": True}).embedder is None
    # A route opted in, but the master switch is off.
    assert built(enabled=True, routes={"faq": {"semantic": True}}).embedder is None
    gateway_model = built(
        enabled=True, semantic={"enabled": True, "model": "other"}, routes={"faq": {"semantic": True}}
    )
    assert gateway_model.embedder is not None
