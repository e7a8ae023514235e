"""What a call costs, from litellm's (local) price map."""

from __future__ import annotations

from rowforge.server.providers import litellm_client
from rowforge.server.providers.registry import ModelSpec
from rowforge.server.providers.results import Usage


def cost_usd(spec: ModelSpec, usage: Usage) -> float | None:
    """The call's price in USD, or ``None`` when the price map does not know the model."""
    try:
        litellm = litellm_client.load()
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=spec.route, prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens)
        return float(prompt_cost) + float(completion_cost)
    except Exception:  # unknown model or price: no cost rather than a failed call
        return None
