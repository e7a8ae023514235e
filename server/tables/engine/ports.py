"""What the row engine consumes from other domains, declared here and satisfied by the
composition root (``server/app.py``): the engine imports none of the domains behind them, so
engine -> retriever -> knowledge stays one-way and each port can be replaced by a fake in a
test.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from rowforge.server.providers import ChatResult, EmbedResult, Message, ModelSpec
from rowforge.server.providers.backend import TextSink
from rowforge.server.tables.model import RAGParams, References

T = TypeVar("T")

QueryWriter = Callable[[Sequence[Message]], Awaitable[ChatResult]]


class ModelAccess(Protocol):
    """Model calls (the server's ``Providers`` satisfies it)."""

    async def chat(self, spec: ModelSpec, messages: Sequence[Message], *,
                   temperature: float | None = ..., max_tokens: int | None = ...,
                   top_p: float | None = ..., timeout: float | None = ...,
                   on_text: TextSink | None = ...) -> ChatResult: ...
    async def embed(self, spec: ModelSpec, texts: Sequence[str], *, is_query: bool = ...,
                    timeout: float | None = ...) -> EmbedResult: ...


class FileAccess(Protocol):
    """The file store as cells use it (``FileStore`` satisfies it)."""

    async def get(self, project_id: str, uri: str, *, field: str = ...) -> Any: ...
    async def read_bytes(self, project_id: str, uri: str,
                         max_bytes: int | None = ...) -> bytes: ...
    async def store_bytes(self, project_id: str, data: bytes, *, name: str,
                          expected_kind: str | None = ...) -> Any: ...
    async def validate_uri(self, project_id: str, uri: str, dtype: str) -> Any: ...


class Retriever(Protocol):
    """Finds the references of an LLM column with ``rag_params`` (knowledge's RagRetriever)."""

    async def retrieve(self, project_id: str, params: RAGParams, query: str,
                       row: dict[str, Any], *,
                       write_query: QueryWriter | None = None) -> References: ...


class SandboxRunner(Protocol):
    """Runs one Python cell (``SandboxPool`` satisfies it)."""

    async def run(self, code: str, row: dict[str, Any], column: str, *,
                  timeout_s: float | None = None) -> Any: ...


class SandboxSource(Protocol):
    """Hands out a started sandbox (``LazySandbox``): raises the reason it cannot."""

    async def acquire(self) -> SandboxRunner: ...
    async def close(self) -> None: ...


class CallGate(Protocol):
    """Admits a table job's model calls (the batch worker's per-model rate limiter, call log
    and retries of transient errors)."""

    async def call(self, spec: ModelSpec, estimate_tokens: int,
                   fn: Callable[[], Awaitable[T]]) -> T: ...
