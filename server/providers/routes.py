"""Which transport serves a litellm route, from litellm's own data (read, never imported).

litellm resolves ``provider/model`` routes by their prefix. The providers it treats as
speaking the OpenAI HTTP API are its ``openai_compatible_providers`` list (in
``litellm/constants.py``, read here with :mod:`ast`, not executed), the JSON-configured ones
(``litellm/llms/openai_like/providers.json``, which also gives their base URLs) and
``openai`` / ``custom_openai`` themselves; a bare model name is OpenAI's when litellm's price
map lists it under ``openai``. Those routes default to the ``openai`` transport (the fast
path); every other route defaults to ``litellm``. ``tests/unit/test_providers_routes.py``
checks the answers against ``litellm.get_llm_provider``.
"""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass

import orjson

from rowforge.server.providers.pricing import litellm_folder, price_map

OPENAI_BASE = "https://api.openai.com/v1"
_COMPATIBLE_LIST = re.compile(r"^openai_compatible_providers\b[^=]*=\s*(\[.*?^\])",
                              re.MULTILINE | re.DOTALL)
#: Always OpenAI-protocol, whatever litellm's lists say.
_OPENAI_PROVIDERS = frozenset({"openai", "custom_openai"})
#: Listed as OpenAI-compatible, but litellm does their authentication (OAuth device flows,
#: Azure headers) itself: they stay on litellm unless a model says otherwise.
_LITELLM_AUTH = frozenset({"github_copilot", "chatgpt", "azure_ai"})


@dataclass(frozen=True)
class Route:
    """A litellm route, resolved.

    Attributes:
        provider: litellm's provider name (``openai``, ``groq``, ...), or ``None`` if unknown.
        model: The model name the provider expects (the route without its provider prefix).
        openai_compatible: Whether litellm treats the provider as speaking the OpenAI API.
        default_base: The provider's base URL when litellm's data knows it.
    """

    provider: str | None
    model: str
    openai_compatible: bool
    default_base: str | None


@functools.cache
def _compatible_providers() -> tuple[frozenset[str], dict[str, str]]:
    """(litellm's OpenAI-compatible providers, base URLs of the JSON-configured ones)."""
    folder = litellm_folder()
    names: set[str] = set(_OPENAI_PROVIDERS)
    bases: dict[str, str] = {}
    if folder is None:
        return frozenset(names), bases
    try:
        source = (folder / "constants.py").read_text(encoding="utf-8")
        match = _COMPATIBLE_LIST.search(source)
        if match:
            listed = ast.literal_eval(match.group(1))
            names |= {name for name in listed if isinstance(name, str)}
    except (OSError, SyntaxError, ValueError):
        pass
    try:
        configured = orjson.loads((folder / "llms" / "openai_like" / "providers.json"
                                   ).read_bytes())
        for name, entry in configured.items():
            names.add(name)
            if isinstance(entry, dict) and isinstance(entry.get("base_url"), str):
                bases[name] = entry["base_url"].rstrip("/")
    except (OSError, ValueError):
        pass
    return frozenset(names), bases


@functools.cache
def _known_providers() -> frozenset[str]:
    compatible, _ = _compatible_providers()
    listed = {str(e.get("litellm_provider")) for e in price_map().values()
              if e.get("litellm_provider")}
    return frozenset(compatible | listed)


def resolve(route: str) -> Route:
    """How litellm would resolve ``route`` (see the module docstring)."""
    compatible, bases = _compatible_providers()
    prefix, slash, rest = route.partition("/")
    if slash and prefix in _known_providers():
        base = OPENAI_BASE if prefix == "openai" else bases.get(prefix)
        return Route(prefix, rest, prefix in compatible, base)
    entry = price_map().get(route)
    if entry is not None and entry.get("litellm_provider") == "openai":
        return Route("openai", route, True, OPENAI_BASE)
    provider = str(entry.get("litellm_provider")) if entry else None
    return Route(provider, route, provider in compatible, bases.get(provider or ""))


def default_transport(route: str) -> str:
    """``openai`` for a route litellm resolves to an OpenAI-compatible provider, else
    ``litellm``."""
    found = resolve(route)
    return "openai" if found.openai_compatible and found.provider not in _LITELLM_AUTH \
        else "litellm"
