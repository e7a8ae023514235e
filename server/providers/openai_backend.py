"""The ``openai`` transport: the OpenAI HTTP protocol, spoken directly (the fast path).

For every provider that speaks the OpenAI API (OpenAI, vLLM, Ollama's ``/v1``, llama.cpp,
LM Studio, Groq, Together, Fireworks, DeepSeek, any OpenAI-compatible ``api_base``):
``POST {base}/chat/completions`` (whole, or streamed as server-sent events parsed here),
``{base}/embeddings`` and a Cohere/Jina-style ``{base}/rerank``. One pooled aiohttp session
per upstream origin and event loop, keep-alive sized to the models' concurrency; JSON with
orjson. ``bench/bench_providers.py`` measured the candidates: the official ``openai`` SDK
costs 15-35x the CPU of a bare aiohttp loop per call and litellm more still, while
aiohttp + orjson with the SSE parsed by hand stays within 1.5x of that floor.

Callers see what the litellm route gives: the same result types, usage (the provider's, or
estimated when a stream sends none), cost from litellm's price map (:mod:`pricing`), and
errors mapped by :mod:`litellm_errors` from the HTTP status, ``Retry-After`` headers and the
error body (context-length messages recognised as litellm recognises them). Nothing here
retries. A response is always released: read to the end and kept alive, or its connection
closed (errors, early exits and cancellation close the upstream stream at once).
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np
import orjson
from yarl import URL

from rowforge.server.errors import Internal, RowforgeError, Unavailable
from rowforge.server.providers import litellm_client, pricing, routes
from rowforge.server.providers.backend import ChatRequest, TextSink
from rowforge.server.providers.litellm_errors import map_provider_error
from rowforge.server.providers.registry import ModelSpec
from rowforge.server.providers.results import (
    ChatChunk,
    ChatResult,
    EmbedResult,
    Usage,
    finish_reason,
)
from rowforge.server.providers.tokens import count_text_tokens, estimate_tokens

try:  # SIMD base64: ~20x the standard library's (17 us -> 0.8 us for a 1536-d embedding)
    from pybase64 import b64decode as _b64decode
except ImportError:  # pragma: no cover - a platform without its wheel
    from base64 import b64decode as _b64decode  # type: ignore[assignment]

#: Connections per upstream origin when no model on it says otherwise.
DEFAULT_CONNECTIONS = 128
#: Idle keep-alive connections are closed after this many seconds.
KEEPALIVE_S = 30.0
_OUTER_MARGIN_S = 5.0
_MAX_ERROR_BODY = 64 * 1024


class ProviderHTTPError(Exception):
    """An error answer of the upstream (mapped by :func:`map_provider_error` like litellm's
    exceptions: by ``status_code``, ``headers`` and ``message``)."""

    def __init__(self, status_code: int, message: str, *, code: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.code = code
        self.headers = headers or {}


class ProviderStreamError(Exception):
    """A stream that broke its protocol (bad JSON, an error event): not retried upstream."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


@dataclass(frozen=True, slots=True)
class _Endpoint:
    base: str
    model: str
    headers: Mapping[str, str]
    origin: str


