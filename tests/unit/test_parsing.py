"""Document parsing: every supported type from a real generated file, and every refusal."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rowforge.server.errors import InvalidArgument
from rowforge.server.files.sniff import sniff
from rowforge.server.knowledge import parsing
from rowforge.server.knowledge.parsing import ParsedDocument, Section, parse_document

OOXML = "application/vnd.openxmlformats-officedocument"
DOCX = f"{OOXML}.wordprocessingml.document"
PPTX = f"{OOXML}.presentationml.presentation"
XLSX = f"{OOXML}.spreadsheetml.sheet"


# --- real files, made with the libraries that write them -----------------------------------------

def make_pdf(pages: list[str], title: str | None = None) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    if title:
        pdf.set_title(title)
    pdf.set_font("Helvetica", size=12)
    for text in pages:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, 8, text)
        else:
            pdf.rect(20, 20, 50, 50)  # a drawing, no text: like a scanned page
    return bytes(pdf.output())


def make_docx() -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("Quarterly Report", level=1)
    document.add_paragraph("Revenue grew in every region.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "Region"
    table.cell(0, 1).text = "Growth"
    table.cell(1, 0).text = "North"
    table.cell(1, 1).text = "12%"
    document.add_paragraph("Outlook is stable.")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def make_pptx() -> bytes:
    from pptx import Presentation

    presentation = Presentation()
    first = presentation.slides.add_slide(presentation.slide_layouts[1])
    first.shapes.title.text = "Roadmap"
    first.placeholders[1].text = "Ship the parser"
    second = presentation.slides.add_slide(presentation.slide_layouts[5])
    second.shapes.title.text = "Risks"
    second.notes_slide.notes_text_frame.text = "Mention the deadline"
    presentation.slides.add_slide(presentation.slide_layouts[6])  # blank slide: no section
    buffer = io.BytesIO()
    presentation.save(buffer)
    return buffer.getvalue()


def make_xlsx() -> bytes:
    import openpyxl

    workbook = openpyxl.Workbook()
    people = workbook.active
    people.title = "People"
    people.append(["name", "age"])
    people.append(["Ann", 30])
    people.append([None, None])
    people.append(["Bob", 41.0])
    cities = workbook.create_sheet("Cities")
    cities.append([None, None])
    cities.append(["city", "country"])
    cities.append(["Lyon", "France"])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def parse(data: bytes, filename: str, content_type: str = "") -> ParsedDocument:
    return parse_document(data, filename=filename, content_type=content_type)


def refused(reason: str, data: bytes, filename: str, content_type: str = "") -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        parse(data, filename, content_type)
    assert caught.value.reason == reason, caught.value.message
    assert caught.value.metadata["filename"] == filename
    return caught.value


# --- text ----------------------------------------------------------------------------------------

def test_txt_is_one_section_with_bom_and_crlf_handled() -> None:
    doc = parse("\ufeffHello\r\nworld  \r\n\r\n\r\n\r\nBye\n".encode(), "notes.txt", "text/plain")
    assert doc == ParsedDocument("notes", [Section("Hello\nworld\n\nBye")])
    assert doc.page_count == 0


def test_markdown_title_is_the_top_heading_and_headings_stay_in_the_text() -> None:
    text = "intro\n\n## Sub\n\n# Main Title #\n\nbody\n"
    doc = parse(text.encode(), "readme.md", "text/markdown")
    assert doc.title == "Main Title"
    assert doc.sections == [Section(text.strip())]
    setext = parse(b"Big Title\n=========\n\ntext\n", "x.md", "text/markdown")
    assert setext.title == "Big Title"
    assert parse(b"no heading", "plain.md", "text/markdown").title == "plain"


def test_type_falls_back_to_the_extension_when_content_type_is_generic() -> None:
    assert parse(b"x", "a.txt", "application/octet-stream").sections == [Section("x")]


# --- records -------------------------------------------------------------------------------------

def test_csv_rows_become_records_with_the_header() -> None:
    data = b'name,bio,age\nAnn,"likes, commas\nand lines",30\n\n,,\nBob,,41,extra\n'
    doc = parse(data, "people.csv", "text/csv")
    assert doc.title == "people"
    assert doc.sections == [
        Section("name: Ann\nbio: likes, commas\nand lines\nage: 30", is_record=True),
        Section("name: Bob\nage: 41\ncolumn 4: extra", is_record=True),
    ]


def test_csv_dialect_is_sniffed() -> None:
    doc = parse(b"a;b\n1;2\n3;4\n", "semi.csv", "text/csv")
    assert [s.text for s in doc.sections] == ["a: 1\nb: 2", "a: 3\nb: 4"]


def test_single_column_csv() -> None:
    doc = parse(b"word\nalpha\nbeta\n", "words.csv", "text/csv")
    assert [s.text for s in doc.sections] == ["word: alpha", "word: beta"]


def test_tsv_rows_become_records() -> None:
    doc = parse(b"k\tv\none\t1\ntwo\t2\n", "t.tsv", "text/tab-separated-values")
    assert [s.text for s in doc.sections] == ["k: one\nv: 1", "k: two\nv: 2"]
    assert all(s.is_record for s in doc.sections)


def test_header_only_csv_is_empty() -> None:
    refused("EMPTY_DOCUMENT", b"a,b,c\n", "h.csv", "text/csv")


def test_json_array_gives_one_record_per_element() -> None:
    data = json.dumps([{"q": "Why?", "a": "Because", "tags": ["x", "y"], "n": None},
                       "plain string", 42, {"nested": {"k": 1}}]).encode()
    doc = parse(data, "faq.json", "application/json")
    assert [s.text for s in doc.sections] == [
        'q: Why?\na: Because\ntags: ["x","y"]', "plain string", "42", 'nested: {"k":1}']
    assert all(s.is_record for s in doc.sections)


def test_json_object_is_one_record_with_its_title() -> None:
    doc = parse(b'{"title": "Guide", "body": "Read me"}', "g.json", "application/json")
    assert doc == ParsedDocument("Guide", [Section("title: Guide\nbody: Read me", is_record=True)])


def test_huge_json_object_is_split_per_key_and_per_element() -> None:
    items = [{"id": i, "text": "x" * 500} for i in range(50)]
    data = json.dumps({"name": "big", "items": items}).encode()
    assert len(data) > parsing.JSON_OBJECT_SPLIT_CHARS
    doc = parse(data, "big.json", "application/json")
    assert doc.sections[0].text == "name: big"
    assert len(doc.sections) == 51
    assert doc.sections[1].text == "items[0]\nid: 0\ntext: " + "x" * 500


def test_jsonl_gives_one_record_per_line() -> None:
    doc = parse(b'{"a": 1}\n\n{"a": 2, "b": "two"}\n', "r.jsonl", "application/jsonl")
    assert [s.text for s in doc.sections] == ["a: 1", "a: 2\nb: two"]


def test_jsonl_bad_line_is_named() -> None:
    error = refused("CORRUPT_FILE", b'{"a": 1}\n{"a": 2}\n{"a": \n', "r.jsonl", "application/jsonl")
    assert "line 3" in error.message
    assert error.metadata["line"] == "3"


def test_invalid_json_names_the_position() -> None:
    error = refused("CORRUPT_FILE", b'{"a": 1,\n "b": }', "x.json", "application/json")
    assert "line 2" in error.message


def test_deeply_nested_json_is_refused_not_crashed() -> None:
    refused("CORRUPT_FILE", b"[" * 100_000 + b"]" * 100_000, "deep.json", "application/json")


@pytest.mark.parametrize("data", [b"[]", b"{}", b'[null, "", {}]', b'""'])
def test_json_without_content_is_empty(data: bytes) -> None:
    refused("EMPTY_DOCUMENT", data, "e.json", "application/json")


# --- markup --------------------------------------------------------------------------------------

def test_html_visible_text_blocks_and_title() -> None:
    html = b"""<!DOCTYPE html><html><head><title>The  Page</title>
    <style>p { color: red }</style><script>var hidden = 1;</script></head>
    <body><h1>Heading</h1><p>Hello <b>bold</b>
    world.</p><!-- a comment --><ul><li>one</li><li>two</li></ul>
    <table><tr><th>k</th><th>v</th></tr><tr><td>a</td><td>1</td></tr></table>
    <noscript>enable js</noscript>line<br>break</body></html>"""
    doc = parse(html, "page.html", "text/html")
    assert doc.title == "The Page"
    assert doc.sections == [Section(
        "Heading\n\nHello bold world.\n\none\n\ntwo\n\nk | v\n\na | 1\n\nline\nbreak")]


def test_xhtml_with_xml_declaration_and_markup_free_html_parse_without_warnings() -> None:
    # filterwarnings=error would turn BeautifulSoup's warnings into failures here.
    xhtml = b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><body><h1>T</h1>' \
            b"<p>x</p></body></html>"
    doc = parse(xhtml, "x.xhtml", "application/xhtml+xml")
    assert (doc.title, doc.sections[0].text) == ("T", "T\n\nx")
    assert parse(b"https://example.com/a.html", "u.html", "text/html").sections[0].text == \
        "https://example.com/a.html"


def test_html_with_unclosed_head_keeps_the_body() -> None:
    # HTML lets </head> be omitted; html.parser then nests the body inside <head>.
    doc = parse(b"<html><head><title>T</title><body><p>text</p></body></html>", "h.html",
                "text/html")
    assert (doc.title, doc.sections) == ("T", [Section("text")])


def test_html_with_only_scripts_is_empty() -> None:
    refused("EMPTY_DOCUMENT", b"<html><script>x()</script><style>a{}</style></html>", "s.html",
            "text/html")


def test_xml_text_content_and_title() -> None:
    xml = b"""<?xml version="1.0" encoding="UTF-8"?>
    <book xmlns="urn:x"><title>Dune</title><chapter>Desert <em>planet</em></chapter></book>"""
    doc = parse(xml, "book.xml", "application/xml")
    assert doc == ParsedDocument("Dune", [Section("Dune\nDesert\nplanet")])


def test_xml_entity_bomb_is_refused() -> None:
    bomb = b"""<?xml version="1.0"?>
    <!DOCTYPE lolz [<!ENTITY lol "lol">
    <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
    <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
    <lolz>&lol3;</lolz>"""
    error = refused("UNSAFE_DOCUMENT", bomb, "bomb.xml", "application/xml")
    assert "entity" in error.message.lower()


def test_xml_external_entity_is_refused() -> None:
    xxe = b"""<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
    <r>&x;</r>"""
    refused("UNSAFE_DOCUMENT", xxe, "xxe.xml", "application/xml")


def test_malformed_xml_is_corrupt() -> None:
    refused("CORRUPT_FILE", b"<a><b></a>", "bad.xml", "application/xml")


# --- pdf -----------------------------------------------------------------------------------------

def test_pdf_text_per_page_with_page_numbers_and_title() -> None:
    data = make_pdf(["First page about cats.", "", "Third page about dogs."], title="Pets")
    doc = parse(data, "pets.pdf", "application/pdf")
    assert doc.title == "Pets"
    assert doc.sections == [Section("First page about cats.", page=1),
                            Section("Third page about dogs.", page=3)]
    assert doc.page_count == 3


def test_pdf_title_falls_back_to_the_file_name() -> None:
    assert parse(make_pdf(["text"]), "dir/report.v2.pdf", "application/pdf").title == "report.v2"


def test_pdf_without_text_is_empty() -> None:
    error = refused("EMPTY_DOCUMENT", make_pdf(["", ""]), "scan.pdf", "application/pdf")
    assert "OCR" in error.message


@pytest.mark.parametrize(
    "damage",
    [
        lambda pdf: b"%PDF-1.4\n" + bytes(range(256)) * 4,
        lambda pdf: pdf[: len(pdf) // 2],
        lambda pdf: pdf[:-40],
    ],
    ids=["garbage", "truncated-half", "truncated-tail"],
)
def test_corrupt_pdf_is_refused(damage: Callable[[bytes], bytes]) -> None:
    refused("CORRUPT_FILE", damage(make_pdf(["a", "b"])), "bad.pdf", "application/pdf")


def _encrypted(user_password: str) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf(["secret text"]))))
    writer.encrypt(user_password, owner_password="owner", algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def test_password_protected_pdf_is_refused() -> None:
    error = refused("ENCRYPTED_DOCUMENT", _encrypted("hunter2"), "locked.pdf", "application/pdf")
    assert "password" in error.message


def test_pdf_encrypted_with_an_empty_user_password_opens() -> None:
    doc = parse(_encrypted(""), "open.pdf", "application/pdf")
    assert doc.sections == [Section("secret text", page=1)]


# --- office --------------------------------------------------------------------------------------

def test_docx_paragraphs_and_tables_in_order() -> None:
    doc = parse(make_docx(), "report.docx", DOCX)
    assert doc.title == "Quarterly Report"
    assert doc.sections == [Section(
        "Quarterly Report\n\nRevenue grew in every region.\n\nRegion | Growth\n\nNorth | 12%"
        "\n\nOutlook is stable.")]


def test_pptx_one_section_per_slide_with_notes() -> None:
    doc = parse(make_pptx(), "deck.pptx", PPTX)
    assert doc.title == "Roadmap"
    assert doc.sections == [Section("Roadmap\n\nShip the parser", page=1),
                            Section("Risks\n\nNotes: Mention the deadline", page=2)]
    assert doc.page_count == 2


def test_xlsx_rows_become_records_with_sheet_names() -> None:
    doc = parse(make_xlsx(), "book.xlsx", XLSX)
    assert doc.title == "book"
    assert doc.sections == [
        Section("sheet: People\nname: Ann\nage: 30", is_record=True),
        Section("sheet: People\nname: Bob\nage: 41", is_record=True),
        Section("sheet: Cities\ncity: Lyon\ncountry: France", is_record=True),
    ]


@pytest.mark.parametrize(("make", "name", "content_type"),
                         [(make_docx, "a.docx", DOCX), (make_pptx, "a.pptx", PPTX),
                          (make_xlsx, "a.xlsx", XLSX)])
def test_truncated_office_file_is_corrupt(make: Callable[[], bytes], name: str,
                                          content_type: str) -> None:
    data = make()
    refused("CORRUPT_FILE", data[: len(data) // 2], name, content_type)


def test_zip_that_is_not_the_declared_office_type_is_corrupt() -> None:
    refused("CORRUPT_FILE", make_xlsx(), "fake.docx", DOCX)


def test_office_zip_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # A real bomb would take memory to build; lowering the limit exercises the same check.
    monkeypatch.setattr(parsing, "MAX_UNCOMPRESSED_BYTES", 10_000)
    error = refused("UNSAFE_DOCUMENT", make_docx(), "bomb.docx", DOCX)
    assert error.metadata["uncompressedBytes"].isdigit()


# --- refusals common to all types ----------------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "content_type"),
    [("a.txt", "text/plain"), ("a.md", "text/markdown"), ("a.csv", "text/csv"),
     ("a.json", "application/json"), ("a.jsonl", "application/jsonl"),
     ("a.html", "text/html"), ("a.pdf", "application/pdf"), ("a.docx", DOCX)],
)
def test_empty_file_is_an_empty_document(name: str, content_type: str) -> None:
    refused("EMPTY_DOCUMENT", b"", name, content_type)


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("a.txt", "text/plain"), ("a.md", "text/markdown"), ("a.csv", "text/csv"),
     ("a.tsv", "text/tab-separated-values"), ("a.jsonl", "application/jsonl"),
     ("a.html", "text/html")],
)
def test_whitespace_only_is_an_empty_document(name: str, content_type: str) -> None:
    refused("EMPTY_DOCUMENT", b" \n\t\r\n  \n", name, content_type)


def test_invalid_utf8_is_corrupt() -> None:
    error = refused("CORRUPT_FILE", b"caf\xe9 au lait", "latin1.txt", "text/plain")
    assert "UTF-8" in error.message and error.metadata["offset"] == "3"


def test_binary_garbage_named_txt_is_corrupt() -> None:
    refused("CORRUPT_FILE", bytes(range(256)), "garbage.txt", "text/plain")
    refused("CORRUPT_FILE", b"abc\x00def", "nul.txt", "text/plain")


@pytest.mark.parametrize(("name", "content_type"),
                         [("a.png", "image/png"), ("a.mp3", "audio/mpeg"),
                          ("a.bin", "application/octet-stream"), ("a", "")])
def test_unsupported_types_are_refused(name: str, content_type: str) -> None:
    refused("UNSUPPORTED_FILE_TYPE", b"data", name, content_type)


def test_png_that_is_a_pdf_never_reaches_a_parser() -> None:
    data = make_pdf(["hello"])
    with pytest.raises(InvalidArgument) as caught:
        sniff(data[:65536], "photo.png")
    assert caught.value.reason == "FILE_TYPE_MISMATCH"
    # Named honestly, the same bytes go through sniff then parse.
    sniffed = sniff(data[:65536], "photo.pdf", full=data)
    doc = parse(data, "photo.pdf", sniffed.content_type)
    assert doc.sections == [Section("hello", page=1)]


# --- nothing but InvalidArgument escapes ---------------------------------------------------------

_SAMPLES = {
    "a.pdf": make_pdf(["one", "two"]),
    "a.docx": make_docx(),
    "a.pptx": make_pptx(),
    "a.xlsx": make_xlsx(),
    "a.json": b'[{"a": 1}, {"b": [2, 3]}]',
    "a.xml": b"<r><a>x</a><b y='1'>z</b></r>",
    "a.csv": b'a,b\n1,"2"\n',
    "a.html": b"<p>x</p>",
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(_SAMPLES)), data=st.data())
def test_damaged_files_give_a_document_or_invalid_argument(name: str,
                                                           data: st.DataObject) -> None:
    original = _SAMPLES[name]
    cut = data.draw(st.integers(0, len(original)), label="cut")
    patch = data.draw(st.binary(max_size=64), label="patch")
    damaged = original[:cut] + patch + original[cut + len(patch):]
    try:
        doc = parse(damaged, name)
    except InvalidArgument as exc:
        assert exc.reason in ("CORRUPT_FILE", "EMPTY_DOCUMENT", "ENCRYPTED_DOCUMENT",
                              "UNSAFE_DOCUMENT")
    else:
        assert doc.sections and all(s.text.strip() for s in doc.sections)
