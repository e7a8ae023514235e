"""File-type sniffing: what an upload really is, decided from its bytes.

FileService calls :func:`sniff` on the first chunk of an upload (``SNIFF_BYTES`` is enough), so
every check works on a *head*. Binary formats are recognised by their magic bytes; text formats
(valid UTF-8 without NUL bytes) take their type from the file name, then the declared MIME type,
then a light look at the content.

Rules, in order:

* no bytes at all -> ``EMPTY_FILE``;
* the name's extension or the declared MIME type claims a supported type and the content is
  another type -> ``FILE_TYPE_MISMATCH`` (a ``.png`` that is a PDF, a ``.txt`` full of binary);
  text types are interchangeable with each other (``text/plain`` declared for a ``.md`` is fine);
* binary content we do not support, with no claim to check against -> ``UNSUPPORTED_FILE_TYPE``.

Declared MIME types we do not know (and ``application/octet-stream``) are ignored: the content
decides. Text with an unknown extension (``notes.log``) is accepted as plain text.

Office Open XML (docx/pptx/xlsx) are zip archives. With ``full`` given, the archive's member
names decide; with only a head, the local file headers it contains decide (the first member is
usually ``[Content_Types].xml`` but ``word/``, ``ppt/`` or ``xl/`` members follow within the
first kilobytes); when the head shows no such member, the extension or declared type is trusted
and the document parser has the last word.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from rowforge.server.errors import InvalidArgument

Kind = Literal["document", "image", "audio"]
KINDS: tuple[Kind, ...] = ("document", "image", "audio")
"""The kinds FileService applies separate size limits to."""

SNIFF_BYTES = 64 * 1024
"""How much of the head :func:`sniff` needs (more is fine, less may miss zip members)."""

# Content-level JSON validation parses the whole text; past this size the cost is not worth it
# for a sniff and the parser reports malformed JSON anyway.
_JSON_CHECK_LIMIT = 1024 * 1024


@dataclass(frozen=True)
class FileType:
    """A supported file type."""

    extension: str
    """Canonical extension, without the dot."""
    content_type: str
    """Canonical MIME type."""
    kind: Kind
    text: bool = False
    """UTF-8 text format (types are chosen by name, not magic bytes)."""
    other_extensions: tuple[str, ...] = ()
    other_content_types: tuple[str, ...] = ()


_OOXML = "application/vnd.openxmlformats-officedocument"

FILE_TYPES: tuple[FileType, ...] = (
    FileType("png", "image/png", "image"),
    FileType("jpg", "image/jpeg", "image", other_extensions=("jpeg", "jpe"),
             other_content_types=("image/jpg", "image/pjpeg")),
    FileType("gif", "image/gif", "image"),
    FileType("webp", "image/webp", "image"),
    FileType("mp3", "audio/mpeg", "audio", other_content_types=("audio/mp3", "audio/mpeg3")),
    FileType("wav", "audio/wav", "audio", other_extensions=("wave",),
             other_content_types=("audio/x-wav", "audio/wave", "audio/vnd.wave")),
    FileType("ogg", "audio/ogg", "audio", other_extensions=("oga", "opus"),
             other_content_types=("application/ogg", "audio/opus")),
    FileType("flac", "audio/flac", "audio", other_content_types=("audio/x-flac",)),
    FileType("m4a", "audio/mp4", "audio", other_content_types=("audio/x-m4a", "audio/m4a")),
    FileType("pdf", "application/pdf", "document", other_content_types=("application/x-pdf",)),
    FileType("docx", f"{_OOXML}.wordprocessingml.document", "document"),
    FileType("pptx", f"{_OOXML}.presentationml.presentation", "document"),
    FileType("xlsx", f"{_OOXML}.spreadsheetml.sheet", "document"),
    FileType("txt", "text/plain", "document", text=True, other_extensions=("text",)),
    FileType("md", "text/markdown", "document", text=True, other_extensions=("markdown",),
             other_content_types=("text/x-markdown",)),
    FileType("csv", "text/csv", "document", text=True,
             other_content_types=("application/csv",)),
    FileType("tsv", "text/tab-separated-values", "document", text=True,
             other_content_types=("text/tsv",)),
    FileType("json", "application/json", "document", text=True,
             other_content_types=("text/json",)),
    FileType("jsonl", "application/jsonl", "document", text=True, other_extensions=("ndjson",),
             other_content_types=("application/x-ndjson", "application/x-jsonlines",
                                  "application/jsonlines", "application/ndjson")),
    FileType("html", "text/html", "document", text=True, other_extensions=("htm", "xhtml"),
             other_content_types=("application/xhtml+xml",)),
    FileType("xml", "application/xml", "document", text=True, other_content_types=("text/xml",)),
)

_BY_EXTENSION = {ext: t for t in FILE_TYPES for ext in (t.extension, *t.other_extensions)}
_BY_CONTENT_TYPE = {ct: t for t in FILE_TYPES for ct in (t.content_type, *t.other_content_types)}
_T = {t.extension: t for t in FILE_TYPES}

@dataclass(frozen=True)
class Sniffed:
    """What the content is."""

    content_type: str
    kind: Kind
    extension: str
    """Canonical extension without the dot (``jpeg`` kept when the name says so)."""


@dataclass(frozen=True)
class _Foreign:
    """Recognised content that we do not support, named for the error message."""

    label: str


def file_type_for(content_type: str) -> FileType | None:
    """The supported type of a MIME type (aliases and parameters allowed), or ``None``."""
    return _BY_CONTENT_TYPE.get(_normalise_mime(content_type))


def file_type_for_name(filename: str) -> FileType | None:
    """The supported type a file name's extension claims, or ``None``."""
    return _BY_EXTENSION.get(_extension(filename))


