"""The where compiler: accepted syntax, typed comparisons, refusals, and that user text only
ever reaches SQL as bound parameters (property tests over generated and random strings)."""

from __future__ import annotations

import re
import sqlite3

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite

from rowforge.server.errors import InvalidArgument
from rowforge.server.tables.layout import row_table
from rowforge.server.tables.model import ColumnSchema, EmbedGenConfig, TableSchema
from rowforge.server.tables.where import _like_to_glob, compile_where

SCHEMA = TableSchema(
    project_id="p", table_type="action", id="t", storage_id="ut_test",
    columns=(ColumnSchema("name", "str", storage_name="c_1"),
             ColumnSchema("n", "int", storage_name="c_2"),
             ColumnSchema("x", "float", storage_name="c_3"),
             ColumnSchema("flag", "bool", storage_name="c_4"),
             ColumnSchema("my col", "str", storage_name="c_5"),
             ColumnSchema("img", "image", storage_name="c_6"),
             ColumnSchema("vec", "embedding", EmbedGenConfig("m", "name"), system=True,
                          storage_name="c_7")))
TABLE = row_table(SCHEMA)
DIALECTS = {"sqlite": sqlite.dialect(), "postgresql": postgresql.asyncpg.dialect()}


def sql(where: str, dialect: str = "sqlite") -> tuple[str, dict[str, object]]:
    expr = compile_where(where, SCHEMA, TABLE, dialect)
    compiled = sa.select(TABLE.c.id).where(expr).compile(dialect=DIALECTS[dialect])
    return str(compiled).split("WHERE", 1)[1], dict(compiled.params)


def refused(where: str, dialect: str = "sqlite") -> InvalidArgument:
    with pytest.raises(InvalidArgument) as err:
        compile_where(where, SCHEMA, TABLE, dialect)
    assert err.value.field_violations[0].field == "where"
    assert err.value.reason == "INVALID_WHERE"
    return err.value


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
@pytest.mark.parametrize("where", [
    "\"name\" = 'a'", "name = 'a'", "\"n\" > 3", "\"n\" >= -3", "\"x\" < 2.5", "\"x\" <= 1e3",
    "\"n\" != 1", "\"n\" <> 1", "3 < \"n\"", "\"name\" LIKE '%a_'", "\"name\" NOT LIKE 'a%'",
    "\"name\" ILIKE 'A%'", "\"n\" IN (1, 2, 3)", "\"name\" NOT IN ('a', 'b')",
    "\"name\" IS NULL", "\"name\" IS NOT NULL", "\"n\" BETWEEN 1 AND 5",
    "\"n\" NOT BETWEEN 1 AND 5", "\"flag\" = TRUE", "\"flag\" IS FALSE", "\"flag\"",
    "NOT \"flag\"", "(\"n\" = 1 OR \"n\" = 2) AND NOT (\"name\" = 'x')", "TRUE", "FALSE",
    "\"my col\" = 'v'", "\"ID\" = 'abc'", "\"Updated at\" > '2025-01-31T12:00:00Z'",
    "\"img\" = 'file://x'", "\"n\" = \"x\"", "\"name\" = 'it''s'",
])
def test_accepted_forms_compile_with_bound_values(where: str, dialect: str) -> None:
    text, params = sql(where, dialect)
    assert _ALLOWED.sub("", text) == "", text
    bound = [x for v in params.values() for x in (v if isinstance(v, list) else [v])]
    for literal in re.findall(r"'((?:[^']|'')+)'", where):
        value = literal.replace("''", "'")
        if "Updated at" not in where:
            assert value in bound or value.replace("%", "*").replace("_", "?") in bound


@pytest.mark.parametrize("where, needle", [
    ("\"nope\" = 1", "unknown column 'nope'"),
    ("\"name\" = 1", "compare it with a quoted string"),
    ("\"n\" = 'a'", "compare it with a number"),
    ("\"x\" > '1.5'", "compare it with a number"),
    ("\"flag\" = 1", "TRUE or FALSE"),
    ("\"n\" = NULL", "IS NULL"),
    ("\"Updated at\" > 'yesterday'", "ISO 8601"),
    ("\"Updated at\" > 5", "ISO 8601"),
    ("\"n\" LIKE '1%'", "text column"),
    ("\"name\" LIKE \"name\"", "quoted string pattern"),
    ("\"name\" LIKE 'a\\'", "escape character"),
    ("\"vec\" = 1", "cannot be filtered"),
    ("1 = 1", "compares two values"),
    ("\"name\" = \"n\"", "cannot compare"),
    ("\"n\"", "not a bool column"),
    ("\"n\" IS TRUE", "IS TRUE / IS FALSE with a bool column"),
    ("lower(\"name\") = 'a'", "not allowed"),
    ("\"n\" = (SELECT 1)", "not allowed"),
    ("\"n\" IN (SELECT 1)", "IN takes a list"),
    ("\"n\" = 1; DROP TABLE x", "single condition"),
    ("\"n\" = 1 -- comment", "comments"),
    ("\"n\" = 1 /* c */", "comments"),
    ("\"n\"::text = '1'", "not allowed"),
    ("t.\"n\" = 1", "is not a column"),
    ("\"n\" = 0x1F", "not allowed"),
    ("\"name\" ~ 'a'", "not allowed"),
    ("\"name\" LIKE 'a' ESCAPE '!'", "not allowed"),
    ("\"n\" + 1 = 2", "not allowed"),
    ("", "must not be empty"),
    ("\"n\" = ", "cannot be parsed"),
    ("\"n\" IN (\"x\")", "IN takes values"),
])
def test_refusals_name_the_problem(where: str, needle: str) -> None:
    err = refused(where)
    assert needle in err.message, err.message


