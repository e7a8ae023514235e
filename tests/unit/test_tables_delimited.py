"""Incremental CSV/TSV parsing and typing, and export formatting."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rowforge.server.errors import InvalidArgument
from rowforge.server.tables.delimited import (
    DelimitedError,
    DelimitedReader,
    DelimitedWriter,
    RowTyper,
)
from rowforge.server.tables.model import Cell, ColumnSchema, LLMGenConfig, Row, TableSchema

SCHEMA = TableSchema(project_id="p", table_type="action", id="t", columns=(
    ColumnSchema("q", storage_name="c_1"), ColumnSchema("n", "int", storage_name="c_2"),
    ColumnSchema("ok", "bool", storage_name="c_3"),
    ColumnSchema("a", gen_config=LLMGenConfig(prompt="${q}"), storage_name="c_4")))


def parse_in_chunks(data: bytes, cuts: list[int], fmt: str = "csv") -> list[list[str]]:
    reader = DelimitedReader(fmt)
    records = []
    start = 0
    for cut in sorted(set(cuts)):
        records += reader.feed(data[start:cut])
        start = cut
    records += reader.feed(data[start:])
    records += reader.close()
    return [fields for _, fields in records]


_field = st.text(alphabet=st.sampled_from(list("ab ,\t\"\n\r'é€😀")), max_size=6)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_field, min_size=1, max_size=4), min_size=1, max_size=6),
       st.lists(st.integers(0, 400), max_size=8), st.sampled_from(["csv", "tsv"]))
def test_any_chunking_gives_the_records_of_one_parse(rows: list[list[str]], cuts: list[int],
                                                     fmt: str) -> None:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter="," if fmt == "csv" else "\t").writerows(rows)
    data = buffer.getvalue().encode()
    expected = [r for r in csv.reader(io.StringIO(buffer.getvalue(), newline=""),
                                      delimiter="," if fmt == "csv" else "\t") if r]
    assert parse_in_chunks(data, [c for c in cuts if c <= len(data)], fmt) == expected


def test_line_numbers_follow_multiline_fields() -> None:
    reader = DelimitedReader()
    records = reader.feed(b'q,n\n"one\ntwo",1\n') + reader.feed(b"three,2\n") + reader.close()
    assert [line for line, _ in records] == [1, 2, 4]


def test_bom_and_crlf_and_missing_final_newline() -> None:
    data = "\ufeffq,n\r\nx,1\r\ny,2".encode()
    assert parse_in_chunks(data, [1, 2, 9]) == [["q", "n"], ["x", "1"], ["y", "2"]]


@pytest.mark.parametrize("data, line", [
    (b'q\n"unterminated\n', 2), (b'q,n\nx,"a"b\n', 2), (b"q\n\xff\xfe\n", 2),
])
def test_malformed_input_names_the_line(data: bytes, line: int) -> None:
    with pytest.raises(DelimitedError) as err:
        parse_in_chunks(data, [3])
    assert err.value.line == line


def test_typer_types_fields_and_leaves_empty_generated_cells_to_generate() -> None:
    typer = RowTyper(SCHEMA)
    assert typer.add(1, ["ID", "q", "n", "ok", "a", "Updated at"]) is None
    assert typer.add(2, ["x", "hi", "3", "true", "", "y"]) == {"q": "hi", "n": 3, "ok": True}
    assert typer.add(3, ["x", "", "", "", "given", "y"]) == {"q": None, "n": None, "ok": None,
                                                             "a": "given"}
    typer.finish()


@pytest.mark.parametrize("header, needle", [
    (["q", "nope"], "unknown column 'nope'"), (["q", "q"], "appears twice"),
    (["ID"], "at least one column"),
])
def test_bad_headers(header: list[str], needle: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        RowTyper(SCHEMA).add(1, header)
    assert needle in err.value.message


def test_bad_values_are_reported_with_lines() -> None:
    typer = RowTyper(SCHEMA)
    typer.add(1, ["q", "n", "ok"])
    typer.add(2, ["a", "3.5", "true"])
    typer.add(3, ["a", "1", "maybe"])
    typer.add(4, ["a", "1"])
    with pytest.raises(InvalidArgument) as err:
        typer.finish()
    fields = [v.field for v in err.value.field_violations]
    assert fields == ["line 2", "line 3", "line 4"]
    with pytest.raises(InvalidArgument):
        RowTyper(SCHEMA).finish()  # empty file


def test_writer_keeps_column_order_and_round_trips() -> None:
    when = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    cols = [SCHEMA.columns[2], SCHEMA.columns[0]]
    writer = DelimitedWriter("csv", cols)
    text = writer.header() + writer.rows([
        Row("r1", when, {"ok": Cell(True), "q": Cell('say "hi",\nbye')}),
        Row("r2", when, {"ok": Cell(None), "q": Cell("x")})])
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    assert parsed == [["ID", "Updated at", "ok", "q"],
                      ["r1", "2025-01-02T03:04:05Z", "true", 'say "hi",\nbye'],
                      ["r2", "2025-01-02T03:04:05Z", "", "x"]]


def test_neutralize_prefixes_text_formulas_only() -> None:
    from rowforge.server.tables.delimited import neutralize
    from rowforge.server.tables.values import to_text

    for text in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert neutralize(text, to_text(text)) == "'" + text
    for value in ("a=1", "", "'=already quoted", -5, -2.5, True, None, ["=x"]):
        assert neutralize(value, to_text(value)) == to_text(value)
