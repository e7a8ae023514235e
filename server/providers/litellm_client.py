"""The one place litellm is imported: lazily, offline and quiet.

Importing litellm takes about two seconds and, unless ``LITELLM_LOCAL_MODEL_COST_MAP`` is set,
fetches its price map from the internet; so it is imported on the first call to a non-built-in
model (or at start-up through :func:`preload`, off the event loop), with the local price map,
telemetry off and no logging callbacks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from rowforge.server.errors import Internal

if TYPE_CHECKING:
    from rowforge.server.providers.registry import ModelSpec

_lock = threading.Lock()
_module: ModuleType | None = None


def load() -> ModuleType:
    """The configured ``litellm`` module (imported on first use)."""
    global _module
    if _module is not None:
        return _module
    with _lock:
        if _module is None:
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            os.environ.setdefault("LITELLM_TELEMETRY", "False")
            import litellm

            litellm.telemetry = False
            litellm.suppress_debug_info = True
            litellm.set_verbose = False
            litellm.turn_off_message_logging = True
            # Retrying is ours (rowforge.server.providers.retry). litellm turns an explicit
            # max_retries=0 for embeddings into this default (`max_retries or DEFAULT`).
            litellm.DEFAULT_MAX_RETRIES = 0  # type: ignore[misc]
            # Unsupported optional params (e.g. top_p on some models) are dropped, not errors.
            litellm.drop_params = True
            for name in ("callbacks", "success_callback", "failure_callback",
                         "_async_success_callback", "_async_failure_callback",
                         "service_callback", "input_callback"):
                if isinstance(getattr(litellm, name, None), list):
                    setattr(litellm, name, [])
            for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx", "openai"):
                logging.getLogger(name).setLevel(logging.WARNING)
            _warm_up(litellm)
            _module = litellm
    return _module


def _warm_up(litellm: ModuleType) -> None:
    """Run litellm's call paths once, offline (``mock_response``), with warnings silenced.

    litellm imports modules and builds pydantic schemas lazily on the first real call, and
    pydantic warns while doing so (UserWarnings about ``ReadOnly`` TypedDict items). Done here,
    synchronously, the warnings cannot race other tasks' warning filters, and a run that turns
    warnings into errors (our test suite) cannot be left with half-built pydantic types.
    """
    messages = [{"role": "user", "content": "warm-up"}]
    common = {"model": "openai/rowforge-warm-up", "api_key": "unused",
              "api_base": "http://127.0.0.1:9/v1"}  # never contacted: responses are mocked
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            litellm.completion(messages=messages, mock_response="ok", **common)
            for _ in litellm.completion(messages=messages, mock_response="ok", stream=True,
                                        stream_options={"include_usage": True}, **common):
                pass
            from litellm.types.rerank import RerankResponse, get_rerank_usage

            ranking = {"id": "warm-up", "results": [{"index": 0, "relevance_score": 1.0}],
                       "meta": {"billed_units": {"search_units": 1}}}
            RerankResponse.model_validate(ranking)
            get_rerank_usage(ranking)
        except Exception:  # only a warm-up: another litellm version may differ
            pass


def warm_routes(routes: Sequence[str]) -> None:
    """Run a mocked completion per route (in a thread): litellm imports provider code lazily
    on a route's first call, which would otherwise happen on the event loop."""
    litellm = load()
    messages = [{"role": "user", "content": "warm-up"}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for route in dict.fromkeys(routes):
            try:
                litellm.completion(model=route, messages=messages, mock_response="ok",
                                   api_key="unused")
            except Exception:  # only a warm-up
                pass


def loaded() -> ModuleType | None:
    """The module when :func:`load` already ran, else ``None`` (never imports)."""
    return _module


async def preload() -> ModuleType:
    """Import and warm litellm in a thread, so no call stalls the event loop on it."""
    module = _module
    if module is None:
        module = await asyncio.to_thread(load)
    return module


def api_key(env_name: str | None) -> str | None:
    """The key from the environment variable a spec names (never stored in the spec)."""
    return os.environ.get(env_name) if env_name else None


def request_kwargs(spec: ModelSpec, **options: Any) -> dict[str, Any]:
    """litellm keyword arguments for a call to ``spec``: route, base URL, key, no retries
    (neither litellm's nor the openai SDK's: retrying is :mod:`retry`'s job), plus ``options``
    that are not ``None``.

    Raises:
        Internal: the key's environment variable is not set (reason ``PROVIDER_KEY_MISSING``).
    """
    kwargs: dict[str, Any] = {"model": spec.route, "num_retries": 0, "max_retries": 0}
    if spec.api_base:
        kwargs["api_base"] = spec.api_base
    if spec.api_key_env:
        kwargs["api_key"] = require_key(spec)
    kwargs.update({k: v for k, v in options.items() if v is not None})
    return kwargs


def require_key(spec: ModelSpec) -> str:
    """The API key of a model that names a key variable.

    Raises:
        Internal: the variable is not set (reason ``PROVIDER_KEY_MISSING``).
    """
    key = api_key(spec.api_key_env)
    if not key:
        raise Internal(f"The server has no API key for model {spec.id!r}: set the "
                       f"environment variable {spec.api_key_env}.",
                       reason="PROVIDER_KEY_MISSING",
                       metadata={"model": spec.id, "envVar": spec.api_key_env})
    return key