class OpenAIBackend:
    """The ``openai`` transport (see the module docstring).

    Args:
        connections: Keep-alive pool size per upstream origin, unless a model's
            ``max_connections`` asks for more.
    """

    def __init__(self, connections: int = DEFAULT_CONNECTIONS) -> None:
        self.connections = connections
        self._endpoints: dict[ModelSpec, _Endpoint] = {}
        self._limits: dict[str, int] = {}
        # One pool per event loop and origin (tests run many loops; a server runs one).
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                               dict[str, aiohttp.ClientSession]] = \
            weakref.WeakKeyDictionary()

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, specs: Sequence[ModelSpec]) -> None:
        """Resolve every model's endpoint (asking litellm, in a thread, only for providers
        whose base URL its data does not hold) and size the pools."""
        for spec in specs:
            await self._endpoint(spec)

    async def aclose(self) -> None:
        """Close the pools of the running loop."""
        pools = self._pools.pop(asyncio.get_running_loop(), {})
        for session in pools.values():
            await session.close()

    async def _endpoint(self, spec: ModelSpec) -> _Endpoint:
        endpoint = self._endpoints.get(spec)
        if endpoint is not None:
            return endpoint
        route = routes.resolve(spec.route)
        base = spec.api_base or route.default_base
        if base is None:
            base = await _litellm_base(spec)
        base = base.rstrip("/")
        headers = {"Content-Type": "application/json"}
        if spec.api_key_env:
            headers["Authorization"] = f"Bearer {litellm_client.require_key(spec)}"
        origin = str(URL(base).origin())
        endpoint = _Endpoint(base=base, model=route.model, headers=headers, origin=origin)
        self._limits[origin] = max(self._limits.get(origin, 0),
                                   spec.max_connections or self.connections)
        self._endpoints[spec] = endpoint
        return endpoint

    def _session(self, endpoint: _Endpoint) -> aiohttp.ClientSession:
        pools = self._pools.setdefault(asyncio.get_running_loop(), {})
        session = pools.get(endpoint.origin)
        if session is None or session.closed:
            limit = self._limits.get(endpoint.origin, self.connections)
            connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit,
                                             keepalive_timeout=KEEPALIVE_S, ttl_dns_cache=300)
            session = aiohttp.ClientSession(connector=connector, skip_auto_headers=(
                "User-Agent",), headers={"User-Agent": "rowforge"}, auto_decompress=True)
            pools[endpoint.origin] = session
        return session

    # --- chat -----------------------------------------------------------------------------

    def _chat_body(self, endpoint: _Endpoint, request: ChatRequest, *, stream: bool) -> bytes:
        body: dict[str, Any] = {"model": endpoint.model, "messages": request.openai_messages()}
        body.update(request.options())
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return orjson.dumps(body)

    async def stream_chat(self, spec: ModelSpec, request: ChatRequest
                          ) -> AsyncGenerator[ChatChunk, None]:
        endpoint = await self._endpoint(spec)
        session = self._session(endpoint)
        body = self._chat_body(endpoint, request, stream=True)
        parser = _SSEParser()
        emitted: list[str] = []
        finish: str | None = None
        usage: Usage | None = None
        finished = False
        response: aiohttp.ClientResponse | None = None
        try:
            response = await session.post(f"{endpoint.base}/chat/completions", data=body,
                                          headers=endpoint.headers,
                                          timeout=_timeout(request.timeout))
            if response.status >= 400:
                raise await _http_error(response)
            async for data in response.content.iter_any():
                for event in parser.feed(data):
                    if event is None:
                        finished = True
                        break
                    choices = event.get("choices")
                    if choices is None and "error" in event:
                        raise _stream_error(event["error"])
                    for choice in choices or ():
                        delta = choice.get("delta")
                        if delta and (content := delta.get("content")):
                            emitted.append(content)
                            yield ChatChunk.delta(content)
                        if reason := choice.get("finish_reason"):
                            finish = reason
                    if (raw := event.get("usage")) and raw.get("prompt_tokens") is not None:
                        usage = Usage(int(raw["prompt_tokens"] or 0),
                                      int(raw.get("completion_tokens") or 0))
                if finished:
                    break
            else:
                finished = parser.ended(finish)
            if not finished:
                raise ProviderStreamError("the stream ended before its last event")
        except (asyncio.CancelledError, GeneratorExit, RowforgeError):
            raise
        except Exception as exc:
            raise map_provider_error(exc, model=spec.id) from exc
        finally:
            if response is not None:
                _done(response, finished)
        if usage is None:  # the provider sent no usage: estimate rather than report zero
            usage = Usage(estimate_tokens(request.messages), count_text_tokens("".join(emitted)))
        yield ChatChunk(finish_reason=finish_reason(finish), usage=usage, model=spec.id,
                        cost_usd=pricing.cost_usd(spec, usage))

    async def chat(self, spec: ModelSpec, request: ChatRequest, *,
                   on_text: TextSink | None = None) -> ChatResult:
        if on_text is not None:
            from rowforge.server.providers.backend import collect

            return await collect(self.stream_chat(spec, request), spec, on_text)
        endpoint = await self._endpoint(spec)
        body = self._chat_body(endpoint, request, stream=False)
        data = await self._post(spec, endpoint, "/chat/completions", body, request.timeout)
        try:
            choice = data["choices"][0]
            message = choice["message"]
            text = message.get("content") or ""
            raw = data.get("usage") or {}
            usage = Usage(int(raw.get("prompt_tokens") or 0),
                          int(raw.get("completion_tokens") or 0))
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise _bad_response(spec, "an answer without a message") from exc
        return ChatResult(text=text, finish_reason=finish_reason(choice.get("finish_reason")),
                          usage=usage, model=spec.id, cost_usd=pricing.cost_usd(spec, usage))

    # --- embeddings and ranking -----------------------------------------------------------

    async def embed(self, spec: ModelSpec, texts: Sequence[str], *, is_query: bool,
                    timeout: float) -> EmbedResult:
        endpoint = await self._endpoint(spec)
        # base64 (little-endian float32), as the official openai SDK asks by default: a
        # quarter of the bytes of a JSON float array, decoded without parsing numbers. A
        # server that ignores it answers with float arrays, which are read as well.
        body = orjson.dumps({"model": endpoint.model, "input": list(texts),
                             "encoding_format": "base64"})
        data = await self._post(spec, endpoint, "/embeddings", body, timeout)
        try:
            items = data["data"]
            if len(items) > 1:
                items = sorted(items, key=lambda item: item.get("index") or 0)
            vectors = np.asarray([_vector(item["embedding"]) for item in items],
                                 dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[0] != len(texts):
                raise ValueError(f"expected {len(texts)} vectors, got shape {vectors.shape}")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _bad_response(spec, "malformed embeddings") from exc
        prompt_tokens = (data.get("usage") or {}).get("prompt_tokens")
        if prompt_tokens is None:
            prompt_tokens = sum(count_text_tokens(t) for t in texts)
        return EmbedResult(vectors=vectors, usage=Usage(prompt_tokens=int(prompt_tokens)),
                           model=spec.id)

    async def rerank(self, spec: ModelSpec, query: str, documents: Sequence[str], *,
                     top_n: int, timeout: float) -> list[tuple[int, float]]:
        endpoint = await self._endpoint(spec)
        payload: dict[str, Any] = {"model": endpoint.model, "query": query,
                                   "documents": list(documents)}
        if top_n:
            payload["top_n"] = top_n
        data = await self._post(spec, endpoint, "/rerank", orjson.dumps(payload), timeout)
        try:
            return [(int(r["index"]), float(r["relevance_score"])) for r in data["results"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise _bad_response(spec, "a malformed ranking") from exc

    # --- HTTP -----------------------------------------------------------------------------

    async def _post(self, spec: ModelSpec, endpoint: _Endpoint, path: str, body: bytes,
                    timeout: float) -> Any:
        """POST a JSON body, return the decoded JSON answer (errors mapped)."""
        session = self._session(endpoint)
        try:
            async with asyncio.timeout(timeout + _OUTER_MARGIN_S), \
                    session.post(f"{endpoint.base}{path}", data=body, headers=endpoint.headers,
                                 timeout=_timeout(timeout)) as response:
                if response.status >= 400:
                    raise await _http_error(response)
                raw = await response.read()
        except (asyncio.CancelledError, RowforgeError):
            raise
        except Exception as exc:
            raise map_provider_error(exc, model=spec.id) from exc
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _bad_response(spec, "a body that is not JSON") from exc


class _SSEParser:
    """Server-sent events, incrementally: yields each ``data:`` payload decoded as JSON, and
    ``None`` for ``[DONE]``. Handles events split across reads, ``\\r\\n`` line ends,
    comments and multi-line data."""

    __slots__ = ("_buffer", "_data")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[Any]:
        buffer = self._buffer + chunk if self._buffer else chunk
        if not self._data and b"\r" not in buffer:
            return self._feed_blocks(buffer)
        return self._feed_lines(buffer)

    def _feed_blocks(self, buffer: bytes) -> list[Any]:
        """The common case (``\n`` line ends, nothing pending): whole events split at once,
        each one ``data: {...}`` line decoded without a loop over its lines."""
        *blocks, tail = buffer.split(b"\n\n")
        events: list[Any] = []
        for block in blocks:
            if block.startswith(b"data: ") and b"\n" not in block:
                payload = block[6:]
                events.append(None if payload == b"[DONE]" else orjson.loads(payload))
            elif block:
                events += self._feed_lines(block + b"\n\n")
        self._buffer = tail
        return events

    def _feed_lines(self, buffer: bytes) -> list[Any]:
        events: list[Any] = []
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            line = buffer[start:end]
            start = end + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self._data:
                    events.append(self._decode())
                continue
            if line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
            # other fields (event:, id:, retry:) and comments (":") carry nothing we use
        self._buffer = buffer[start:]
        return events

    def _decode(self) -> Any:
        payload = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        self._data = []
        if payload == b"[DONE]":
            return None
        return orjson.loads(payload)

    def ended(self, finish: str | None) -> bool:
        """At the end of the body: whether the stream is complete. Servers that send no
        ``[DONE]`` are fine once a finish reason arrived."""
        if self._buffer.strip() or self._data:
            raise ProviderStreamError("the stream ended inside an event")
        return finish is not None


@functools.lru_cache(maxsize=64)
def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    # Like litellm's (httpx) timeout: a bound on connecting and on each wait for bytes, so a
    # long answer streamed steadily is never cut.
    return aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)


def _done(response: aiohttp.ClientResponse, complete: bool) -> None:
    if complete and response.content.at_eof():
        response.release()  # back to the pool
    else:
        response.close()  # unread data or an early exit: the connection cannot be reused


async def _http_error(response: aiohttp.ClientResponse) -> ProviderHTTPError:
    try:
        raw = await response.content.read(_MAX_ERROR_BODY)
    except (TimeoutError, aiohttp.ClientError):
        raw = b""
    finally:
        response.close()
    message, code = _error_text(raw)
    return ProviderHTTPError(response.status, message or response.reason or "error",
                             code=code, headers=response.headers)


def _error_text(raw: bytes) -> tuple[str, str | None]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace").strip()[:500], None
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        return str(error.get("message") or error.get("detail") or ""), \
            str(code) if code is not None else None
    return str(error)[:500], None


def _stream_error(error: Any) -> ProviderHTTPError | ProviderStreamError:
    """An ``{"error": ...}`` event inside a stream (vLLM, OpenRouter and others send them)."""
    if isinstance(error, dict):
        status = error.get("code") if isinstance(error.get("code"), int) else None
        message = str(error.get("message") or error)
        if status:
            return ProviderHTTPError(status, message, code=str(error.get("type") or ""))
        return ProviderStreamError(message)
    return ProviderStreamError(str(error))


def _bad_response(spec: ModelSpec, what: str) -> Unavailable:
    return Unavailable(f"The provider of model {spec.id!r} sent {what}; retry later.",
                       reason="PROVIDER_BAD_RESPONSE", metadata={"model": spec.id})


def _vector(value: Any) -> Any:
    if isinstance(value, str):  # encoding_format=base64 (little-endian float32)
        return np.frombuffer(_b64decode(value, validate=True), dtype="<f4")
    return value


async def _litellm_base(spec: ModelSpec) -> str:
    """The provider's base URL as litellm resolves it (imported in a thread, once)."""
    litellm = litellm_client.loaded() or await litellm_client.preload()

    def resolve() -> str | None:
        _, _, _, base = litellm.get_llm_provider(model=spec.route)
        return base

    base = await asyncio.to_thread(resolve)
    if not base:
        raise Internal(f"Model {spec.id!r} needs an api_base: litellm knows no URL for "
                       f"route {spec.route!r}.", reason="PROVIDER_BASE_MISSING",
                       metadata={"model": spec.id})
    return str(base)
