"""litellm's data read without litellm: the price map (cost) and provider resolution (which
transport a route takes by default) must agree with litellm's own functions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rowforge.server.providers import ModelRegistry, ModelSpec, Usage, litellm_client, pricing
from rowforge.server.providers.routes import default_transport, resolve


@pytest.fixture(scope="module")
def litellm():  # type: ignore[no-untyped-def]
    return litellm_client.load()


def chat_routes() -> list[str]:
    """Every chat/embedding model the map prices, of providers users route to most."""
    providers = {"openai", "groq", "deepseek", "mistral", "together_ai", "fireworks_ai",
                 "xai", "deepinfra", "gemini", "anthropic"}
    routes = []
    for key, entry in pricing.price_map().items():
        provider = entry.get("litellm_provider")
        if provider in providers and entry.get("mode") in ("chat", "embedding") \
                and entry.get("input_cost_per_token") is not None:
            routes.append(key if key.startswith(f"{provider}/") else f"{provider}/{key}")
    return routes


# Peak and off-peak moments of the map's off_peak_pricing windows (weekday and weekend).
MOMENTS = [datetime(2026, 12, 7, 2, 30, tzinfo=UTC),   # Monday 02:30
           datetime(2026, 12, 7, 4, 30, tzinfo=UTC),   # Monday 04:30
           datetime(2026, 12, 9, 12, 0, tzinfo=UTC),   # Wednesday 12:00
           datetime(2026, 12, 12, 8, 0, tzinfo=UTC)]   # Saturday 08:00


@pytest.mark.parametrize("moment", MOMENTS, ids=lambda m: m.strftime("%a-%H%M"))
def test_the_price_map_is_litellms(litellm, moment: datetime) -> None:  # type: ignore[no-untyped-def]
    from litellm._internal_context import pinned_billing_time

    routes = chat_routes()
    assert len(routes) > 200
    compared = 0
    for route in routes:
        for prompt, completion in ((1_000, 200), (300_000, 1_000)):
            try:
                with pinned_billing_time(moment):
                    want = sum(litellm.cost_per_token(model=route, prompt_tokens=prompt,
                                                      completion_tokens=completion))
            except Exception:
                continue
            got = pricing.cost_usd(ModelSpec(id="m", route=route), Usage(prompt, completion),
                                   at=moment)
            assert got == pytest.approx(want, rel=1e-9, abs=1e-12), (route, prompt)
            compared += 1
    assert compared > 400


def test_off_peak_windows() -> None:
    block = {"hours_utc": "16:30-00:30",
             "windows": [{"weekdays": ["sat", 7], "hours_utc": ["08:00-09:00"]}]}
    at = lambda d, h, m: datetime(2026, 12, d, h, m, tzinfo=UTC)  # noqa: E731
    assert pricing.is_off_peak(block, at(7, 16, 30))      # start inclusive
    assert pricing.is_off_peak(block, at(7, 0, 10))       # wraps past midnight
    assert not pricing.is_off_peak(block, at(7, 0, 30))   # end exclusive
    assert not pricing.is_off_peak(block, at(7, 8, 30))   # Monday: no weekday rule
    assert pricing.is_off_peak(block, at(12, 8, 30))      # Saturday
    assert pricing.is_off_peak(block, at(13, 8, 59))      # Sunday (ISO 7)
    assert not pricing.is_off_peak({"hours_utc": "garbage", "windows": "x"}, at(7, 1, 0))
    entry = {"input_cost_per_token": 2e-6, "output_cost_per_token": 4e-6,
             "off_peak_pricing": {"input_cost_per_token": 1e-6, "hours_utc": "00:00-00:00"}}
    assert pricing.token_cost(entry, 1000, 100, at(7, 12, 0)) == pytest.approx(1e-3 + 4e-4)


def test_unknown_and_builtin_prices() -> None:
    assert pricing.cost_usd(ModelSpec(id="m", route="openai/no-such-model"), Usage(10, 10)) \
        is None
    builtin = ModelRegistry.from_config([]).get("rowforge/chat")
    assert pricing.cost_usd(builtin, Usage(10, 10)) == 0.0


@pytest.mark.parametrize("route", [
    "openai/gpt-4o-mini", "gpt-4o-mini", "text-embedding-3-small", "groq/llama-3.1-8b-instant",
    "deepseek/deepseek-chat", "together_ai/meta-llama/Llama-3-8b", "hosted_vllm/my/model",
    "lm_studio/local", "fireworks_ai/accounts/x/models/y", "anthropic/claude-3-5-sonnet",
    "gemini/gemini-2.0-flash", "cohere/rerank-english-v3.0", "azure/gpt-4o", "xai/grok-2",
    "bedrock/anthropic.claude-v2", "ollama/llama3",
])
def test_resolution_agrees_with_get_llm_provider(litellm, route: str) -> None:  # type: ignore[no-untyped-def]
    from litellm.constants import openai_compatible_providers

    model, provider, _, _ = litellm.get_llm_provider(model=route)
    found = resolve(route)
    assert (found.provider, found.model) == (provider, model)
    compatible = provider == "openai" or provider in openai_compatible_providers
    assert found.openai_compatible == compatible
    assert default_transport(route) == ("openai" if compatible else "litellm")


def test_config_chooses_the_transport() -> None:
    registry = ModelRegistry.from_config([
        {"id": "a", "route": "openai/gpt-4o-mini", "capabilities": ["chat"]},
        {"id": "b", "route": "openai/gpt-4o-mini", "capabilities": ["chat"],
         "transport": "litellm"},
        {"id": "c", "route": "anthropic/claude-3-5-sonnet", "capabilities": ["chat"]},
        {"id": "d", "route": "my-model", "api_base": "http://127.0.0.1:8000/v1",
         "capabilities": ["chat"], "transport": "openai", "max_connections": 8},
    ])
    assert [registry.get(m).transport for m in "abcd"] == ["openai", "litellm", "litellm",
                                                          "openai"]
    assert registry.get("d").max_connections == 8
    with pytest.raises(ValueError, match="transport"):
        ModelRegistry.from_config([{"id": "x", "route": "openai/x", "capabilities": ["chat"],
                                    "transport": "grpc"}])
