"""The model layer: which models exist and how to call them (no protobuf here).

Public API (everything else in this package is an implementation detail)::

    registry = ModelRegistry.from_config(config_entries)      # + built-in offline models
    spec = registry.require("rowforge/chat", "chat")
    async for chunk in stream_chat(spec, [Message("user", "Hi")]): ...
    result = await chat(spec, messages, response_format=json_schema_format(MyModel))
    vectors = (await embed(registry.get("rowforge/embed"), ["text"])).vectors
    ranked = await rerank(registry.get("rowforge/rerank"), "query", ["doc", ...])
    result = await with_retries(lambda: chat(spec, messages))

    providers = Providers()                   # or default_providers(): what the above use
    await providers.start(registry.specs)     # pools sized, litellm loaded off the loop if used
    result = await providers.chat(spec, messages, on_text=print)   # text as it streams
    await providers.aclose()

Every call goes through :class:`Providers` (:mod:`.client`), which hands it to the model's
backend (:mod:`.backend`), chosen by ``ModelSpec.transport``: built-in models run in-process
(:mod:`.builtin`), OpenAI-compatible providers are spoken to directly (:mod:`.openai_backend`,
the fast path; :mod:`.routes` picks the default from litellm's data), every other provider goes
through litellm (:mod:`.litellm_backend`, imported off the event loop).
"""

from rowforge.server.providers.backend import Backend, ChatRequest
from rowforge.server.providers.chat import chat, stream_chat
from rowforge.server.providers.client import Providers, default_providers
from rowforge.server.providers.embeddings import embed
from rowforge.server.providers.formats import (
    json_schema_format,
    parse_json_output,
    validate_response_format,
)
from rowforge.server.providers.litellm_client import preload
from rowforge.server.providers.litellm_errors import (
    is_retryable,
    map_provider_error,
    retry_after,
)
from rowforge.server.providers.messages import Attachment, Message, coerce_messages
from rowforge.server.providers.pricing import cost_usd
from rowforge.server.providers.registry import (
    CAPABILITIES,
    ModelConfig,
    ModelRegistry,
    ModelSpec,
    builtin_specs,
)
from rowforge.server.providers.rerank import rerank
from rowforge.server.providers.results import ChatChunk, ChatResult, EmbedResult, Usage
from rowforge.server.providers.retry import backoff_delay, with_retries
from rowforge.server.providers.tokens import estimate_tokens, trim_history

__all__ = [
    "CAPABILITIES",
    "Attachment",
    "Backend",
    "ChatChunk",
    "ChatRequest",
    "ChatResult",
    "EmbedResult",
    "Message",
    "ModelConfig",
    "ModelRegistry",
    "ModelSpec",
    "Providers",
    "Usage",
    "backoff_delay",
    "builtin_specs",
    "chat",
    "coerce_messages",
    "cost_usd",
    "default_providers",
    "embed",
    "estimate_tokens",
    "is_retryable",
    "json_schema_format",
    "map_provider_error",
    "parse_json_output",
    "preload",
    "rerank",
    "retry_after",
    "stream_chat",
    "trim_history",
    "validate_response_format",
    "with_retries",
]
