"""Plain message and attachment types for model calls (no protobuf, no litellm).

Callers may pass ``Message`` objects or dicts shaped like them (``{"role": ..., "content": ...,
"attachments": [...]}``); :func:`coerce_messages` turns either into ``Message`` and validates.
:meth:`Message.to_openai` / :meth:`Message.from_openai` convert to and from OpenAI chat messages
(attachments become ``image_url`` / ``input_audio`` content parts).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rowforge.server.errors import InvalidArgument

ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})

_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]*)*?)(;base64)?,",
                       re.IGNORECASE)
# OpenAI's input_audio accepts a format name, not a MIME type.
_AUDIO_FORMATS = {"audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav", "audio/mpeg": "mp3",
                  "audio/mp3": "mp3", "audio/flac": "flac", "audio/ogg": "ogg",
                  "audio/webm": "webm", "audio/mp4": "m4a", "audio/aac": "aac"}


@dataclass(frozen=True)
class Attachment:
    """A file sent along with a message: raw bytes or a URL.

    Attributes:
        content_type: MIME type, e.g. ``image/png`` or ``audio/wav``.
        data: The file's bytes (preferred: sent inline as base64).
        url: Where the provider can fetch it (``https://`` or ``data:``), when there are no bytes.
        name: Optional file name, for messages only.
    """

    content_type: str
    data: bytes | None = None
    url: str | None = None
    name: str = ""

    @property
    def kind(self) -> str:
        """``image``, ``audio`` or ``file`` (from the MIME type)."""
        major = self.content_type.split("/", 1)[0].lower()
        return major if major in ("image", "audio") else "file"

    @property
    def size(self) -> int | None:
        """Size in bytes, when the bytes are known."""
        return None if self.data is None else len(self.data)

    def data_url(self) -> str:
        """The attachment as a URL: its own, or a base64 ``data:`` URL built from the bytes."""
        if self.data is None:
            return self.url or ""
        return f"data:{self.content_type};base64,{base64.b64encode(self.data).decode('ascii')}"

    def to_openai_part(self) -> dict[str, Any]:
        """An OpenAI content part: ``input_audio`` for audio bytes, ``image_url`` otherwise."""
        if self.kind == "audio" and self.data is not None:
            fmt = _AUDIO_FORMATS.get(self.content_type.lower(),
                                     self.content_type.split("/", 1)[-1].lower())
            return {"type": "input_audio",
                    "input_audio": {"data": base64.b64encode(self.data).decode("ascii"),
                                    "format": fmt}}
        return {"type": "image_url", "image_url": {"url": self.data_url()}}

    @classmethod
    def from_openai_part(cls, part: Mapping[str, Any]) -> Attachment:
        """Inverse of :meth:`to_openai_part` (``data:`` URLs are decoded back to bytes)."""
        if part.get("type") == "input_audio":
            audio = part.get("input_audio") or {}
            fmt = str(audio.get("format") or "wav")
            return cls(content_type=f"audio/{fmt}", data=_b64decode(str(audio.get("data", ""))))
        url = part.get("image_url")
        url = url.get("url", "") if isinstance(url, Mapping) else str(url or "")
        match = _DATA_URL.match(url)
        if match:
            content_type = match.group("type") or "application/octet-stream"
            return cls(content_type=content_type, data=_b64decode(url[match.end():]))
        return cls(content_type="image/*", url=url)


@dataclass(frozen=True)
class Message:
    """One chat turn.

    Attributes:
        role: ``system``, ``user``, ``assistant`` (also ``tool``/``developer``).
        content: The text.
        attachments: Images/audio sent with this turn (user turns).
    """

    role: str
    content: str = ""
    attachments: tuple[Attachment, ...] = field(default_factory=tuple)

    def to_openai(self) -> dict[str, Any]:
        """The message as OpenAI chat JSON (a content-part list when there are attachments)."""
        if not self.attachments:
            return {"role": self.role, "content": self.content}
        parts: list[dict[str, Any]] = []
        if self.content:
            parts.append({"type": "text", "text": self.content})
        parts += [a.to_openai_part() for a in self.attachments]
        return {"role": self.role, "content": parts}

    @classmethod
    def from_openai(cls, message: Mapping[str, Any]) -> Message:
        """Parse an OpenAI chat message (string content or a list of content parts)."""
        content = message.get("content")
        role = str(message.get("role", ""))
        if content is None or isinstance(content, str):
            return cls(role=role, content=content or "")
        texts: list[str] = []
        attachments: list[Attachment] = []
        for part in content:
            if part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            else:
                attachments.append(Attachment.from_openai_part(part))
        return cls(role=role, content="\n".join(texts), attachments=tuple(attachments))


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        return b""


def _coerce_attachment(item: Any, where: str) -> Attachment:
    if isinstance(item, Attachment):
        attachment = item
    elif isinstance(item, Mapping):
        data = item.get("data")
        if isinstance(data, str):  # base64 text from JSON callers
            data = _b64decode(data)
        attachment = Attachment(content_type=str(item.get("content_type") or ""), data=data,
                                url=item.get("url"), name=str(item.get("name") or ""))
    else:
        raise InvalidArgument.field(where, "must be an attachment (content_type plus data or url)")
    if not attachment.content_type or "/" not in attachment.content_type:
        raise InvalidArgument.field(f"{where}.content_type", "must be a MIME type like image/png")
    if attachment.data is None and not attachment.url:
        raise InvalidArgument.field(where, "needs data bytes or a url")
    return attachment


def coerce_messages(messages: Iterable[Message | Mapping[str, Any]]) -> list[Message]:
    """Validate and convert messages (``Message`` objects or dicts).

    Raises:
        InvalidArgument: no messages, an unknown role, non-text content or a bad attachment.
    """
    result: list[Message] = []
    for i, item in enumerate(messages):
        where = f"messages[{i}]"
        if isinstance(item, Message):
            message = item
        elif isinstance(item, Mapping):
            content = item.get("content")
            if isinstance(content, list):  # OpenAI-shaped content parts
                message = Message.from_openai(item)
            else:
                if content is not None and not isinstance(content, str):
                    raise InvalidArgument.field(f"{where}.content", "must be text")
                attachments = tuple(_coerce_attachment(a, f"{where}.attachments[{j}]")
                                    for j, a in enumerate(item.get("attachments") or ()))
                message = Message(role=str(item.get("role", "")), content=content or "",
                                  attachments=attachments)
        else:
            raise InvalidArgument.field(where, "must be a message with a role and content")
        if message.role not in ROLES:
            raise InvalidArgument.field(f"{where}.role",
                                        f"must be one of {', '.join(sorted(ROLES))}")
        result.append(message)
    if not result:
        raise InvalidArgument.field("messages", "must contain at least one message")
    return result