def test_unknown_column_lists_valid_columns() -> None:
    err = refused("\"nope\" = 'a'")
    assert "'name'" in err.message and "'my col'" in err.message and "'ID'" in err.message
    assert "'vec'" not in err.message  # embedding columns are not filterable
    assert err.metadata == {"column": "nope"}


def test_limits() -> None:
    refused("\"n\" = 1 AND " * 2000 + "TRUE")
    refused("(" * 200 + "\"n\" = 1" + ")" * 200)
    refused("\"n\" IN (" + ",".join("1" for _ in range(1001)) + ")")


def test_numbers_fit_the_column() -> None:
    _, params = sql("\"n\" = 3.0")
    assert list(params.values()) == [3] and isinstance(next(iter(params.values())), int)
    text, params = sql("\"n\" = 3.5", "postgresql")
    assert "DOUBLE" in text.upper() or "FLOAT" in text.upper()
    _, params = sql("\"n\" > 99999999999999999999")
    assert isinstance(next(iter(params.values())), float)


def test_timestamps_become_microseconds() -> None:
    _, params = sql("\"Updated at\" >= '1970-01-01T00:00:01Z'")
    assert list(params.values()) == [1_000_000]
    _, params = sql("\"Updated at\" >= '1970-01-01T00:00:01'")  # naive means UTC
    assert list(params.values()) == [1_000_000]


def test_postgres_orders_text_bytewise() -> None:
    text, _ = sql("\"name\" > 'a'", "postgresql")
    assert 'COLLATE "C"' in text
    text, _ = sql("\"name\" = 'a'", "postgresql")
    assert "COLLATE" not in text  # equality keeps the hash index usable


@pytest.mark.parametrize("pattern, glob", [
    ("%a_", "*a?"), ("a*b", "a[*]b"), ("a?[", "a[?][[]"), ("50\\%", "50%"), ("a\\_b", "a_b"),
    ("\\\\", "\\"),
])
def test_like_to_glob(pattern: str, glob: str) -> None:
    assert _like_to_glob(pattern) == glob


@given(st.text(alphabet="ab%_\\*?[]", max_size=8), st.text(alphabet="ab%_*?[]\\", max_size=8))
def test_glob_translation_matches_case_sensitive_like(pattern: str, value: str) -> None:
    if (len(pattern) - len(pattern.rstrip("\\"))) % 2:
        return  # refused by the compiler
    db = sqlite3.connect(":memory:")
    db.execute("PRAGMA case_sensitive_like = ON")
    like = db.execute("SELECT ? LIKE ? ESCAPE '\\'", (value, pattern)).fetchone()[0]
    glob = db.execute("SELECT ? GLOB ?", (value, _like_to_glob(pattern))).fetchone()[0]
    assert like == glob


# -- injection safety ----------------------------------------------------------------------

# What compiled SQL may contain besides bound-parameter placeholders: our generated column
# names, keywords, operators. Anything else would be user text pasted into SQL.
_ALLOWED = re.compile(
    r"ut_test\.(c_\d+|id|updated_at|rid)|\(__\[POSTCOMPILE_param_\d+\]\)|\$\d+::[A-Z ]+"
    r"(\([0-9]+\))?|\?|COLLATE \"C\"|ESCAPE '\\'|\b(AND|OR|NOT|IN|IS|NULL|BETWEEN|LIKE|ILIKE|"
    r"GLOB|true|false|lower)\b|[0-9]+|[()=<>!,]|\s+")


def assert_parameterised(where: str) -> None:
    for dialect in DIALECTS:
        try:
            text, _ = sql(where, dialect)
        except InvalidArgument:
            return
        leftover = _ALLOWED.sub("", text)
        assert leftover == "", f"{where!r} -> {text!r} leaves {leftover!r}"


