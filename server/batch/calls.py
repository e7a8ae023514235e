"""One model call for one batch request: build the messages, call the model once (no retries:
the worker retries), check structured output.

The call is a whole (not streamed) completion through the provider interface: nobody watches
a batch request's tokens, and a streamed answer costs more CPU on every transport.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from rowforge.server import providers
from rowforge.server.batch.model import ContentPart, JobConfig, RequestInput
from rowforge.server.errors import Unavailable
from rowforge.server.providers import Attachment, ChatResult, Message, ModelSpec

#: Resolves a ``file://`` image to ``(bytes, content_type)``.
FileReader = Callable[[str], Awaitable[tuple[bytes, str]]]

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


_ready: set[str] = set()


async def prepare(spec: ModelSpec) -> None:
    """Get the model's transport ready (litellm's import takes seconds, in a thread) before a
    rate-limit permit is taken: every permit granted while calls waited for the import would
    reach the provider in one burst."""
    if spec.transport not in _ready:
        await providers.default_providers().start([spec])
        _ready.add(spec.transport)


async def complete(spec: ModelSpec, messages: Sequence[Message], *, temperature: float,
                   max_tokens: int, response_format: dict[str, Any] | None,
                   timeout: float) -> ChatResult:
    """One whole answer (``parsed`` holds the validated JSON of a structured request).

    Raises:
        The errors of :func:`rowforge.server.providers.chat`: ``ResourceExhausted`` (429,
        with ``retry_after``), ``Unavailable`` (5xx, timeouts, malformed responses, output that
        fails the schema), ``InvalidArgument``, ``NotFound``, ``Internal``.
    """
    return await providers.chat(spec, messages, temperature=temperature, max_tokens=max_tokens,
                                response_format=response_format, timeout=timeout)
