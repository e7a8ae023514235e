"""File-type sniffing: magic bytes, text types, and the refusals FileService relies on."""

from __future__ import annotations

import io
import json
import random
import zipfile

import pytest

from rowforge.server.errors import InvalidArgument
from rowforge.server.files.sniff import FILE_TYPES, KINDS, SNIFF_BYTES, Sniffed, kind_of, sniff

OOXML = "application/vnd.openxmlformats-officedocument"

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(32)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(32)
GIF = b"GIF89a\x01\x00\x01\x00" + bytes(16)
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(16)
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(16)
MP3_ID3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(16)
MP3_FRAME = b"\xff\xfb\x90\x64" + bytes(32)
OGG = b"OggS\x00\x02" + bytes(32)
FLAC = b"fLaC\x00\x00\x00\x22" + bytes(32)
M4A = b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00" + bytes(16)
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _ooxml(folder: str) -> bytes:
    # Real Office files put [Content_Types].xml first, then the rels, then the parts.
    return _zip({"[Content_Types].xml": b"<Types/>", "_rels/.rels": b"<Relationships/>",
                 f"{folder}/main.xml": b"<doc/>"})


@pytest.mark.parametrize(
    ("data", "filename", "content_type", "kind", "extension"),
    [
        (PNG, "a.png", "image/png", "image", "png"),
        (JPEG, "a.jpg", "image/jpeg", "image", "jpg"),
        (JPEG, "a.JPEG", "image/jpeg", "image", "jpeg"),
        (GIF, "a.gif", "image/gif", "image", "gif"),
        (b"GIF87a" + bytes(8), "a.gif", "image/gif", "image", "gif"),
        (WEBP, "a.webp", "image/webp", "image", "webp"),
        (WAV, "a.wav", "audio/wav", "audio", "wav"),
        (MP3_ID3, "a.mp3", "audio/mpeg", "audio", "mp3"),
        (MP3_FRAME, "a.mp3", "audio/mpeg", "audio", "mp3"),
        (b"\xff\xf3\x90\x64" + bytes(8), "a.mp3", "audio/mpeg", "audio", "mp3"),
        (OGG, "a.ogg", "audio/ogg", "audio", "ogg"),
        (FLAC, "a.flac", "audio/flac", "audio", "flac"),
        (M4A, "a.m4a", "audio/mp4", "audio", "m4a"),
        (PDF, "a.pdf", "application/pdf", "document", "pdf"),
        (_ooxml("word"), "a.docx", f"{OOXML}.wordprocessingml.document", "document", "docx"),
        (_ooxml("ppt"), "a.pptx", f"{OOXML}.presentationml.presentation", "document", "pptx"),
        (_ooxml("xl"), "a.xlsx", f"{OOXML}.spreadsheetml.sheet", "document", "xlsx"),
        (b"hello", "a.txt", "text/plain", "document", "txt"),
        (b"# Title\n", "a.md", "text/markdown", "document", "md"),
        (b"a,b\n1,2\n", "a.csv", "text/csv", "document", "csv"),
        (b"a\tb\n1\t2\n", "a.tsv", "text/tab-separated-values", "document", "tsv"),
        (b'{"a": 1}', "a.json", "application/json", "document", "json"),
        (b'{"a": 1}\n{"a": 2}\n', "a.jsonl", "application/jsonl", "document", "jsonl"),
        (b"<html><body>x</body></html>", "a.html", "text/html", "document", "html"),
        (b"<?xml version='1.0'?><r/>", "a.xml", "application/xml", "document", "xml"),
        ("\ufeffcafé ☕".encode(), "a.txt", "text/plain", "document", "txt"),
    ],
)
def test_sniffs_supported_types_from_content(
    data: bytes, filename: str, content_type: str, kind: str, extension: str
) -> None:
    assert sniff(data, filename) == Sniffed(content_type, kind, extension)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (PNG, "image/png"),
        (MP3_ID3, "audio/mpeg"),
        (PDF, "application/pdf"),
        (_ooxml("xl"), f"{OOXML}.spreadsheetml.sheet"),
        (b"plain words", "text/plain"),
        (b"<!DOCTYPE html><html></html>", "text/html"),
        (b"<?xml version='1.0'?><r/>", "application/xml"),
    ],
)
def test_content_decides_when_the_name_has_no_known_extension(data: bytes, expected: str) -> None:
    assert sniff(data, "upload").content_type == expected
    assert sniff(data, "upload.bin").content_type == expected