def kind_of(content_type: str) -> Kind:
    """The kind (``document``, ``image`` or ``audio``) of a supported MIME type.

    Raises:
        InvalidArgument: ``UNSUPPORTED_FILE_TYPE`` for a type we do not store.
    """
    found = file_type_for(content_type)
    if found is None:
        raise InvalidArgument(
            f"Unsupported content type {content_type!r}.",
            reason="UNSUPPORTED_FILE_TYPE",
            metadata={"contentType": content_type},
        )
    return found.kind


def sniff(head: bytes, filename: str, declared_type: str = "", *,
          full: bytes | None = None) -> Sniffed:
    """Decides a file's type from its content, checked against its name and declared type.

    Args:
        head: The first bytes of the file (``SNIFF_BYTES`` is enough; it may be the whole file).
        filename: The file's name; only its extension is used.
        declared_type: The MIME type the client declared, if any.
        full: The whole file, when available: zip members and small JSON are then checked
            exactly instead of from the head.

    Returns:
        The detected type. For text formats the extension (or declared type) picks among the
        text types; for binary formats the content decides.

    Raises:
        InvalidArgument: ``EMPTY_FILE``, ``FILE_TYPE_MISMATCH`` or ``UNSUPPORTED_FILE_TYPE``
            (see the module docstring).
    """
    data = full if full is not None else head
    if not data:
        raise InvalidArgument(f"{_display(filename)} is empty.", reason="EMPTY_FILE",
                              metadata={"filename": filename})
    claimed = file_type_for_name(filename)
    declared = file_type_for(declared_type)
    complete = full is not None

    detected = _detect_binary(data, complete=complete)
    if detected == "zip":
        detected = _resolve_zip(data, complete, claimed, declared)
    if detected is None:
        detected = _detect_text(data, complete, filename, claimed, declared)

    if isinstance(detected, _Foreign):
        claim = claimed or declared
        if claim is not None:
            raise _mismatch(filename, claim.content_type, detected.label)
        raise InvalidArgument(
            f"{_display(filename)}: unsupported file type ({detected.label}).",
            reason="UNSUPPORTED_FILE_TYPE",
            metadata={"filename": filename, "detectedType": detected.label},
        )
    assert isinstance(detected, FileType)
    if claimed is not None and not _compatible(claimed, detected):
        raise _mismatch(filename, claimed.content_type, detected.content_type)
    if declared is not None and not _compatible(declared, detected):
        raise _mismatch(filename, _normalise_mime(declared_type), detected.content_type)

    extension = detected.extension
    if claimed is detected and _extension(filename) == "jpeg":
        extension = "jpeg"
    return Sniffed(detected.content_type, detected.kind, extension)


# --- binary formats -----------------------------------------------------------------------------

_UNSUPPORTED_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "legacy Microsoft Office (doc/xls/ppt)"),
    (b"\x1f\x8b", "gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "7z archive"),
    (b"Rar!\x1a\x07", "rar archive"),
    (b"\x7fELF", "ELF executable"),
    (b"II*\x00", "tiff image"),
    (b"MM\x00*", "tiff image"),
    (b"{\\rtf", "rich text format (rtf)"),
)


