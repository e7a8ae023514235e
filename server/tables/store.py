"""TableStore: the tables domain's storage API (one per process, built by ``server/app.py``).

The engine (``rowforge.server.tables.engine``) and the other domains (knowledge, files) use
only this class; it never hands out SQL. Schema operations live in :class:`SchemaStore`, row
operations in :class:`RowStore`; this façade names the whole API in one place.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from rowforge.server.quotas import NO_QUOTAS, Quotas
from rowforge.server.storage.db import Database
from rowforge.server.storage.user_tables import user_tables
from rowforge.server.tables.model import (
    Cell,
    CellStatus,
    ColumnSchema,
    DanglingReference,
    GenConfig,
    Row,
    TableSchema,
)
from rowforge.server.tables.row_store import RowPage, RowQuery, RowStore
from rowforge.server.tables.schema_store import SchemaStore, TablePage

__all__ = ["RowPage", "RowQuery", "TablePage", "TableStore"]

log = logging.getLogger("rowforge.tables")

#: Bytes of the SQLite file read through a shared memory map instead of read() calls.
SQLITE_MMAP_BYTES = 256 * 1024 * 1024


def _sqlite_read_tuning(dbapi_conn: Any, _record: Any) -> None:
    # Filtered listings visit thousands of rows scattered over the table (the count of a
    # where filter); SQLite's default 2 MB page cache per connection misses most of them and
    # each miss is a read() syscall. A memory map serves them from the OS page cache, shared
    # by every connection (measured: count over 5,000 of 100,000 rows 2.6 ms -> 1.4 ms).
    cursor = dbapi_conn.cursor()
    cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
    cursor.close()


class TableStore:
    """Schemas and rows of generative tables.

    Args:
        db: The database.
        models: The model registry, for validating gen configs.
        files: The file store, for checking file URIs (None: URIs are only checked for a
            scheme).
    """

    def __init__(self, db: Database, *, models: Any = None, files: Any = None,
                 quotas: Quotas = NO_QUOTAS, owner: str = "") -> None:
        self.db = db
        self.quotas = quotas
        if db.is_sqlite:
            event.listen(db.engine.sync_engine, "connect", _sqlite_read_tuning)
        self.schemas = SchemaStore(db, models)
        self.rows = RowStore(db, self.schemas, files=files, owner=owner)

    def add_change_listener(self, listener: Callable[[Iterable[str]], None]) -> None:
        """Call ``listener`` with the storage ids of the tables a committed write changed
        (the knowledge indexes catch up from the change feed when told)."""
        if listener not in self.rows.change_listeners:
            self.rows.change_listeners.append(listener)

    async def start(self) -> None:
        """On SQLite (one process owns the database), finish the cells a previous process
        left PENDING or RUNNING as ERROR: nobody will generate them any more.

        On PostgreSQL another replica may be generating cells (a call of sequential rows, or
        an import, keeps cells PENDING for as long as the rows before them take, so no age is
        safe): there each PENDING/RUNNING state names the replica generating it, and the
        replicas' liveness leases (server/replicas.py) tell which of them died.
        """
        if not self.db.is_sqlite:
            return
        count = await self.finish_interrupted_cells()
        if count:
            log.warning("marked %d cells left unfinished by a stopped server as ERROR", count)

    async def close(self) -> None:
        """Wait for queued cell writes."""
        await self.rows.writer.close()

    async def finish_interrupted_cells(self, *, updated_before_us: int | None = None,
                                       owner: str | None = None) -> int:
        """Mark PENDING/RUNNING cells ERROR ("interrupted: ..."); with ``updated_before_us``
        (µs since the epoch) only in rows last updated before then; with ``owner`` only the
        cells of that replica (a dead one: server/replicas.py). Returns the count."""
        return await self.rows.finish_interrupted_cells(updated_before_us=updated_before_us,
                                                        owner=owner)

    # -- tables ----------------------------------------------------------------------------

    async def get_table(self, project_id: str, table_type: str, table_id: str) -> TableSchema:
        """The table's schema.

        Raises:
            NotFound: reason ``TABLE_NOT_FOUND`` (also for another project's table).
        """
        return await self.schemas.get_table(project_id, table_type, table_id)

    async def create_table(self, project_id: str, table_type: str, table_id: str,
                           columns: Sequence[ColumnSchema], *, embedding_model: str = "",
                           text_analyzer: str = "",
                           field_for: Callable[[str], str] | None = None) -> TableSchema:
        """Create a table; knowledge tables get their fixed columns (and a text analyzer).

        Raises:
            InvalidArgument, NotFound (unknown model / knowledge table), AlreadyExists.
            QuotaExceeded: the project has its ``quota_tables`` tables.
        """
        await self._check_table_quota(project_id)
        return await self.schemas.create_table(project_id, table_type, table_id, columns,
                                               embedding_model=embedding_model,
                                               text_analyzer=text_analyzer,
                                               field_for=field_for)

    async def list_tables(self, project_id: str, table_type: str, *, offset: int = 0,
                          limit: int = 0, page_token: str = "", count_rows: bool = False,
                          prefix: str = "") -> TablePage:
        """One page of tables sorted by id (``limit`` 1..100, 0 means 100)."""
        return await self.schemas.list_tables(project_id, table_type, offset=offset,
                                              limit=limit, page_token=page_token,
                                              count_rows=count_rows, prefix=prefix)

    async def delete_table(self, project_id: str, table_type: str, table_id: str) -> None:
        """Delete a table with its rows (RAG columns using a deleted knowledge table dangle:
        see :meth:`dangling_references`)."""
        await self.schemas.delete_table(project_id, table_type, table_id)

    async def knowledge_tables(self) -> list[TableSchema]:
        """Every project's knowledge tables."""
        return await self.schemas.knowledge_tables()

    async def record_embedding_dimensions(self, schema: TableSchema,
                                          dimensions: Mapping[str, int]) -> TableSchema:
        """Record vector lengths of embedding columns that have none yet."""
        return await self.schemas.record_embedding_dimensions(schema, dimensions)

    async def vector_length(self, schema: TableSchema, column_id: str) -> int | None:
        """The length of one stored vector of an embedding column (None: none stored)."""
        return await self.rows.vector_length(schema, column_id)

    async def dangling_references(self, schema: TableSchema) -> list[DanglingReference]:
        """The RAG columns of ``schema`` whose knowledge table no longer exists."""
        return await self.schemas.dangling_references(schema)

    async def duplicate_table(self, project_id: str, table_type: str, src: str, dst: str = "",
                              *, include_data: bool = True) -> TableSchema:
        """Copy a table (``dst`` empty: ``<src>_copy_<n>``)."""
        await self._check_table_quota(project_id)
        return await self.schemas.duplicate_table(project_id, table_type, src, dst,
                                                  include_data=include_data)

    async def rename_table(self, project_id: str, table_type: str, src: str,
                           dst: str) -> TableSchema:
        """Rename a table (ALREADY_EXISTS if ``dst`` is taken)."""
        return await self.schemas.rename_table(project_id, table_type, src, dst)

    async def add_columns(self, project_id: str, table_type: str, table_id: str,
                          columns: Sequence[ColumnSchema]) -> TableSchema:
        return await self.schemas.add_columns(project_id, table_type, table_id, columns)

    async def drop_columns(self, project_id: str, table_type: str, table_id: str,
                           names: Sequence[str]) -> TableSchema:
        return await self.schemas.drop_columns(project_id, table_type, table_id, names)

    async def rename_columns(self, project_id: str, table_type: str, table_id: str,
                             mapping: Mapping[str, str]) -> TableSchema:
        return await self.schemas.rename_columns(project_id, table_type, table_id, mapping)

    async def reorder_columns(self, project_id: str, table_type: str, table_id: str,
                              names: Sequence[str]) -> TableSchema:
        return await self.schemas.reorder_columns(project_id, table_type, table_id, names)

    async def update_gen_config(self, project_id: str, table_type: str, table_id: str,
                                configs: Mapping[str, GenConfig | None]) -> TableSchema:
        return await self.schemas.update_gen_config(project_id, table_type, table_id, configs)

    async def _check_table_quota(self, project_id: str) -> None:
        if not self.quotas.tables:
            return
        async with self.db.read() as conn:
            used = int(await conn.scalar(sa.select(sa.func.count()).select_from(
                user_tables).where(user_tables.c.project_id == project_id)) or 0)
        self.quotas.check("tables", self.quotas.tables, project_id, used, 1, "tables")

    async def count_rows(self, schema: TableSchema) -> int:
        return await self.rows.count_rows(schema)

    # -- rows ------------------------------------------------------------------------------

    async def insert_rows(self, schema: TableSchema, rows: Sequence[Mapping[str, Any]], *,
                          generated_status: CellStatus = CellStatus.PENDING,
                          field_name: str = "data") -> list[Row]:
        """Validate, type and insert rows in ONE transaction; nothing is written if any row is
        invalid.

        Values given for generated columns are stored as DONE (not generated); the other
        generated cells start as ``generated_status``. Returns the rows, in request order,
        with their new time-ordered ids.

        Raises:
            InvalidArgument: naming ``data[i].<column>`` (unknown column, wrong type, bad URI).
            QuotaExceeded: the table would pass ``quota_rows_per_table``.
        """
        if self.quotas.rows_per_table:
            self.quotas.check("rows_per_table", self.quotas.rows_per_table, schema.project_id,
                              await self.count_rows(schema), len(rows), "rows")
        return await self.rows.insert_rows(schema, rows, generated_status=generated_status,
                                           field_name=field_name)

    def write_cells(self, schema: TableSchema, row_id: str,
                    cells: Mapping[str, Cell]) -> Coroutine[Any, Any, None]:
        """Persist cell states (value, status, error, usage, references); group-committed.

        A coroutine that returns once committed (the cell writer's own: one per generated
        cell, so no extra layers). A row or column deleted meanwhile is ignored. Bumps the
        row's "Updated at". A value that does not fit the column's dtype is stored as an ERROR
        cell.
        """
        return self.rows.writer.write(schema, row_id, cells)

    async def get_rows(self, schema: TableSchema, row_ids: Sequence[str], *,
                       columns: Sequence[str] | None = None) -> list[Row]:
        """Rows in request order.

        Raises:
            NotFound: reason ``ROW_NOT_FOUND``, naming the first missing id.
        """
        return await self.rows.get_rows(schema, row_ids, columns=columns)

    async def history(self, schema: TableSchema, *, before_row_id: str | None,
                      columns: Sequence[str], limit: int = 1000) -> list[Row]:
        """The last ``limit`` rows inserted before ``before_row_id`` (None: the last rows of
        the table), oldest first, with only ``columns``."""
        return await self.rows.history(schema, before_row_id=before_row_id, columns=columns,
                                       limit=limit)

    async def list_rows(self, schema: TableSchema, query: RowQuery) -> RowPage:
        """One page of rows: where filter, full-text search, column selection, order, paging."""
        return await self.rows.list_rows(schema, query)

    def iter_rows(self, schema: TableSchema, *, columns: Sequence[str] | None = None,
                  where: str = "", batch: int = 500) -> AsyncIterator[list[Row]]:
        """Every row matching ``where``, in insertion order, in batches."""
        return self.rows.iter_rows(schema, columns=columns, where=where, batch=batch)

    async def row_keys(self, schema: TableSchema, *, where: str = "", after: int = 0,
                       upto: int | None = None, limit: int = 1000) -> list[tuple[int, str]]:
        """``(sequence, id)`` of matching rows after sequence ``after`` (a keyset page)."""
        return await self.rows.row_keys(schema, where=where, after=after, upto=upto,
                                        limit=limit)

    async def last_sequence(self, schema: TableSchema) -> int:
        """The newest row's sequence (0: no row)."""
        return await self.rows.last_sequence(schema)

    async def update_rows(self, schema: TableSchema,
                          updates: Mapping[str, Mapping[str, Any]]) -> int:
        """Set cells of existing rows (typed; generated columns are not regenerated)."""
        return await self.rows.update_rows(schema, updates)

    async def delete_rows(self, schema: TableSchema, row_ids: Sequence[str] = (),
                          where: str = "") -> int:
        """Delete rows by ids and/or where filter; returns how many were deleted."""
        return await self.rows.delete_rows(schema, row_ids, where)

    async def fulltext_search(self, schema: TableSchema, query: str, *,
                              columns: Sequence[str] | None = None, limit: int,
                              where: str | None = None,
                              any_word: bool = False) -> list[tuple[str, float]]:
        """BM25-ranked full-text search: ``(row_id, score)`` best first (higher is better;
        FTS5 ``-bm25()`` on SQLite, ``ts_rank_cd`` on PostgreSQL). Every word of ``query``
        must appear in one of ``columns`` (default: all str columns); with ``any_word``, at
        least one."""
        return await self.rows.fulltext_search(schema, query, columns=columns, limit=limit,
                                               where=where, any_word=any_word)

    async def file_references(self, project_id: str, uri: str) -> list[str]:
        """Ids of the project's tables whose file columns hold ``uri``."""
        return await self.rows.file_references(project_id, uri)
