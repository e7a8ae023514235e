"""Document parsing: the bytes of an uploaded file become a title and text sections.

Pure: no storage, no protobuf. CPU-bound, so async callers run it in a thread
(``await asyncio.to_thread(parse_document, ...)``).

Per type:

* txt, md: the UTF-8 text (a BOM is dropped, newlines normalised), one section. The md title is
  its first heading; headings stay in the text.
* csv, tsv: the first row is the header; every further non-empty row is one record rendered as
  ``column: value`` lines (empty cells left out). csv dialects are sniffed.
* json: a top-level array gives one record per element. An object gives one record, unless its
  rendering is longer than ``JSON_OBJECT_SPLIT_CHARS``: then one record per key, and a key holding
  an array gives one record per element (``key[i]`` on the first line). Objects render as
  ``key: value`` lines with nested values as compact JSON; scalars as themselves.
* jsonl: one record per non-blank line, rendered like json elements.
* html: the visible text (script/style/template dropped; blocks separated by blank lines).
* xml: the text content of all elements, one line per text node.
* pdf: one section per page with text, ``page`` numbered from 1.
* docx: paragraphs and tables in body order, one section. pptx: one section per slide with text
  (notes included), ``page`` = slide number. xlsx: one record per row under the sheet's first
  non-empty row as header, the sheet name in the record.

Titles come from the document's metadata, then its first heading or title element, then the
file name's stem.

Failures are ``InvalidArgument`` with one of the reasons below; no parser exception escapes.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import PurePosixPath
from typing import Any

from rowforge.server.errors import InvalidArgument
from rowforge.server.files.sniff import file_type_for, file_type_for_name

EMPTY_DOCUMENT = "EMPTY_DOCUMENT"
"""The file holds no text (blank, header-only, or a scanned PDF without a text layer)."""
CORRUPT_FILE = "CORRUPT_FILE"
"""The file cannot be read as its type (damaged, truncated, invalid UTF-8/JSON/XML)."""
UNSUPPORTED_FILE_TYPE = "UNSUPPORTED_FILE_TYPE"
"""No parser for this type."""
ENCRYPTED_DOCUMENT = "ENCRYPTED_DOCUMENT"
"""A password-protected PDF that an empty password does not open."""
UNSAFE_DOCUMENT = "UNSAFE_DOCUMENT"
"""Refused for safety: XML entity declarations/external references, or a zip bomb."""

JSON_OBJECT_SPLIT_CHARS = 20_000
"""A JSON object whose rendering is longer than this is split per key."""

# Office files are zip archives; refuse those that would inflate past this (zip bombs).
MAX_UNCOMPRESSED_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class Section:
    """A piece of a document: free text, or one whole record (a csv row, a json element)."""

    text: str
    page: int | None = None
    """1-based page (pdf) or slide (pptx) number; ``None`` when the format has no pages."""
    is_record: bool = False
    """A record is kept whole by the chunker."""


@dataclass(frozen=True)
class ParsedDocument:
    """A document's title and its non-empty sections, in reading order."""

    title: str
    sections: list[Section] = field(default_factory=list)

    @property
    def page_count(self) -> int:
        """The highest page number seen (0 when the document is not paged)."""
        return max((s.page or 0 for s in self.sections), default=0)


def parse_document(data: bytes, *, filename: str, content_type: str) -> ParsedDocument:
    """Parses a document into its title and text sections.

    Args:
        data: The whole file.
        filename: The file's name (for the fallback title, and the type when ``content_type``
            is empty or generic).
        content_type: The sniffed MIME type (see ``rowforge.server.files.sniff``).

    Returns:
        The title and at least one non-blank section.

    Raises:
        InvalidArgument: ``EMPTY_DOCUMENT``, ``CORRUPT_FILE``, ``UNSUPPORTED_FILE_TYPE``,
            ``ENCRYPTED_DOCUMENT`` or ``UNSAFE_DOCUMENT``, with ``filename`` in the metadata.
    """
    file_type = file_type_for(content_type) or file_type_for_name(filename)
    parser = _PARSERS.get(file_type.extension) if file_type else None
    if parser is None or file_type is None:
        raise InvalidArgument(
            f"{_display(filename)}: cannot extract text from {content_type or 'this'} files.",
            reason=UNSUPPORTED_FILE_TYPE,
            metadata={"filename": filename, "contentType": content_type},
        )
    if not data:
        raise _empty(filename)
    try:
        title, sections = parser(data, filename)
    except InvalidArgument:
        raise
    except _ParseFailure as exc:
        raise InvalidArgument(f"{_display(filename)}: {exc.message}", reason=exc.reason,
                              metadata={"filename": filename, **exc.metadata}) from exc
    except MemoryError:
        raise
    except Exception as exc:  # third-party parsers raise anything on damaged input
        raise InvalidArgument(
            f"{_display(filename)} is damaged or not a valid {file_type.extension} file "
            f"({type(exc).__name__}: {_short(exc)}).",
            reason=CORRUPT_FILE,
            metadata={"filename": filename},
        ) from exc
    kept = [Section(text, s.page, s.is_record) for s in sections if (text := _tidy(s.text))]
    if not kept:
        raise _empty(filename)
    return ParsedDocument(title=_tidy_title(title) or _stem(filename), sections=kept)