def _detect_binary(data: bytes, *, complete: bool) -> FileType | _Foreign | Literal["zip"] | None:
    """Magic-byte detection; ``None`` means "no known signature" (maybe text)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _T["png"]
    if data.startswith(b"\xff\xd8\xff"):
        return _T["jpg"]
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return _T["gif"]
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _T["webp"]
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return _T["wav"]
    if data[:4] == b"OggS":
        return _T["ogg"]
    if data[:4] == b"fLaC":
        return _T["flac"]
    if data[4:8] == b"ftyp":
        # ISO base media: the brand tells audio-only M4A from video.
        return _T["m4a"] if data[8:12] in (b"M4A ", b"M4B ", b"M4P ") else _Foreign("mp4 video")
    if data[:3] == b"ID3" or _is_mpeg_audio_frame(data):
        return _T["mp3"]
    # Readers accept the PDF header anywhere in the first kilobyte (some generators prepend junk).
    if b"%PDF-" in data[:1024]:
        return _T["pdf"]
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    for magic, label in _UNSUPPORTED_MAGIC:
        if data.startswith(magic):
            return _Foreign(label)
    return None


def _is_mpeg_audio_frame(data: bytes) -> bool:
    """An MPEG-1/2 audio frame header: 11 sync bits, a valid version and a non-reserved layer."""
    if len(data) < 2 or data[0] != 0xFF or data[1] & 0xE0 != 0xE0:
        return False
    version = (data[1] >> 3) & 0b11
    layer = (data[1] >> 1) & 0b11
    # Layer 0 is reserved (and is what ADTS AAC uses); version 1 is reserved.
    return layer != 0 and version != 1


_OOXML_PREFIXES = ((b"word/", "docx"), (b"ppt/", "pptx"), (b"xl/", "xlsx"))
_LOCAL_HEADER = re.compile(rb"PK\x03\x04.{22}(..)..", re.DOTALL)


def _resolve_zip(data: bytes, complete: bool, claimed: FileType | None,
                 declared: FileType | None) -> FileType | _Foreign:
    names: list[bytes] | None = None
    if complete:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                names = [n.encode("utf-8", "replace") for n in archive.namelist()]
        except (zipfile.BadZipFile, ValueError, OSError, EOFError):
            names = None  # damaged archive: fall back to the head; the parser reports damage
    exact = names is not None
    if names is None:
        names = _local_member_names(data[:SNIFF_BYTES])
    for name in names:
        for prefix, extension in _OOXML_PREFIXES:
            if name.startswith(prefix):
                return _T[extension]
    if not exact:
        for claim in (claimed, declared):
            if claim is not None and claim.extension in ("docx", "pptx", "xlsx"):
                return claim
    return _Foreign("zip archive")


def _local_member_names(head: bytes) -> list[bytes]:
    """Member names from the zip local file headers found in ``head``."""
    names = []
    for match in _LOCAL_HEADER.finditer(head):
        length = int.from_bytes(match.group(1), "little")
        start = match.end()
        names.append(head[start:start + length])
    return names


# --- text formats -------------------------------------------------------------------------------

def _detect_text(data: bytes, complete: bool, filename: str, claimed: FileType | None,
                 declared: FileType | None) -> FileType | _Foreign:
    text = _decode_text(data, complete)
    if text is None:
        return _Foreign("binary data")
    if claimed is not None and not claimed.text:
        raise _mismatch(filename, claimed.content_type, "text")
    chosen = next((t for t in (claimed, declared) if t is not None and t.text), None)
    if chosen is None:
        chosen = _guess_text_type(text, complete)
    problem = _text_problem(chosen, text, complete)
    if problem:
        raise _mismatch(filename, chosen.content_type, problem)
    return chosen


def _decode_text(data: bytes, complete: bool) -> str | None:
    """The text of ``data`` if it is UTF-8 without NULs (a head may end mid-character)."""
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # A head cut inside a multi-byte character only fails in its last 3 bytes.
        truncated = not complete and exc.reason == "unexpected end of data" \
            and exc.start >= len(data) - 3
        return data[:exc.start].decode("utf-8-sig") if truncated else None


def _guess_text_type(text: str, complete: bool) -> FileType:
    start = text.lstrip()[:256].lower()
    if start.startswith(("<!doctype html", "<html")):
        return _T["html"]
    if start.startswith("<?xml"):
        return _T["xml"]
    if start[:1] in ("{", "[") and complete and len(text) <= _JSON_CHECK_LIMIT:
        try:
            json.loads(text)
        except ValueError:
            pass
        else:
            return _T["json"]
    return _T["txt"]


_JSON_START = tuple('{["-0123456789tfn')


def _text_problem(chosen: FileType, text: str, complete: bool) -> str:
    """Why ``text`` cannot be ``chosen`` (a light check), or ``""``."""
    stripped = text.lstrip()
    if not stripped:
        return ""  # blank text: the parser reports an empty document
    if chosen.extension == "json":
        if not stripped.startswith(_JSON_START):
            return "text that is not JSON"
        if complete and len(text) <= _JSON_CHECK_LIMIT:
            try:
                json.loads(text)
            except ValueError as exc:
                return f"text that is not valid JSON ({exc})"
    elif chosen.extension == "jsonl":
        first, newline, _ = stripped.partition("\n")
        if not first.lstrip().startswith(_JSON_START):
            return "text that is not JSON Lines"
        if newline or complete:
            try:
                json.loads(first)
            except ValueError as exc:
                return f"text that is not JSON Lines (line 1: {exc})"
    elif chosen.extension == "xml" and not stripped.startswith("<"):
        return "text that is not XML"
    return ""


# --- helpers ------------------------------------------------------------------------------------

def _compatible(claim: FileType, detected: FileType) -> bool:
    return claim is detected or (claim.text and detected.text)


def _mismatch(filename: str, declared: str, detected: str) -> InvalidArgument:
    return InvalidArgument(
        f"{_display(filename)} is declared as {declared} but its content is {detected}.",
        reason="FILE_TYPE_MISMATCH",
        metadata={"filename": filename, "declaredType": declared, "detectedType": detected},
    )


def _normalise_mime(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _extension(filename: str) -> str:
    return PurePosixPath(filename.replace("\\", "/")).suffix.lower().lstrip(".")


def _display(filename: str) -> str:
    return repr(filename) if filename else "The file"
