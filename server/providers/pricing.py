"""What a call costs, from litellm's local price map read as data (no litellm import, no call).

The map (``model_prices_and_context_window_backup.json`` inside the litellm package, the one
litellm itself uses with ``LITELLM_LOCAL_MODEL_COST_MAP``) is parsed once. A route is looked up
the way litellm's ``cost_per_token`` does for plain token usage: the route itself, then the
model name without its provider prefix when the entry belongs to that provider; the price is
``prompt * input_cost_per_token + completion * output_cost_per_token``, with the
``*_above_<N>k_tokens`` rates when the prompt is longer than N thousand tokens.
``tests/unit/test_providers_pricing.py`` checks it against ``litellm.cost_per_token``.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from rowforge.server.providers.results import Usage

if TYPE_CHECKING:
    from rowforge.server.providers.registry import ModelSpec

PRICE_MAP = "model_prices_and_context_window_backup.json"
_TIER = re.compile(r"^input_cost_per_token_above_(\d+)k_tokens$")


def litellm_folder() -> Path | None:
    """Where the litellm package is installed (found without importing it)."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def price_map() -> Mapping[str, Any]:
    """litellm's price map (empty when litellm is not installed)."""
    folder = litellm_folder()
    if folder is None or not (folder / PRICE_MAP).is_file():
        return {}
    data = orjson.loads((folder / PRICE_MAP).read_bytes())
    return {k: v for k, v in data.items() if isinstance(v, dict)}


def model_entry(route: str, provider: str | None = None) -> Mapping[str, Any] | None:
    """The price-map entry of a litellm route, or ``None``."""
    prices = price_map()
    entry = prices.get(route)
    if entry is not None:
        return entry
    prefix, _, name = route.partition("/")
    if not name:
        return None
    owner = provider or prefix
    entry = prices.get(name)
    if entry is not None and entry.get("litellm_provider") in (owner, f"text-completion-{owner}"):
        return entry
    return None


def cost_usd(spec: ModelSpec, usage: Usage) -> float | None:
    """The call's price in USD: 0 for built-in models, ``None`` when the map has no price."""
    if spec.transport == "builtin":
        return 0.0
    entry = model_entry(spec.route)
    if entry is None:
        return None
    return token_cost(entry, usage.prompt_tokens, usage.completion_tokens)


def token_cost(entry: Mapping[str, Any], prompt_tokens: int, completion_tokens: int
               ) -> float | None:
    input_rate = entry.get("input_cost_per_token")
    output_rate = entry.get("output_cost_per_token", 0.0)
    if input_rate is None:
        return None
    threshold = 0
    for key in entry:
        match = _TIER.match(key)
        if match and prompt_tokens > int(match.group(1)) * 1000 \
                and int(match.group(1)) * 1000 > threshold:
            threshold = int(match.group(1)) * 1000
            suffix = f"_above_{match.group(1)}k_tokens"
            input_rate = entry[key]
            output_rate = entry.get(f"output_cost_per_token{suffix}", output_rate)
    return float(prompt_tokens * input_rate + completion_tokens * (output_rate or 0.0))
