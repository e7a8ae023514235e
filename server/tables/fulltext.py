"""Full-text search over a user table's str columns.

* SQLite: an FTS5 *external-content* table ``<storage_id>_fts`` over the str columns (it
  stores only the index, reading texts from the row table), kept in sync by three triggers in
  the same transaction as every insert/update/delete. When the set of str columns changes it is
  dropped and rebuilt (``'rebuild'``): a migration, O(rows), like SQLite's own DROP COLUMN.
  Tables get it on their first search (:mod:`.fulltext_indexes` decides when
  it exists).
* PostgreSQL: one GIN expression index per str column on
  ``to_tsvector('simple', coalesce(col, ''))``, created and dropped with the column.

User text never becomes query syntax: it is split into word tokens and each token is quoted
(FTS5 ``"tok"``; PostgreSQL ``'tok'`` lexemes). A row matches when every token appears in one
of the searched columns. Scores are "higher is better": ``-bm25()`` on SQLite,
``ts_rank_cd`` on PostgreSQL.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from rowforge.server.tables.layout import SEQ, row_table, value_name
from rowforge.server.tables.model import ColumnSchema, TableSchema

_TOKEN = re.compile(r"\w+")
MAX_TOKENS = 32
_SIMPLE: sa.ColumnElement[Any] = sa.literal_column("'simple'::regconfig")


def text_columns(schema: TableSchema) -> list[ColumnSchema]:
    """The columns full-text search covers: every str column."""
    return [c for c in schema.columns if c.dtype == "str"]


def tokens(query: str) -> list[str]:
    """The distinct word tokens of a query, in order (at most ``MAX_TOKENS``)."""
    return list(dict.fromkeys(t.lower() for t in _TOKEN.findall(query)))[:MAX_TOKENS]


def fts_name(schema: TableSchema) -> str:
    return f"{schema.storage_id}_fts"


def _q(conn: AsyncConnection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def _pg_tsvector(col: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    return sa.func.to_tsvector(_SIMPLE, sa.func.coalesce(col, sa.literal_column("''")))


async def create(conn: AsyncConnection, schema: TableSchema) -> None:
    """Create the full-text index of a table (and fill it from existing rows)."""
    cols = text_columns(schema)
    if conn.dialect.name == "postgresql":
        for col in cols:
            await _pg_create_index(conn, schema, col)
        return
    if not cols:
        return
    table, fts = _q(conn, schema.storage_id), _q(conn, fts_name(schema))
    names = [_q(conn, value_name(c)) for c in cols]
    listed = ", ".join(names)
    new = ", ".join(f"new.{n}" for n in names)
    old = ", ".join(f"old.{n}" for n in names)
    trig = schema.storage_id
    statements = [
        f"CREATE VIRTUAL TABLE {fts} USING fts5({listed}, content={table}, content_rowid={SEQ})",
        f"CREATE TRIGGER {trig}_fts_ai AFTER INSERT ON {table} BEGIN "
        f"INSERT INTO {fts}(rowid, {listed}) VALUES (new.{SEQ}, {new}); END",
        f"CREATE TRIGGER {trig}_fts_ad AFTER DELETE ON {table} BEGIN "
        f"INSERT INTO {fts}({fts}, rowid, {listed}) VALUES ('delete', old.{SEQ}, {old}); END",
        f"CREATE TRIGGER {trig}_fts_au AFTER UPDATE OF {listed} ON {table} BEGIN "
        f"INSERT INTO {fts}({fts}, rowid, {listed}) VALUES ('delete', old.{SEQ}, {old}); "
        f"INSERT INTO {fts}(rowid, {listed}) VALUES (new.{SEQ}, {new}); END",
        f"INSERT INTO {fts}({fts}) VALUES ('rebuild')",
    ]
    for statement in statements:
        await conn.execute(sa.text(statement))


async def drop(conn: AsyncConnection, schema: TableSchema) -> None:
    """Drop the SQLite FTS table and triggers (PostgreSQL indexes go with their columns)."""
    if conn.dialect.name == "postgresql":
        return
    for suffix in ("ai", "ad", "au"):
        await conn.execute(sa.text(f"DROP TRIGGER IF EXISTS {schema.storage_id}_fts_{suffix}"))
    await conn.execute(sa.text(f"DROP TABLE IF EXISTS {_q(conn, fts_name(schema))}"))


async def _pg_create_index(conn: AsyncConnection, schema: TableSchema, col: ColumnSchema) -> None:
    expr = _pg_tsvector(sa.literal_column(_q(conn, value_name(col))))
    sql = expr.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
    name = _q(conn, f"ft_{schema.storage_id}_{col.storage_name}")
    await conn.execute(sa.text(
        f"CREATE INDEX {name} ON {_q(conn, schema.storage_id)} USING gin (({sql}))"))


async def column_added(conn: AsyncConnection, old: TableSchema, new: TableSchema,
                       col: ColumnSchema) -> None:
    """Keep the index in step after ``col`` was added (the SQL column exists already)."""
    if col.dtype != "str":
        return
    if conn.dialect.name == "postgresql":
        await _pg_create_index(conn, new, col)
        return
    await drop(conn, old)
    await create(conn, new)


def match_filter(schema: TableSchema, query: str, columns: list[ColumnSchema] | None,
                 dialect: str) -> sa.ColumnElement[bool]:
    """A WHERE clause keeping rows whose searched columns contain every token of ``query``.

    A query without word tokens matches nothing.
    """
    words = tokens(query)
    cols = columns if columns is not None else text_columns(schema)
    if not words or not cols:
        return sa.false()
    table = row_table(schema)
    if dialect == "postgresql":
        vectors = [_pg_tsvector(table.c[value_name(c)]) for c in cols]
        every = sa.func.to_tsquery(_SIMPLE, " & ".join(f"'{w}'" for w in words))
        anyof = sa.func.to_tsquery(_SIMPLE, " | ".join(f"'{w}'" for w in words))
        # The OR of per-column matches can use the per-column GIN indexes; a row containing
        # every token across its columns necessarily passes it.
        prefilter = sa.or_(*[v.op("@@")(anyof) for v in vectors])
        combined = vectors[0]
        for v in vectors[1:]:
            combined = combined.op("||")(v)
        return sa.and_(prefilter, combined.op("@@")(every))
    fts = sa.table(fts_name(schema), sa.column("rowid"))
    match = sa.text(f'"{fts_name(schema)}" MATCH :fts_query').bindparams(
        fts_query=_fts5_query(words, cols))
    return table.c[SEQ].in_(sa.select(fts.c.rowid).where(match))


def _fts5_query(words: list[str], cols: list[ColumnSchema], any_word: bool = False) -> str:
    joiner = " OR " if any_word else " "
    phrase = joiner.join('"' + w.replace('"', '""') + '"' for w in words)
    names = " ".join(value_name(c) for c in cols)
    return f"{{{names}}} : ({phrase})"


def ranked_select(schema: TableSchema, query: str, columns: list[ColumnSchema] | None,
                  dialect: str, *, any_word: bool = False) -> sa.Select[Any] | None:
    """SELECT (row id, score) of the matching rows, best first; None when nothing can match.

    ``any_word``: a row matches when it contains at least one token (ranked by BM25, so rows
    with more and rarer tokens come first) instead of every token.
    """
    words = tokens(query)
    cols = columns if columns is not None else text_columns(schema)
    if not words or not cols:
        return None
    table = row_table(schema)
    if dialect == "postgresql":
        vectors = [_pg_tsvector(table.c[value_name(c)]) for c in cols]
        combined = vectors[0]
        for v in vectors[1:]:
            combined = combined.op("||")(v)
        if any_word:
            anyof = sa.func.to_tsquery(_SIMPLE, " | ".join(f"'{w}'" for w in words))
            score = sa.func.ts_rank_cd(combined, anyof).label("score")
            return (sa.select(table.c.id, score)
                    .where(sa.or_(*[v.op("@@")(anyof) for v in vectors]))
                    .order_by(score.desc(), table.c[SEQ]))
        every = sa.func.to_tsquery(_SIMPLE, " & ".join(f"'{w}'" for w in words))
        score = sa.func.ts_rank_cd(combined, every).label("score")
        return (sa.select(table.c.id, score)
                .where(match_filter(schema, query, columns, dialect))
                .order_by(score.desc(), table.c[SEQ]))
    fts_table = fts_name(schema)
    # FTS5's ``rank`` column is bm25() with default weights. Ordering by ``rank`` alone lets
    # FTS5 produce rows in rank order itself; ``bm25()`` (computed again for ORDER BY) or any
    # tie-break key makes SQLite score and sort every match: twice as slow on 20,000 rows.
    rank: sa.ColumnElement[Any] = sa.literal_column(f'"{fts_table}".rank')
    fts = sa.table(fts_table, sa.column("rowid"))
    match = sa.text(f'"{fts_table}" MATCH :fts_query').bindparams(
        fts_query=_fts5_query(words, cols, any_word))
    return (sa.select(table.c.id, (-rank).label("score"))
            .select_from(fts.join(table, table.c[SEQ] == fts.c.rowid))
            .where(match)
            .order_by(rank))
