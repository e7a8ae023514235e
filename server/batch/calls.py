"""One model call for one batch request: build the messages, call the model once (no retries:
the worker retries), check structured output.

Non-built-in models are called through ``litellm.acompletion`` *without* streaming: nobody
watches a batch request's tokens, and litellm's streaming wrapper costs about five times the
CPU of a whole answer (16 ms against 3 ms per call measured here), which would make a
64-wide batch CPU-bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from rowforge.server import providers
from rowforge.server.batch.model import ContentPart, JobConfig, RequestInput
from rowforge.server.errors import RowforgeError, Unavailable
from rowforge.server.providers import (
    Attachment,
    ChatResult,
    Message,
    ModelSpec,
    Usage,
    litellm_client,
)
from rowforge.server.providers.formats import parse_json_output

#: Resolves a ``file://`` image to ``(bytes, content_type)``.
FileReader = Callable[[str], Awaitable[tuple[bytes, str]]]

_litellm_ready = False


def response_format(request: RequestInput) -> dict[str, Any] | None:
    """The ``json_schema`` response format of a structured-output request, else ``None``."""
    if request.output_schema is None:
        return None
    return {"type": "json_schema",
            "json_schema": {"name": request.output_schema_name or "response",
                            "schema": request.output_schema, "strict": True}}


async def _attachment(part: ContentPart, read_file: FileReader | None) -> Attachment:
    uri = part.image_uri or ""
    if uri.startswith("file://"):
        if read_file is None:
            raise Unavailable("File URIs cannot be read: this server has no FileService.",
                              reason="FILES_UNAVAILABLE")
        data, content_type = await read_file(uri)
        return Attachment(content_type=part.content_type or content_type, data=data)
    return Attachment(content_type=part.content_type or "image/*", url=uri)


async def build_messages(config: JobConfig, request: RequestInput,
                         read_file: FileReader | None = None) -> list[Message]:
    """The chat messages of a request: the job's system instruction, then one user turn with
    the request's texts (joined by blank lines) and images."""
    texts = [p.text for p in request.parts if p.text is not None]
    images = [await _attachment(p, read_file) for p in request.parts if p.text is None]
    messages = [Message("system", config.system_instruction)] if config.system_instruction \
        else []
    messages.append(Message("user", "\n\n".join(texts), attachments=tuple(images)))
    return messages


async def _load_litellm() -> None:
    global _litellm_ready
    if not _litellm_ready:
        await providers.preload()  # the import takes seconds: not on the event loop
        _litellm_ready = True


async def complete(spec: ModelSpec, messages: Sequence[Message], *, temperature: float,
                   max_tokens: int, response_format: dict[str, Any] | None,
                   timeout: float) -> ChatResult:
    """One whole answer (``parsed`` holds the validated JSON of a structured request).

    Raises:
        The errors of :func:`rowforge.server.providers.chat`: ``ResourceExhausted`` (429,
        with ``retry_after``), ``Unavailable`` (5xx, timeouts, malformed responses, output that
        fails the schema), ``InvalidArgument``, ``NotFound``, ``Internal``.
    """
    if spec.is_builtin:
        return await providers.chat(spec, messages, temperature=temperature,
                                    max_tokens=max_tokens, response_format=response_format,
                                    timeout=timeout)
    await _load_litellm()
    litellm = litellm_client.load()
    kwargs = litellm_client.request_kwargs(
        spec, messages=[m.to_openai() for m in messages], temperature=temperature,
        max_tokens=max_tokens, response_format=response_format, timeout=timeout)
    try:
        # litellm enforces ``timeout`` on the HTTP call; this bounds anything around it.
        async with asyncio.timeout(timeout + 5.0):
            response = await litellm.acompletion(**kwargs)
    except (asyncio.CancelledError, RowforgeError):
        raise
    except Exception as exc:
        raise providers.map_provider_error(exc, model=spec.id) from exc
    return _result(spec, response, response_format)


def _result(spec: ModelSpec, response: Any, fmt: dict[str, Any] | None) -> ChatResult:
    choices = getattr(response, "choices", None) or []
    message = getattr(choices[0], "message", None) if choices else None
    if message is None:
        raise Unavailable(f"The provider of model {spec.id!r} sent an answer without a "
                          "message; retry later.", reason="PROVIDER_BAD_RESPONSE",
                          metadata={"model": spec.id})
    text = getattr(message, "content", None) or ""
    raw_usage = getattr(response, "usage", None)
    prompt = int(getattr(raw_usage, "prompt_tokens", 0) or 0)
    completion = int(getattr(raw_usage, "completion_tokens", 0) or 0)
    usage = Usage(prompt, completion)
    hidden = getattr(response, "_hidden_params", None)
    if isinstance(hidden, dict) and "response_cost" in hidden:
        cost = hidden["response_cost"]  # litellm priced it already (None: price unknown)
    else:
        cost = providers.cost_usd(spec, usage)
    finish = getattr(choices[0], "finish_reason", None) or "stop"
    return ChatResult(text=text, finish_reason=str(finish), usage=usage, model=spec.id,
                      cost_usd=float(cost) if cost is not None else None,
                      parsed=parse_json_output(text, fmt))