class _ParseFailure(Exception):
    """Raised inside the parsers; ``parse_document`` adds the file name."""

    def __init__(self, message: str, reason: str = CORRUPT_FILE, **metadata: Any) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.metadata = metadata


_Parsed = tuple[str, list[Section]]


# --- plain text ---------------------------------------------------------------------------------

def _decode(data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _ParseFailure(f"the text is not valid UTF-8 (byte offset {exc.start}).",
                            offset=exc.start) from None
    if "\x00" in text:
        raise _ParseFailure("the text contains NUL bytes (binary content?).")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _parse_txt(data: bytes, filename: str) -> _Parsed:
    return _stem(filename), [Section(_decode(data))]


_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_SETEXT_HEADING = re.compile(r"^ {0,3}(\S[^\n]*)\n {0,3}(=+|-+)[ \t]*$", re.MULTILINE)


def _parse_md(data: bytes, filename: str) -> _Parsed:
    text = _decode(data)
    headings = [(m.start(), len(m.group(1)), m.group(2)) for m in _ATX_HEADING.finditer(text)]
    headings += [(m.start(), 1 if m.group(2)[0] == "=" else 2, m.group(1))
                 for m in _SETEXT_HEADING.finditer(text)]
    # The highest-level heading wins, the first one among equals.
    title = min(headings, key=lambda h: (h[1], h[0]))[2] if headings else ""
    return title, [Section(text)]


# --- records: csv, tsv, json, jsonl -------------------------------------------------------------

def _parse_csv(data: bytes, filename: str) -> _Parsed:
    text = _decode(data)
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(
            text[:64 * 1024], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel  # one column, or too little to tell: the standard dialect
    return _stem(filename), _table_records(text, dialect)


def _parse_tsv(data: bytes, filename: str) -> _Parsed:
    return _stem(filename), _table_records(_decode(data), csv.excel_tab)


def _table_records(text: str, dialect: type[csv.Dialect] | csv.Dialect) -> list[Section]:
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    try:
        rows = [row for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise _ParseFailure(f"line {reader.line_num}: {exc}.", line=reader.line_num) from None
    if not rows:
        return []
    header, *body = rows
    return [Section(_render_row(header, row), is_record=True) for row in body]


def _render_row(header: Iterable[Any], row: Iterable[Any], first_line: str = "") -> str:
    names = [str(h).strip() if h is not None else "" for h in header]
    lines = [first_line] if first_line else []
    for i, value in enumerate(row):
        text = _cell_text(value)
        if text:
            name = names[i] if i < len(names) and names[i] else f"column {i + 1}"
            lines.append(f"{name}: {text}")
    return "\n".join(lines)


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _parse_json(data: bytes, filename: str) -> _Parsed:
    value = _load_json(_decode(data))
    title = ""
    if isinstance(value, dict) and isinstance(value.get("title"), str):
        title = value["title"]
    if isinstance(value, list):
        records = [_render_json(v) for v in value]
    elif isinstance(value, dict):
        whole = _render_json(value)
        records = [whole] if len(whole) <= JSON_OBJECT_SPLIT_CHARS else list(_split_object(value))
    else:
        records = [_render_json(value)]
    return title, [Section(r, is_record=True) for r in records]


def _split_object(value: dict[str, Any]) -> Iterator[str]:
    for key, item in value.items():
        if isinstance(item, list):
            for i, element in enumerate(item):
                yield f"{key}[{i}]\n{_render_json(element)}"
        else:
            yield _render_json({key: item})


def _parse_jsonl(data: bytes, filename: str) -> _Parsed:
    records = []
    for number, line in enumerate(_decode(data).split("\n"), start=1):
        if line.strip():
            records.append(Section(_render_json(_load_json(line, line=number)), is_record=True))
    return _stem(filename), records


def _load_json(text: str, line: int | None = None) -> Any:
    where = f"line {line}: " if line is not None else ""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        position = f"column {exc.colno}" if line is not None else \
            f"line {exc.lineno} column {exc.colno}"
        raise _ParseFailure(f"{where}invalid JSON at {position}: {exc.msg}.",
                            line=line if line is not None else exc.lineno) from None
    except RecursionError:
        raise _ParseFailure(f"{where}JSON nested too deeply.") from None


def _render_json(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return "\n".join(f"{k}: {_json_scalar(v)}" for k, v in value.items()
                         if v is not None and v != "")
    return _json_scalar(value)


def _json_scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# --- markup: html, xml --------------------------------------------------------------------------

_SKIPPED_TAGS = ("script", "style", "noscript", "template", "title", "svg", "iframe", "object")
_BLOCK_TAGS = ("address", "article", "aside", "blockquote", "dd", "details", "div", "dl", "dt",
               "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
               "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "summary",
               "table", "tr", "ul", "caption")
# Processing instructions carry no visible text, and an `<?xml ...?>` one makes BeautifulSoup
# warn that XHTML looks like XML.
_PROCESSING_INSTRUCTION = re.compile(r"<\?.*?\?>", re.DOTALL)


def _parse_html(data: bytes, filename: str) -> _Parsed:
    from bs4 import BeautifulSoup, CData, NavigableString, Tag

    markup = _PROCESSING_INSTRUCTION.sub("", _decode(data))
    if "<" not in markup:
        # No markup at all: plain text (and BeautifulSoup would warn it looks like a path).
        return "", [Section(markup)]
    soup = BeautifulSoup(markup, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    if not title and (h1 := soup.find("h1")) is not None:
        title = h1.get_text(" ", strip=True)
    for tag in soup.find_all(_SKIPPED_TAGS):
        tag.decompose()
    for tag in soup.find_all(True):
        if not isinstance(tag, Tag):
            continue
        if tag.name == "br":
            tag.replace_with("\n")
        elif tag.name in ("td", "th"):
            if tag.find_previous_sibling(("td", "th")) is not None:
                tag.insert_before(" | ")
        elif tag.name in _BLOCK_TAGS:
            tag.insert_before("\n\n")
            tag.insert_after("\n\n")
    parts = []
    for string in soup.find_all(string=True):
        if type(string) not in (NavigableString, CData):
            continue  # comments, doctype, declarations
        text = str(string)
        if text in ("\n", "\n\n", " | ") or string.find_parent("pre") is not None:
            parts.append(text)
        else:
            parts.append(re.sub(r"\s+", " ", text))
    lines = "".join(parts).split("\n")
    return title, [Section("\n".join(line.strip() for line in lines))]


def _parse_xml(data: bytes, filename: str) -> _Parsed:
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import ParseError, fromstring

    try:
        root = fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise _ParseFailure(f"XML entity declarations and external references are refused "
                            f"({type(exc).__name__}).", reason=UNSAFE_DOCUMENT) from None
    except ParseError as exc:
        raise _ParseFailure(f"invalid XML ({exc}).") from None
    title = ""
    for element in root.iter():
        if isinstance(element.tag, str) and element.tag.rsplit("}", 1)[-1].lower() == "title":
            title = "".join(element.itertext()).strip()
            if title:
                break
    lines = (t.strip() for t in root.itertext())
    return title, [Section("\n".join(t for t in lines if t))]


# --- pdf ----------------------------------------------------------------------------------------

def _parse_pdf(data: bytes, filename: str) -> _Parsed:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not _decrypt_with_empty_password(reader):
            raise _ParseFailure("the PDF is password-protected; upload it without a password.",
                                reason=ENCRYPTED_DOCUMENT)
        title = (reader.metadata.title if reader.metadata else None) or ""
        sections = [Section(page.extract_text() or "", page=number)
                    for number, page in enumerate(reader.pages, start=1)]
    except (FileNotDecryptedError, DependencyError):
        raise _ParseFailure("the PDF is password-protected; upload it without a password.",
                            reason=ENCRYPTED_DOCUMENT) from None
    except LimitReachedError as exc:
        raise _ParseFailure(f"the PDF inflates past a safety limit ({exc}).",
                            reason=UNSAFE_DOCUMENT) from None
    if not any(s.text.strip() for s in sections):
        raise _ParseFailure("the PDF has no extractable text (scanned pages need OCR first).",
                            reason=EMPTY_DOCUMENT, pageCount=len(sections))
    return str(title), sections


def _decrypt_with_empty_password(reader: Any) -> bool:
    """Many PDFs are encrypted only against editing and open with an empty password."""
    from pypdf import PasswordType

    return reader.decrypt("") != PasswordType.NOT_DECRYPTED


# --- office: docx, pptx, xlsx -------------------------------------------------------------------

def _open_office_zip(data: bytes) -> None:
    """Checks the archive before a parser inflates it: readable, and not a zip bomb."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            total = sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise _ParseFailure(f"the archive is truncated or damaged ({_short(exc)}).") from None
    if total > MAX_UNCOMPRESSED_BYTES:
        raise _ParseFailure(
            f"the archive inflates to {total} bytes, more than the {MAX_UNCOMPRESSED_BYTES} "
            "allowed.", reason=UNSAFE_DOCUMENT, uncompressedBytes=total)


def _parse_docx(data: bytes, filename: str) -> _Parsed:
    import docx
    from docx.table import Table

    _open_office_zip(data)
    document = docx.Document(io.BytesIO(data))
    title = document.core_properties.title or ""
    blocks: list[Any] = []
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            blocks.extend(" | ".join(_unique_cells(row.cells)) for row in block.rows)
            continue
        text = block.text
        style = block.style.name if block.style is not None else ""
        if not title and style in ("Title", "Heading 1") and text.strip():
            title = text
        blocks.append(text)
    return title, [Section("\n\n".join(b for b in blocks if b.strip()))]


def _unique_cells(cells: Iterable[Any]) -> list[str]:
    # Merged cells repeat the same cell object across the span; keep it once.
    seen: list[Any] = []
    texts = []
    for cell in cells:
        if any(cell._tc is s._tc for s in seen):
            continue
        seen.append(cell)
        texts.append(cell.text.strip())
    return texts


def _parse_pptx(data: bytes, filename: str) -> _Parsed:
    from pptx import Presentation

    _open_office_zip(data)
    presentation = Presentation(io.BytesIO(data))
    title = presentation.core_properties.title or ""
    sections = []
    for number, slide in enumerate(presentation.slides, start=1):
        texts = list(_shape_texts(slide.shapes))
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            notes = slide.notes_slide.notes_text_frame.text.strip()
            if notes:
                texts.append(f"Notes: {notes}")
        if not title and slide.shapes.title is not None and slide.shapes.title.has_text_frame:
            title = slide.shapes.title.text_frame.text
        sections.append(Section("\n\n".join(t for t in texts if t.strip()), page=number))
    return title, sections


def _shape_texts(shapes: Iterable[Any]) -> Iterator[str]:
    for shape in shapes:
        if getattr(shape, "shapes", None) is not None:  # a group
            yield from _shape_texts(shape.shapes)
        elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            yield shape.text_frame.text
        elif getattr(shape, "has_table", False) and shape.has_table:
            for row in shape.table.rows:
                yield " | ".join(cell.text.strip() for cell in row.cells)


def _parse_xlsx(data: bytes, filename: str) -> _Parsed:
    import openpyxl

    _open_office_zip(data)
    workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        title = workbook.properties.title or ""
        sections = []
        for sheet in workbook.worksheets:
            header: tuple[Any, ...] | None = None
            for row in sheet.iter_rows(values_only=True):
                if not any(_cell_text(v) for v in row):
                    continue
                if header is None:
                    header = row
                    continue
                text = _render_row(header, row, first_line=f"sheet: {sheet.title}")
                sections.append(Section(text, is_record=True))
    finally:
        workbook.close()
    return title, sections


_PARSERS: dict[str, Callable[[bytes, str], _Parsed]] = {
    "txt": _parse_txt,
    "md": _parse_md,
    "csv": _parse_csv,
    "tsv": _parse_tsv,
    "json": _parse_json,
    "jsonl": _parse_jsonl,
    "html": _parse_html,
    "xml": _parse_xml,
    "pdf": _parse_pdf,
    "docx": _parse_docx,
    "pptx": _parse_pptx,
    "xlsx": _parse_xlsx,
}


# --- helpers ------------------------------------------------------------------------------------

def _tidy(text: str) -> str:
    """Trailing spaces off every line, at most one blank line in a row, no outer blank lines."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _tidy_title(title: str) -> str:
    return " ".join(title.split())[:1000]


def _stem(filename: str) -> str:
    return PurePosixPath(filename.replace("\\", "/")).stem or "Untitled"


def _display(filename: str) -> str:
    return repr(filename) if filename else "The file"


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _empty(filename: str) -> InvalidArgument:
    return InvalidArgument(f"{_display(filename)} has no text to index.", reason=EMPTY_DOCUMENT,
                           metadata={"filename": filename})
