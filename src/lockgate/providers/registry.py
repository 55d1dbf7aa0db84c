"""Which provider class serves each ``kind``.

Built-in providers are registered exactly like third-party ones: through the ``lockgate.providers``
entry-point group, each naming a ``Provider`` subclass. Classes are imported on first use so a gateway
that never serves a local model never imports llama.cpp.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module
from importlib.metadata import entry_points

from lockgate.providers.base import Provider, ProviderSettings

BUILTIN: dict[str, str] = {
    "openai": "lockgate.providers.openai_compat:OpenAICompatibleProvider",
    "anthropic": "lockgate.providers.anthropic:AnthropicProvider",
    "llama_cpp": "lockgate.providers.local_llama:LocalLlamaProvider",
}


class UnknownProviderKind(LookupError):
    pass


@cache
def _targets() -> dict[str, str]:
    found = dict(BUILTIN)
    for entry in entry_points(group="lockgate.providers"):
        found.setdefault(entry.name, entry.value)
    return found


def known_kinds() -> list[str]:
    return sorted(_targets())


def provider_class(kind: str) -> type[Provider[ProviderSettings]]:
    target = _targets().get(kind)
    if target is None:
        raise UnknownProviderKind(f"unknown provider kind {kind!r}; known kinds: {', '.join(known_kinds())}")
    module_name, _, attr = target.partition(":")
    cls = getattr(import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise UnknownProviderKind(f"{target} is not a Provider")
    return cls