def test_json_without_extension_is_recognised_only_when_it_parses() -> None:
    assert sniff(b"", "x", full=b'[1, 2]').content_type == "application/json"
    assert sniff(b"", "x", full=b"[1, 2").content_type == "text/plain"


def test_text_takes_its_type_from_the_declared_type_without_extension() -> None:
    assert sniff(b"a,b\n", "upload", "text/csv; charset=utf-8").content_type == "text/csv"


def test_text_types_are_interchangeable_between_name_and_declared_type() -> None:
    assert sniff(b"# x", "notes.md", "text/plain").content_type == "text/markdown"


def test_declared_alias_is_accepted() -> None:
    assert sniff(JPEG, "a.jpg", "image/jpg").content_type == "image/jpeg"
    assert sniff(WAV, "a.wav", "audio/x-wav").content_type == "audio/wav"


def test_unknown_declared_type_is_ignored() -> None:
    assert sniff(PNG, "a.png", "application/octet-stream").content_type == "image/png"
    assert sniff(PNG, "a.png", "application/x-whatever").content_type == "image/png"


def _raises(reason: str, *args: object, **kwargs: object) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        sniff(*args, **kwargs)  # type: ignore[arg-type]
    assert caught.value.reason == reason, caught.value.message
    return caught.value


def test_png_that_is_a_pdf_is_a_mismatch_naming_both_types() -> None:
    error = _raises("FILE_TYPE_MISMATCH", PDF, "photo.png")
    assert "image/png" in error.message and "application/pdf" in error.message
    assert error.metadata == {"filename": "photo.png", "declaredType": "image/png",
                              "detectedType": "application/pdf"}


@pytest.mark.parametrize(
    ("data", "filename"),
    [
        (b"just text", "photo.png"),
        (JPEG, "photo.png"),
        (PNG, "song.mp3"),
        (WAV, "image.webp"),  # same RIFF container, other format
        (WEBP, "song.wav"),
        (PNG, "doc.pdf"),
        (bytes(range(256)), "notes.txt"),  # binary garbage named .txt
        (b"\x00\x01\x02garbage", "data.csv"),
        (b"caf\xe9 au lait", "notes.txt"),  # Latin-1, not UTF-8
        (PDF, "notes.txt"),
        (_ooxml("xl"), "report.docx"),
        (_zip({"a.txt": b"x"}), "report.docx"),  # a plain zip is not a docx
        (b"not json at all", "data.json"),
        (b'{"a": ', "data.json"),
        (b"plain", "data.jsonl"),
        (b"plain", "data.xml"),
    ],
)
def test_content_contradicting_the_extension_is_a_mismatch(data: bytes, filename: str) -> None:
    _raises("FILE_TYPE_MISMATCH", data[:SNIFF_BYTES], filename, full=data)


def test_content_contradicting_the_declared_type_is_a_mismatch() -> None:
    error = _raises("FILE_TYPE_MISMATCH", PDF, "upload", "image/png")
    assert error.metadata["declaredType"] == "image/png"
    _raises("FILE_TYPE_MISMATCH", PNG, "a.png", "image/jpeg")
    _raises("FILE_TYPE_MISMATCH", b"hello", "a.txt", "application/pdf")


@pytest.mark.parametrize(
    "data",
    [
        bytes(range(256)),
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(64),  # legacy .doc
        b"\x1f\x8b\x08\x00" + bytes(16),  # gzip
        _zip({"a.txt": b"x"}),
        b"\x00\x00\x00\x18ftypisom" + bytes(16),  # mp4 video
        b"\xff\xf1\x50\x80" + bytes(16),  # AAC ADTS: layer bits 00, not MP3
    ],
)
def test_unknown_binary_without_a_claim_is_unsupported(data: bytes) -> None:
    _raises("UNSUPPORTED_FILE_TYPE", data, "upload.bin", full=data)


