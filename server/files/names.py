"""File names and file URIs: what users send is cleaned or parsed strictly, never used as a path.

A file URI has the form ``file://<project_id>/<file_id>/<name>``:

* ``project_id`` is the owning project (``[A-Za-z0-9][A-Za-z0-9_-]{0,63}``);
* ``file_id`` is 32 lowercase hex digits;
* ``name`` is the sanitised file name, percent-encoded (RFC 3986, nothing left unescaped
  except unreserved characters). It is informative, but must match the stored name when given;
  ``file://<project_id>/<file_id>`` (without the name) is accepted too.

Anything else (other schemes, extra segments, ``..``, query strings, fragments) is refused. Blobs
live under their content hash, so nothing a user sends ever becomes part of a file-system path.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote, unquote

from rowforge.server.errors import InvalidArgument

MAX_NAME_CHARS = 255
"""Longest stored file name (characters); longer names keep their extension."""

SCHEME = "file://"
PROJECT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
FILE_ID_RE = re.compile(r"[0-9a-f]{32}")
_URI_RE = re.compile(
    r"file://(?P<project>[A-Za-z0-9][A-Za-z0-9_-]{0,63})/(?P<id>[0-9a-f]{32})"
    r"(?:/(?P<name>[A-Za-z0-9\-._~%]+))?")
_MAX_URI_CHARS = 4096
_EXTENSION_RE = re.compile(r"\.[A-Za-z0-9]{1,10}$")


@dataclass(frozen=True)
class FileURI:
    """A parsed file URI."""

    project_id: str
    file_id: str
    name: str | None
    """The decoded name segment, or ``None`` when the URI has none."""


def sanitise_name(raw: str, *, field: str = "name") -> str:
    """The file name to store for a user-supplied ``raw`` name.

    Keeps only the last path component (``/`` and ``\\`` both separate), drops control and
    format characters (NUL, newlines, bidi overrides), turns exotic spaces into plain ones,
    trims whitespace, normalises to NFC and caps the length at :data:`MAX_NAME_CHARS` keeping
    the extension.

    Raises:
        InvalidArgument: ``INVALID_FILE_NAME`` when nothing usable is left (``""``, ``..``).
    """
    text = "".join(_clean_char(ch) for ch in unicodedata.normalize("NFC", raw))
    base = re.split(r"[/\\]", text)[-1].strip()
    if base in {"", ".", ".."}:
        raise InvalidArgument.field(
            field, "must be a file name such as 'report.pdf' (path components are stripped)",
            reason="INVALID_FILE_NAME")
    if len(base) > MAX_NAME_CHARS:
        match = _EXTENSION_RE.search(base)
        suffix = match.group(0) if match else ""
        base = base[: MAX_NAME_CHARS - len(suffix)].rstrip() + suffix
    return base


def _clean_char(ch: str) -> str:
    category = unicodedata.category(ch)
    if category[0] == "C" or category in ("Zl", "Zp"):
        return ""  # control, format (bidi overrides), unassigned, line/paragraph separators
    return " " if category == "Zs" else ch  # exotic spaces look like spaces: make them so


def has_extension(name: str) -> bool:
    return _EXTENSION_RE.search(name) is not None


def check_project_id(project_id: str) -> str:
    """``project_id`` if it can appear in a URI (auth off lets callers pick any id).

    Raises:
        InvalidArgument: ``INVALID_PROJECT_ID``.
    """
    if not PROJECT_RE.fullmatch(project_id):
        raise InvalidArgument.field(
            "x-project-id", "use 1-64 letters, digits, '_' or '-', starting with a letter or digit",
            reason="INVALID_PROJECT_ID")
    return project_id


def build_uri(project_id: str, file_id: str, name: str) -> str:
    """The URI of a stored file (see the module docstring)."""
    return f"{SCHEME}{check_project_id(project_id)}/{file_id}/{quote(name, safe='')}"


def parse_uri(uri: str, *, field: str = "uri") -> FileURI:
    """Parse a file URI strictly.

    Raises:
        InvalidArgument: ``INVALID_FILE_URI`` for anything that is not exactly a file URI.
    """
    match = _URI_RE.fullmatch(uri) if len(uri) <= _MAX_URI_CHARS else None
    name: str | None = None
    if match is not None and match.group("name") is not None:
        try:
            name = unquote(match.group("name"), errors="strict")
        except UnicodeDecodeError:
            match = None
    if match is None:
        raise InvalidArgument.field(
            field, "must be a FileService URI: file://<project>/<file id>/<name>",
            reason="INVALID_FILE_URI", metadata={"uri": uri[:200]})
    return FileURI(match.group("project"), match.group("id"), name)
