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
from types import ModuleType

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
            # Unsupported optional params (e.g. top_p on some models) are dropped, not errors.
            litellm.drop_params = True
            for name in ("callbacks", "success_callback", "failure_callback",
                         "_async_success_callback", "_async_failure_callback",
                         "service_callback", "input_callback"):
                if isinstance(getattr(litellm, name, None), list):
                    setattr(litellm, name, [])
            for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx", "openai"):
                logging.getLogger(name).setLevel(logging.WARNING)
            _module = litellm
    return _module


async def preload() -> None:
    """Import litellm in a thread, so the first provider call does not stall the event loop."""
    await asyncio.to_thread(load)


def api_key(env_name: str | None) -> str | None:
    """The key from the environment variable a spec names (never stored in the spec)."""
    return os.environ.get(env_name) if env_name else None