def test_empty_content_is_refused() -> None:
    error = _raises("EMPTY_FILE", b"", "a.txt")
    assert "a.txt" in error.message
    _raises("EMPTY_FILE", b"", "a.png", full=b"")


def test_head_cut_inside_a_utf8_character_is_still_text() -> None:
    data = ("é" * 40_000).encode()
    head = data[:SNIFF_BYTES - 1]  # ends on half a character
    assert head.endswith(b"\xc3")
    assert sniff(head, "a.txt").content_type == "text/plain"
    # The whole file must decode, though: the same truncation at the very end is invalid.
    _raises("FILE_TYPE_MISMATCH", head, "a.txt", full=head)


def test_ooxml_from_head_only_uses_member_names_then_trusts_the_extension() -> None:
    members = {"[Content_Types].xml": b"<Types/>", "ppt/presentation.xml": b"<p/>"}
    data = _zip(members)
    # Member names in the head decide, whatever the extension says...
    _raises("FILE_TYPE_MISMATCH", data[:SNIFF_BYTES], "slides.docx")
    assert sniff(data[:SNIFF_BYTES], "slides").extension == "pptx"
    # ...and when the head shows none (a big first member), the extension is trusted.
    noise = random.Random(0).randbytes(2 * SNIFF_BYTES)  # incompressible
    padded = _zip({"[Content_Types].xml": noise, "word/document.xml": b"x"})
    head = padded[:SNIFF_BYTES]
    assert b"word/" not in head
    assert sniff(head, "big.docx").extension == "docx"
    _raises("UNSUPPORTED_FILE_TYPE", head, "big")
    # With the full file the central directory decides.
    assert sniff(head, "big", full=padded).extension == "docx"


def test_truncated_office_file_is_left_to_the_parser() -> None:
    data = _ooxml("word")
    truncated = data[: len(data) // 2]  # no central directory any more
    assert sniff(truncated[:SNIFF_BYTES], "a.docx", full=truncated).extension == "docx"


def test_jsonl_first_line_is_checked_when_complete() -> None:
    _raises("FILE_TYPE_MISMATCH", b'{"a": 1\n{"a": 2}\n', "a.jsonl")
    assert sniff(b'{"a": 1}\n{"a"', "a.jsonl").extension == "jsonl"  # head: rest unchecked


def test_large_json_head_is_only_checked_lightly() -> None:
    head = b'[{"a": "' + b"x" * 100
    assert sniff(head, "a.json").extension == "json"


def test_blank_text_is_accepted_and_left_to_the_parser() -> None:
    assert sniff(b"   \n", "a.json").extension == "json"


def test_kind_of_maps_supported_types_and_refuses_others() -> None:
    assert kind_of("image/png") == "image"
    assert kind_of("Audio/MPEG; foo=bar") == "audio"
    assert kind_of("application/pdf") == "document"
    with pytest.raises(InvalidArgument) as caught:
        kind_of("video/mp4")
    assert caught.value.reason == "UNSUPPORTED_FILE_TYPE"


def test_every_type_has_a_kind_and_unique_names() -> None:
    extensions = [t.extension for t in FILE_TYPES]
    content_types = [t.content_type for t in FILE_TYPES]
    assert len(set(extensions)) == len(extensions)
    assert len(set(content_types)) == len(content_types)
    assert {t.kind for t in FILE_TYPES} == set(KINDS)
    assert all(kind_of(ct) == t.kind for t, ct in zip(FILE_TYPES, content_types, strict=True))


def test_json_check_uses_the_full_file_when_given() -> None:
    full = json.dumps({"k": "v" * 70_000}).encode()
    assert sniff(full[:SNIFF_BYTES], "a.json", full=full).extension == "json"
    _raises("FILE_TYPE_MISMATCH", full[:SNIFF_BYTES], "a.json", full=full[:-1])
