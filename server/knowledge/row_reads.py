"""Bulk reads of a knowledge table's rows for the vector indexes (raw vectors, not ``Row``s).

The table store's reads build a ``Row`` with every vector as a list of floats: right for an
API response, far too slow to load 50,000 vectors into an index. These reads return the stored
float32 bytes as they are, through the store's own layout (:mod:`rowforge.server.tables.layout`)
and ``where`` compiler, so they see exactly the rows the store sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from rowforge.server.storage.db import Database
from rowforge.server.tables import layout
from rowforge.server.tables.model import EMBEDDING_DTYPE, KT_FILE_ID, TableSchema
from rowforge.server.tables.where import compile_where

#: Ids per ``IN (...)`` list (well under SQLite's bound-parameter limit).
ID_CHUNK = 1000

#: A row's stored vectors, one entry per embedding column (None: no vector).
Vectors = list[bytes | None]


def _vector_columns(schema: TableSchema) -> list[sa.ColumnElement[Any]]:
    table = layout.row_table(schema)
    return [table.c[layout.value_name(c)] for c in schema.columns if c.dtype == EMBEDDING_DTYPE]


async def read_vectors(db: Database, schema: TableSchema,
                       row_ids: Sequence[str]) -> dict[str, Vectors]:
    """The stored vectors of the rows that still exist among ``row_ids``."""
    table = layout.row_table(schema)
    columns = _vector_columns(schema)
    found: dict[str, Vectors] = {}
    async with db.read() as conn:
        for start in range(0, len(row_ids), ID_CHUNK):
            chunk = list(row_ids[start:start + ID_CHUNK])
            query = sa.select(table.c[layout.ROW_ID], *columns).where(
                table.c[layout.ROW_ID].in_(chunk))
            for record in await conn.execute(query):
                found[record[0]] = list(record[1:])
    return found


async def scan_vectors(db: Database, schema: TableSchema, after_seq: int,
                       limit: int) -> list[tuple[int, str, Vectors]]:
    """``(insertion sequence, row id, vectors)`` of the next ``limit`` rows after
    ``after_seq``, in insertion order (a full scan, page by page)."""
    table = layout.row_table(schema)
    seq = table.c[layout.SEQ]
    query = (sa.select(seq, table.c[layout.ROW_ID], *_vector_columns(schema))
             .where(seq > after_seq).order_by(seq).limit(limit))
    async with db.read() as conn:
        return [(int(r[0]), r[1], list(r[2:])) for r in await conn.execute(query)]


async def matching_ids(db: Database, schema: TableSchema, where: str) -> list[str]:
    """Ids of the rows matching a ``where`` filter (compiled by the tables' compiler).

    Raises:
        InvalidArgument: the filter does not parse or names unknown columns (field ``where``).
    """
    table = layout.row_table(schema)
    condition = compile_where(where, schema, table, db.dialect)
    async with db.read() as conn:
        return list(await conn.scalars(sa.select(table.c[layout.ROW_ID]).where(condition)))


async def sample_texts(db: Database, schema: TableSchema, columns: Sequence[str],
                       every: int, limit: int) -> list[tuple[str | None, ...]]:
    """The values of ``columns`` in about one row out of ``every`` (at most ``limit`` rows):
    a sample for term statistics."""
    table = layout.row_table(schema)
    cols = [table.c[layout.value_name(c)] for c in schema.columns if c.id in columns]
    query = sa.select(*cols).limit(limit)
    if every > 1:
        query = query.where(table.c[layout.SEQ] % every == 0)
    async with db.read() as conn:
        return [tuple(r) for r in await conn.execute(query)]


def searchable_text_columns(schema: TableSchema) -> list[str]:
    """The str columns knowledge search matches words in: all but the file URI column."""
    return [c.id for c in schema.columns if c.dtype == "str" and c.id != KT_FILE_ID]
