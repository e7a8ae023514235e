"""A fake OpenAI-compatible HTTP server for tests: real HTTP on 127.0.0.1, programmable faults.

Two ways to run it::

    async with FakeOpenAI() as fake:            # in the test's event loop
        spec = ModelSpec(..., api_base=fake.base_url)

    fake = FakeOpenAI.start_in_thread()         # own loop in a thread (server in a subprocess)
    ...
    fake.stop()

Endpoints: ``POST /v1/chat/completions`` (SSE streaming with a final usage chunk when
``stream_options.include_usage``, or one JSON body), ``POST /v1/embeddings`` (float or base64),
``POST /v1/rerank`` (Cohere-style), ``GET /v1/models``. Answers come from the built-in chat
model (:mod:`rowforge.server.providers.builtin_chat`), so JSON-schema formats get valid JSON.
Any model whose name starts with ``unknown`` gets a 404 ``model_not_found``.

Faults:

* ``fake.latency`` (seconds before each answer) and ``fake.token_delay`` (between SSE chunks);
* ``fake.fail_next(n, status=429, retry_after=2)`` queues faults for the next ``n`` requests:
  an HTTP status (429/500/503/400/401/...), or ``"timeout"`` (hang until the client gives up),
  ``"malformed"`` (broken JSON body / broken SSE) or ``"invalid_json_output"`` (a well-formed
  answer whose content is not valid for the requested schema);
* prompt rules: a message containing ``[[fault:429]]`` (or ``500``, ``503``, ``timeout``,
  ``malformed``, ``invalid_json_output``) always gets that fault; ``[[fault:429x2]]`` only the
  first 2 times that same prompt is seen; options follow commas:
  ``[[fault:429x1,retry_after=0.2]]``.

Every request is recorded in ``fake.requests`` (method, path, headers, json, monotonic
timestamp); ``fake.in_flight`` / ``fake.max_in_flight`` count concurrent requests.

Benchmarks use the cheap profile: ``canned_tokens=N`` answers every chat with the same N-token
text (responses encoded once; one SSE event per token), ``record=False`` keeps no request
log, and ``python -m tests.fakes.openai_server --canned-tokens 50 --no-record`` runs it in its
own process (on uvloop when installed), printing its base URL.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from rowforge.server.providers import builtin_chat, builtin_rerank, hashing_embedder
from rowforge.server.providers.messages import Message
from rowforge.server.providers.text import count_tokens

SPECIAL_KINDS = ("timeout", "malformed", "invalid_json_output")
_BODY = web.RequestKey("json", object)  # the parsed request body
_RULE = re.compile(r"\[\[fault:(\w+?)(?:x(\d+))?((?:,\w+=[\w.]+)*)\]\]")
_INVALID_OUTPUT = '["this", "is", "not", "what", "the", "schema", "asked", "for"]'
_STATUS_ERRORS = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to use this model.", "invalid_request_error", None),
    404: ("Not found.", "invalid_request_error", None),
    429: ("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request.", "server_error", None),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    timestamp: float  # time.monotonic() on arrival


@dataclass
class Fault:
    """What to do instead of answering.

    ``kind`` is ``"status"`` (answer ``status`` with an OpenAI error body), ``"timeout"``,
    ``"malformed"`` or ``"invalid_json_output"``.
    """

    kind: str = "status"
    status: int = 500
    retry_after: float | None = None
    retry_after_ms: float | None = None
    message: str | None = None
    code: str | None = None
    hang: float = 30.0


@dataclass
class _Rule:
    contains: str
    fault: Fault
    times: int | None  # None: always
    hits: int = 0


@dataclass
class _State:
    faults: deque[Fault] = field(default_factory=deque)
    rules: list[_Rule] = field(default_factory=list)
    prompt_hits: Counter[str] = field(default_factory=Counter)


class FakeOpenAI:
    """The fake server (see the module docstring).

    Args:
        latency: Seconds to wait before answering each request.
        token_delay: Seconds between streamed chunks.
        embedding_size: Vector size when a request sets no ``dimensions``.
        api_key: When set, requests without ``Authorization: Bearer <api_key>`` get a 401.
        canned_tokens: When > 0, every chat answer is the same text of this many tokens
            (no built-in model run per request: the benchmark profile).
        record: Keep ``requests`` (off for long benchmarks).
    """

    def __init__(self, *, latency: float = 0.0, token_delay: float = 0.0,
                 embedding_size: int = 64, api_key: str | None = None,
                 canned_tokens: int = 0, record: bool = True) -> None:
        self.latency = latency
        self.token_delay = token_delay
        self.embedding_size = embedding_size
        self.api_key = api_key
        self.record = record
        self._canned = _Canned(canned_tokens) if canned_tokens > 0 else None
        self.requests: list[RecordedRequest] = []
        #: (prompt text, content, time.monotonic()) of the last streamed chunks written.
        self.chunks_sent: deque[tuple[str, str, float]] = deque(maxlen=10_000)
        self.in_flight = 0
        self.max_in_flight = 0
        self.port = 0
        self._lock = threading.Lock()
        self._state = _State()
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: what ``api_base`` should be."""
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> FakeOpenAI:
        self._closing = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        app = web.Application(middlewares=[self._record], client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        for path in ("/v1/rerank", "/rerank", "/v2/rerank"):
            app.router.add_post(path, self._rerank)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True,
                                     shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._closing is not None:
            self._closing.set()  # release hanging "timeout" handlers
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeOpenAI:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @classmethod
    def start_in_thread(cls, **kwargs: Any) -> FakeOpenAI:
        """Start a fake in a daemon thread with its own event loop; call :meth:`stop` after."""
        fake = cls(**kwargs)
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(fake.start())
            except BaseException as exc:  # surfaced to the starting thread below
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        fake._thread = threading.Thread(target=run, name="fake-openai", daemon=True)
        fake._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return fake

    def stop(self) -> None:
        """Stop a fake started with :meth:`start_in_thread`."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._thread = None

    # --- programming faults --------------------------------------------------------------

    def fail_next(self, n: int = 1, status: int | str = 500, *, retry_after: float | None = None,
                  retry_after_ms: float | None = None, message: str | None = None,
                  code: str | None = None, hang: float = 30.0) -> None:
        """Make the next ``n`` requests fail: ``status`` is an HTTP status or one of
        ``"timeout"``, ``"malformed"``, ``"invalid_json_output"``."""
        fault = _fault(status, retry_after=retry_after, retry_after_ms=retry_after_ms,
                       message=message, code=code, hang=hang)
        with self._lock:
            self._state.faults.extend(Fault(**vars(fault)) for _ in range(n))

    def add_rule(self, contains: str, status: int | str = 429, *, times: int | None = None,
                 retry_after: float | None = None, message: str | None = None,
                 code: str | None = None) -> None:
        """Fail requests whose messages contain ``contains`` (``times`` times, or always)."""
        fault = _fault(status, retry_after=retry_after, message=message, code=code)
        with self._lock:
            self._state.rules.append(_Rule(contains, fault, times))

    def reset(self) -> None:
        """Forget queued faults, rules, recorded requests and counters."""
        with self._lock:
            self._state = _State()
            self.requests.clear()
            self.max_in_flight = self.in_flight

    def requests_to(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    # --- plumbing ------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = _loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
        with self._lock:
            if self.record:
                self.requests.append(RecordedRequest(request.method, request.path,
                                                     dict(request.headers), body,
                                                     time.monotonic()))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        request[_BODY] = body
        try:
            if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
                return _error(401)
            if self.latency:
                await asyncio.sleep(self.latency)
            return await handler(request)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _take_fault(self, body: Any) -> Fault | None:
        if self._canned is not None and not self._state.faults and not self._state.rules:
            return None  # the benchmark profile: no prompt rules
        prompt = _prompt_text(body)
        with self._lock:
            for rule in self._state.rules:
                if rule.contains in prompt and (rule.times is None or rule.hits < rule.times):
                    rule.hits += 1
                    return rule.fault
            match = _RULE.search(prompt)
            if match:
                kind, times, options = match.group(1), match.group(2), match.group(3)
                key = f"{match.group(0)}\x00{prompt}"
                self._state.prompt_hits[key] += 1
                if times is None or self._state.prompt_hits[key] <= int(times):
                    opts = dict(o.split("=", 1) for o in options.split(",") if o)
                    return _fault(kind if not kind.isdigit() else int(kind),
                                  retry_after=_float(opts.get("retry_after")),
                                  retry_after_ms=_float(opts.get("retry_after_ms")))
            if self._state.faults:
                return self._state.faults.popleft()
        return None

    async def _apply(self, fault: Fault) -> web.StreamResponse | None:
        """Answer with a status fault or hang; other kinds are handled by the endpoint."""
        if fault.kind == "timeout":
            assert self._closing is not None
            try:
                await asyncio.wait_for(self._closing.wait(), fault.hang)
            except TimeoutError:
                pass
            return _error(503, message="timed out")
        if fault.kind == "status":
            headers = {}
            if fault.retry_after is not None:
                headers["retry-after"] = f"{fault.retry_after:g}"
            if fault.retry_after_ms is not None:
                headers["retry-after-ms"] = f"{fault.retry_after_ms:g}"
            return _error(fault.status, message=fault.message, code=fault.code, headers=headers)
        return None

    # --- endpoints -----------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = request[_BODY]
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, message="'messages' is required")
        model = str(body.get("model", ""))
        if model.startswith("unknown"):
            return _model_not_found(model)
        fault = self._take_fault(body)
        if fault is not None:
            answered = await self._apply(fault)
            if answered is not None:
                return answered
        if self._canned is not None and fault is None:
            return await self._canned.answer(request, body, self.token_delay)
        messages = [Message.from_openai(m) for m in body["messages"]]
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        completion = builtin_chat.complete(messages, max_tokens=max_tokens,
                                           stop=body.get("stop"),
                                           response_format=body.get("response_format"))
        pieces = completion.pieces
        if fault is not None and fault.kind == "invalid_json_output":
            pieces = [_INVALID_OUTPUT]
        usage = {"prompt_tokens": completion.usage.prompt_tokens,
                 "completion_tokens": sum(count_tokens(p) for p in pieces)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if not body.get("stream"):
            if fault is not None and fault.kind == "malformed":
                return web.Response(text='{"id": "' + ident + '", "choices": [{"mess',
                                    content_type="application/json")
            return web.json_response({
                "id": ident, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "finish_reason": completion.finish_reason,
                             "message": {"role": "assistant", "content": "".join(pieces)}}],
                "usage": usage})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return {"id": ident, "object": "chat.completion.chunk", "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        await _sse(response, chunk({"role": "assistant", "content": ""}, None))
        for i, piece in enumerate(pieces):
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            if fault is not None and fault.kind == "malformed" and i == 1:
                await response.write(b'data: {"id": "' + ident.encode() + b'", "choices": [{\n\n')
                break
            if self.record:  # the time it leaves: before the write
                self.chunks_sent.append((_prompt_text(body), piece, time.monotonic()))
            await _sse(response, chunk({"content": piece}, None))
        else:
            await _sse(response, chunk({}, completion.finish_reason))
            if (body.get("stream_options") or {}).get("include_usage"):
                await _sse(response, {"id": ident, "object": "chat.completion.chunk",
                                      "created": created, "model": model, "choices": [],
                                      "usage": usage})
        if fault is not None and fault.kind == "malformed" and len(pieces) <= 1:
            await response.write(b"data: {broken\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body = request[_BODY]
        if not isinstance(body, dict) or "input" not in body:
            return _error(400, message="'input' is required")
        model = str(body.get("model", ""))
        if model.startswith("unknown"):
            return _model_not_found(model)
        fault = self._take_fault(body)
        if fault is not None:
            answered = await self._apply(fault)
            if answered is not None:
                return answered
            if fault.kind == "malformed":
                return web.Response(text='{"data": [{"embedding": [0.1, ',
                                    content_type="application/json")
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        texts = [t if isinstance(t, str) else " ".join(map(str, t)) for t in texts]
        size = int(body.get("dimensions") or self.embedding_size)
        as_base64 = body.get("encoding_format") == "base64"
        if self._canned is not None and fault is None:
            return web.Response(body=self._canned.embeddings(len(texts), size, as_base64),
                                content_type="application/json")
        vectors = _resize(hashing_embedder.embed_texts(texts), size)
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode()
                 if as_base64 else [float(x) for x in v]}
                for i, v in enumerate(vectors)]
        tokens = sum(count_tokens(t) for t in texts)
        return web.json_response({"object": "list", "data": data, "model": model,
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def _rerank(self, request: web.Request) -> web.StreamResponse:
        body = request[_BODY]
        if not isinstance(body, dict) or "query" not in body or "documents" not in body:
            return _error(400, message="'query' and 'documents' are required")
        fault = self._take_fault(body)
        if fault is not None:
            answered = await self._apply(fault)
            if answered is not None:
                return answered
            if fault.kind == "malformed":
                return web.Response(text='{"results": [{"index": 0, "relev',
                                    content_type="application/json")
        documents = [d if isinstance(d, str) else str(d.get("text", ""))
                     for d in body["documents"]]
        ranked = builtin_rerank.rerank(str(body["query"]), documents,
                                       int(body.get("top_n") or 0))
        return web.json_response({
            "id": uuid.uuid4().hex,
            "results": [{"index": i, "relevance_score": s} for i, s in ranked],
            "meta": {"billed_units": {"search_units": 1}}})

    async def _models(self, request: web.Request) -> web.StreamResponse:
        names = ["fake-gpt", "fake-embed", "gpt-4o-mini", "text-embedding-3-small"]
        return web.json_response({"object": "list", "data": [
            {"id": n, "object": "model", "created": 0, "owned_by": "fake"} for n in names]})


class _Canned:
    """The benchmark profile's fixed answer, encoded once."""

    def __init__(self, tokens: int) -> None:
        pieces = [f" w{i}" for i in range(tokens)]
        usage = {"prompt_tokens": 20, "completion_tokens": tokens, "total_tokens": 20 + tokens}
        head = {"id": "chatcmpl-canned", "object": "chat.completion", "created": 0,
                "model": "canned"}
        self.whole = json.dumps({**head, "choices": [{
            "index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "".join(pieces)}}],
            "usage": usage}).encode()
        chunk = {**head, "object": "chat.completion.chunk"}

        def event(payload: Any) -> bytes:
            return f"data: {json.dumps(payload)}\n\n".encode()

        self.events = [event({**chunk, "choices": [{"index": 0, "delta": {
            "role": "assistant", "content": ""}, "finish_reason": None}]})]
        self.events += [event({**chunk, "choices": [{"index": 0, "delta": {"content": p},
                                                     "finish_reason": None}]})
                        for p in pieces]
        self.events.append(event({**chunk, "choices": [{"index": 0, "delta": {},
                                                        "finish_reason": "stop"}]}))
        self.usage_event = event({**chunk, "choices": [], "usage": usage})
        self._embeddings: dict[tuple[int, int, bool], bytes] = {}

    def embeddings(self, count: int, size: int, as_base64: bool = False) -> bytes:
        """The same unit vector for every text (float arrays, or base64 of float32 when the
        request asked ``encoding_format: base64``, as the real API does)."""
        key = (count, size, as_base64)
        if key not in self._embeddings:
            vector: Any = [round(1.0 / size ** 0.5, 8)] * size
            if as_base64:
                vector = base64.b64encode(np.asarray(vector, "<f4").tobytes()).decode()
            self._embeddings[key] = json.dumps({
                "object": "list", "model": "canned",
                "data": [{"object": "embedding", "index": i, "embedding": vector}
                         for i in range(count)],
                "usage": {"prompt_tokens": 5 * count, "total_tokens": 5 * count}}).encode()
        return self._embeddings[key]

    async def answer(self, request: web.Request, body: dict[str, Any],
                     token_delay: float) -> web.StreamResponse:
        if not body.get("stream"):
            return web.Response(body=self.whole, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in self.events:
            if token_delay:
                await asyncio.sleep(token_delay)
            await response.write(event)
        if (body.get("stream_options") or {}).get("include_usage"):
            await response.write(self.usage_event)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


# --- helpers -----------------------------------------------------------------------------

try:
    from orjson import loads as _loads
except ImportError:  # the standard library's is fine for the tests
    _loads = json.loads


def _fault(status: int | str, **options: Any) -> Fault:
    hang = options.pop("hang", 30.0)
    if isinstance(status, str):
        kind = "invalid_json_output" if status == "invalid_json" else status
        if kind not in SPECIAL_KINDS:
            raise ValueError(f"unknown fault {status!r}; use an HTTP status or {SPECIAL_KINDS}")
        return Fault(kind=kind, hang=hang, **options)
    return Fault(kind="status", status=int(status), hang=hang, **options)


def _float(value: str | None) -> float | None:
    return float(value) if value is not None else None


def _prompt_text(body: Any) -> str:
    if not isinstance(body, Mapping):
        return ""
    parts: list[str] = []
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [str(p.get("text", "")) for p in content if isinstance(p, Mapping)]
    for key in ("input", "query"):
        value = body.get(key)
        parts += value if isinstance(value, list) and all(isinstance(v, str) for v in value) \
            else [value] if isinstance(value, str) else []
    return "\n".join(parts)


def _error(status: int, *, message: str | None = None, code: str | None = None,
           headers: Mapping[str, str] | None = None) -> web.Response:
    default_message, kind, default_code = _STATUS_ERRORS.get(
        status, ("Error.", "server_error" if status >= 500 else "invalid_request_error", None))
    return web.json_response(
        {"error": {"message": message or default_message, "type": kind,
                   "param": None, "code": code or default_code}},
        status=status, headers=dict(headers or {}))


def _model_not_found(model: str) -> web.Response:
    return _error(404, message=f"The model `{model}` does not exist or you do not have access "
                               "to it.", code="model_not_found")


async def _sse(response: web.StreamResponse, payload: Mapping[str, Any]) -> None:
    await response.write(f"data: {json.dumps(payload)}\n\n".encode())


def _resize(vectors: np.ndarray, size: int) -> np.ndarray:
    """Fold 384-d vectors into ``size`` dimensions (column i adds into i % size), renormalised."""
    if size == vectors.shape[1]:
        return vectors
    folded = np.zeros((vectors.shape[0], size), dtype=np.float32)
    np.add.at(folded, (slice(None), np.arange(vectors.shape[1]) % size), vectors)
    norms = np.linalg.norm(folded, axis=1, keepdims=True)
    folded[norms[:, 0] == 0, 0] = 1.0  # everything cancelled out: any unit vector will do
    return folded / np.linalg.norm(folded, axis=1, keepdims=True)


def spawn(*, latency: float = 0.0, canned_tokens: int = 50, embedding_size: int = 64
          ) -> tuple[subprocess.Popen[str], str]:
    """The benchmark profile in its own process: ``(process, base_url)``; kill it after."""
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--latency", str(latency),
         "--canned-tokens", str(canned_tokens), "--embedding-size", str(embedding_size),
         "--no-record"], cwd=root, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": root})
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def main() -> None:
    """Serve in this process until killed; print the base URL (for benchmarks)."""
    import argparse

    parser = argparse.ArgumentParser(description="The fake OpenAI-compatible server.")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--token-delay", type=float, default=0.0)
    parser.add_argument("--embedding-size", type=int, default=64)
    parser.add_argument("--canned-tokens", type=int, default=0)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    async def serve() -> None:
        fake = FakeOpenAI(latency=args.latency, token_delay=args.token_delay,
                          embedding_size=args.embedding_size,
                          canned_tokens=args.canned_tokens, record=not args.no_record)
        await fake.start()
        print(fake.base_url, flush=True)
        await asyncio.Event().wait()

    try:
        import uvloop
    except ImportError:
        asyncio.run(serve())
    else:
        uvloop.run(serve())


if __name__ == "__main__":
    main()