INJECTIONS = [
    "\"name\" = '' OR 1=1 --'", "\"name\" = 'x' OR 1=1 --", "\"x\"; DROP TABLE ut_test; --",
    "\"name\" = 'a'; DELETE FROM ut_test", "\"name\" = 'a' UNION SELECT * FROM rf_tokens",
    "\"name\" = \u2018a\u2019 OR \u20181\u2019=\u20181\u2019", "\"name\" = 'a\u2019 OR 1=1 --'",
    "\"name\" = 'a'' OR ''1''=''1'", "\"name\" = $$a$$ OR 1=1", "\"name\" = E'\\x27 OR 1=1'",
    "\"name) OR (1=1\" = 'a'", "\"name\" = 'a' OR \"n\" IN (SELECT id FROM rf_projects)",
    "\"name\" = 'a' AND pg_sleep(1) IS NULL", "\"name\" = 'a' AND load_extension('x') IS NULL",
    "\"name\" = CHAR(39)", "\"name\" LIKE '%' || (SELECT secret_hash FROM rf_tokens) || '%'",
    "\"name\" = 'a'\x00 OR 1=1", "\"n\" = 1 OR 1=1", "\"name\" = 'a' /*", "*/ OR 1=1",
]


@pytest.mark.parametrize("where", INJECTIONS)
def test_injection_attempts_are_refused_or_parameterised(where: str) -> None:
    assert_parameterised(where)


_idents = st.sampled_from(["\"name\"", "\"n\"", "\"x\"", "\"flag\"", "\"my col\"", "\"ID\"",
                           "name", "\"Updated at\"", "\"nope\"", "\"img\""])
_strings = st.text(max_size=20).map(lambda s: "'" + s.replace("'", "''") + "'")
_numbers = st.one_of(st.integers(-10**20, 10**20).map(str),
                     st.floats(allow_nan=False, allow_infinity=False).map(repr))
_values = st.one_of(_strings, _numbers, st.sampled_from(["TRUE", "FALSE", "NULL"]))
#: Mostly well-typed (column, value) pairs, so that most filters compile; some mismatched.
_pairs = st.one_of(
    st.tuples(st.sampled_from(["\"name\"", "\"my col\"", "\"ID\"", "name", "\"img\""]),
              st.lists(_strings, min_size=1, max_size=4)),
    st.tuples(st.sampled_from(["\"n\"", "\"x\""]), st.lists(_numbers, min_size=1, max_size=4)),
    st.tuples(st.just("\"flag\""), st.lists(st.sampled_from(["TRUE", "FALSE"]), min_size=1,
                                             max_size=2)),
    st.tuples(_idents, st.lists(_values, min_size=1, max_size=4)))
_ops = st.sampled_from(["=", "!=", "<>", "<", "<=", ">", ">=", "LIKE", "ILIKE", "NOT LIKE"])


@st.composite
def _conditions(draw: st.DrawFn, depth: int = 0) -> str:
    kind = draw(st.integers(0, 6 if depth < 3 else 3))
    col, values = draw(_pairs)
    if kind == 0:
        op = draw(_ops)
        if "LIKE" in op and col in {"\"n\"", "\"x\"", "\"flag\""}:
            op = "="
        return f"{col} {op} {values[0]}"
    if kind == 1:
        return f"{col} IN ({', '.join(values)})"
    if kind == 2:
        return f"{col} IS {draw(st.sampled_from(['NULL', 'NOT NULL', 'TRUE', 'FALSE']))}"
    if kind == 3:
        return f"{col} BETWEEN {values[0]} AND {values[-1]}"
    if kind == 4:
        return f"NOT ({draw(_conditions(depth + 1))})"
    joiner = draw(st.sampled_from([" AND ", " OR "]))
    return "(" + joiner.join(draw(st.lists(_conditions(depth + 1), min_size=2,
                                             max_size=3))) + ")"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_conditions())
def test_generated_filters_never_reach_sql_unparameterised(where: str) -> None:
    assert_parameterised(where)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_arbitrary_text_is_refused_or_parameterised(where: str) -> None:
    assert_parameterised(where)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([
    "\"name\"", "=", "'a'", "OR", "AND", "1", "--", ";", "/*", "*/", "(", ")", "DROP", "TABLE",
    "SELECT", "'", "\"", "\u2019", "||", "UNION", "NOT", "IN", "LIKE", "x", ","]), max_size=12))
def test_sql_fragments_are_refused_or_parameterised(parts: list[str]) -> None:
    assert_parameterised(" ".join(parts))


@pytest.mark.parametrize(("where", "sentence"), [
    ("\"n\" >", "'>' has nothing on its right at character 5"),
    ("AND \"n\" = 1", "'AND' has nothing on its left"),
    ("(\"n\" = 1", "a '(' is never closed"),
    ("\"n\" = 1)", "unexpected text at character 8 (near ')')"),
    ("\"name\" = 'open", "an unterminated quote"),
])
def test_parse_failures_are_sentences_not_sqlglot_internals(where: str, sentence: str) -> None:
    message = refused(where).message
    assert sentence in message, message
    assert "sqlglot" not in message and "Required keyword" not in message
    assert "<class" not in message and "Line 1" not in message
