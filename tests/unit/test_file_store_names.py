"""File names from users are cleaned; file URIs are parsed strictly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rowforge.server.errors import InvalidArgument
from rowforge.server.files.names import (
    MAX_NAME_CHARS,
    build_uri,
    has_extension,
    parse_uri,
    sanitise_name,
)

FILE_ID = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(("raw", "clean"), [
    ("report.pdf", "report.pdf"),
    ("../../etc/passwd", "passwd"),
    ("..\\..\\windows\\system.ini", "system.ini"),
    ("..\\x", "x"),
    ("/abs/path/photo.png", "photo.png"),
    ("a\x00b.txt", "ab.txt"),
    ("new\nline\r.txt", "newline.txt"),
    ("evil\u202egnp.exe", "evilgnp.exe"),  # a bidi override could disguise the extension
    ("no\u00a0break\u2028sep.txt", "no breaksep.txt"),
    ("  spaced name.md  ", "spaced name.md"),
    ("café.txt", "café.txt"),
    ("cafe\u0301.txt", "café.txt"),  # NFC
])
def test_sanitise_keeps_only_a_clean_basename(raw: str, clean: str) -> None:
    assert sanitise_name(raw) == clean


@pytest.mark.parametrize("raw", ["", "   ", ".", "..", "../", "a/..", "\x00\x01", "dir/"])
def test_sanitise_refuses_names_with_nothing_left(raw: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        sanitise_name(raw, field="metadata.name")
    assert err.value.reason == "INVALID_FILE_NAME"
    assert err.value.field_violations[0].field == "metadata.name"


def test_long_names_are_cut_keeping_the_extension() -> None:
    name = sanitise_name("x" * 1000 + ".png")
    assert len(name) == MAX_NAME_CHARS
    assert name.endswith(".png")
    assert len(sanitise_name("y" * 1000)) == MAX_NAME_CHARS


@given(st.text(min_size=1, max_size=300))
def test_sanitised_names_never_hold_separators_or_controls(raw: str) -> None:
    try:
        name = sanitise_name(raw)
    except InvalidArgument:
        return
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert name not in {".", ".."}
    assert 0 < len(name) <= MAX_NAME_CHARS
    assert all(ch.isprintable() or ch == " " for ch in name)


@given(st.text(min_size=1, max_size=100))
def test_uris_round_trip(raw: str) -> None:
    try:
        name = sanitise_name(raw)
    except InvalidArgument:
        return
    uri = build_uri("proj-1", FILE_ID, name)
    parsed = parse_uri(uri)
    assert (parsed.project_id, parsed.file_id, parsed.name) == ("proj-1", FILE_ID, name)


def test_uri_without_name() -> None:
    parsed = parse_uri(f"file://p/{FILE_ID}")
    assert (parsed.project_id, parsed.file_id, parsed.name) == ("p", FILE_ID, None)


def test_names_are_percent_encoded() -> None:
    assert build_uri("p", FILE_ID, "my photo#1?.png") == f"file://p/{FILE_ID}/my%20photo%231%3F.png"


@pytest.mark.parametrize("uri", [
    "",
    "file://",
    f"s3://p/{FILE_ID}/a.png",
    f"FILE://p/{FILE_ID}/a.png",
    f"file:///{FILE_ID}/a.png",
    f"file://p/{FILE_ID.upper()}/a.png",
    "file://p/1234/a.png",
    f"file://p/{FILE_ID}/a/b.png",
    f"file://p/{FILE_ID}/../../etc/passwd",
    f"file://../{FILE_ID}/a.png",
    f"file://p/{FILE_ID}/a.png?x=1",
    f"file://p/{FILE_ID}/a.png#frag",
    f"file://p/{FILE_ID}/",
    f"file://p/{FILE_ID}/a b.png",
    f"file://p/{FILE_ID}/%ff%fe.png",  # not UTF-8
    f" file://p/{FILE_ID}/a.png",
    f"file://p/{FILE_ID}/a.png\n",
    f"file://p/{FILE_ID}/" + "a" * 5000,
])
def test_malformed_uris_are_refused(uri: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_uri(uri)
    assert err.value.reason == "INVALID_FILE_URI"
    assert err.value.field_violations[0].field == "uri"


def test_project_ids_that_cannot_be_in_a_uri_are_refused() -> None:
    with pytest.raises(InvalidArgument) as err:
        build_uri("../x", FILE_ID, "a.png")
    assert err.value.reason == "INVALID_PROJECT_ID"


@pytest.mark.parametrize(("name", "expected"), [
    ("a.png", True), ("archive.tar.gz", True), ("README", False), ("x.", False),
    ("a.verylongextension", False),
])
def test_has_extension(name: str, expected: bool) -> None:
    assert has_extension(name) is expected
