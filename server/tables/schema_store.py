"""Table schemas: create/get/list/delete/duplicate/rename tables and change their columns.

Every change runs in one write transaction: load the metadata row (``FOR UPDATE`` on
PostgreSQL), build the new schema, validate the *whole* table, apply the DDL (ALTER TABLE
ADD/DROP COLUMN, full-text index upkeep) and save the metadata, so a failure leaves both the
SQL table and the metadata as they were.

Knowledge tables referenced by RAG columns: renaming one rewrites the RAG columns'
``table_id``; deleting one is allowed (the seeds' "delete if it exists, then create" idiom
must work when re-run) and leaves the RAG columns *dangling*: their cells fail with
``KNOWLEDGE_TABLE_NOT_FOUND`` until a knowledge table of that id exists again or their
``rag_params`` change (:meth:`SchemaStore.dangling_references` lists them for GetTable).
Validation requires a RAG target to exist only when a column starts using it: a table whose
RAG column dangles can still change its other columns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from rowforge.fastcore import rename_references
from rowforge.server.errors import (
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Violations,
)
from rowforge.server.storage.db import Database
from rowforge.server.storage.user_tables import user_tables
from rowforge.server.tables import fulltext, layout, page_tokens
from rowforge.server.tables.codec import column_from_json, column_to_json
from rowforge.server.tables.fulltext_indexes import FulltextIndexes
from rowforge.server.tables.model import (
    DEFAULT_TEXT_ANALYZER,
    TEXT_ANALYZERS,
    ColumnSchema,
    DanglingReference,
    EmbedGenConfig,
    GenConfig,
    LLMGenConfig,
    TableSchema,
)
from rowforge.server.tables.validation import (
    MAX_ID_LENGTH,
    ValidationContext,
    check_table_id,
    check_table_type,
    column_id_problem,
    knowledge_columns,
    protected_columns,
    references,
    validate_table,
)

MAX_PAGE = 100


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def table_not_found(table_type: str, table_id: str) -> NotFound:
    return NotFound(f"{table_type} table {table_id!r} not found", reason="TABLE_NOT_FOUND",
                    metadata={"tableType": table_type, "tableId": table_id},
                    resource_type=f"{table_type} table", resource_name=table_id)


def schema_from_row(row: Any) -> TableSchema:
    return TableSchema(
        project_id=row.project_id, table_type=row.table_type, id=row.table_id,
        columns=tuple(column_from_json(c) for c in row.columns),
        embedding_model=row.embedding_model, create_time=_aware(row.create_time),
        update_time=_aware(row.update_time), version=row.version, storage_id=row.storage_id,
        text_analyzer=(row.text_analyzer or DEFAULT_TEXT_ANALYZER)
        if row.table_type == "knowledge" else "")


@dataclass
class TablePage:
    """One page of ListTables."""

    items: list[TableSchema]
    total: int
    next_page_token: str = ""
    #: Row counts by storage id, when asked for.
    num_rows: dict[str, int] | None = None


def check_page(offset: int, limit: int) -> int:
    """The effective page size (0 means 100)."""
    v = Violations()
    v.check(offset >= 0, "offset", "must not be negative")
    v.check(0 <= limit <= MAX_PAGE, "limit", f"must be between 1 and {MAX_PAGE} (0: {MAX_PAGE})")
    v.raise_if_any()
    return limit or MAX_PAGE


class SchemaStore:
    """Table metadata and DDL. Use through :class:`rowforge.server.tables.store.TableStore`."""

    def __init__(self, db: Database, models: Any = None) -> None:
        self.db = db
        self.models = models
        # Schemas by (project, type, id). Only on SQLite, where this process is the only
        # writer, so invalidating on our own changes keeps it exact; PostgreSQL replicas
        # change schemas behind each other's backs, so there every read goes to the database.
        self._cache: dict[tuple[str, str, str], TableSchema] | None = {} if db.is_sqlite else None
        # Current schemas by storage id for row writers (see :meth:`current`), SQLite only,
        # tagged with the generation they were read at.
        self._current: dict[str, tuple[int, TableSchema | None]] | None = (
            {} if db.is_sqlite else None)
        self._generation = 0
        #: Full-text indexes (created on a table's first search on SQLite).
        self.fulltext = FulltextIndexes(db, lambda: self._generation)

    @contextlib.asynccontextmanager
    async def _change(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction changing schemas; drops the caches once it is over."""
        try:
            async with self.db.write() as conn:
                yield conn
                # Still under the write lock, before the commit: what a row writer cached
                # before this change is stale from here on.
                self._generation += 1
        finally:
            self._generation += 1
            if self._cache is not None:
                self._cache.clear()
            if self._current is not None:
                self._current.clear()

    # -- reading ---------------------------------------------------------------------------

    async def load(self, conn: AsyncConnection, project_id: str, table_type: str, table_id: str,
                   *, for_update: bool = False) -> TableSchema:
        query = sa.select(user_tables).where(
            user_tables.c.project_id == project_id, user_tables.c.table_type == table_type,
            user_tables.c.table_id == table_id)
        if for_update and self.db.is_postgres:
            query = query.with_for_update()
        row = (await conn.execute(query)).first()
        if row is None:
            raise table_not_found(table_type, table_id)
        return schema_from_row(row)

    async def load_by_storage(self, conn: AsyncConnection, storage_id: str,
                              *, share: bool = False) -> TableSchema | None:
        query = sa.select(user_tables).where(user_tables.c.storage_id == storage_id)
        if share and self.db.is_postgres:
            query = query.with_for_update(read=True)
        row = (await conn.execute(query)).first()
        return schema_from_row(row) if row is not None else None

    async def current(self, conn: AsyncConnection, storage_id: str) -> TableSchema | None:
        """The committed schema of a storage id (None: deleted), for a write transaction on
        rows that must check its columns still exist.

        PostgreSQL: read with a share lock (a concurrent schema change waits for the
        transaction, and the transaction for the change). SQLite: cached, because schema
        changes and row writes there share this process's write lock, and every change bumps
        the generation before it commits: an entry read before a change is never used after
        it, and an entry is only read under that lock, so never during a change.
        """
        if self._current is None:
            return await self.load_by_storage(conn, storage_id, share=True)
        generation = self._generation
        hit = self._current.get(storage_id)
        if hit is not None and hit[0] == generation:
            return hit[1]
        schema = await self.load_by_storage(conn, storage_id)
        if generation == self._generation:
            if len(self._current) > 10_000:
                self._current.clear()
            self._current[storage_id] = (generation, schema)
        return schema

    async def get_table(self, project_id: str, table_type: str, table_id: str) -> TableSchema:
        check_table_type(table_type)
        key = (project_id, table_type, table_id)
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        generation = self._generation
        async with self.db.read() as conn:
            schema = await self.load(conn, project_id, table_type, table_id)
        # A change that committed while we read may have made ``schema`` stale: keep it only
        # if no change finished meanwhile.
        if self._cache is not None and generation == self._generation:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = schema
        return schema

    async def project_tables(self, conn: AsyncConnection, project_id: str,
                             table_type: str | None = None) -> list[TableSchema]:
        query = sa.select(user_tables).where(user_tables.c.project_id == project_id)
        if table_type is not None:
            query = query.where(user_tables.c.table_type == table_type)
        return [schema_from_row(r) for r in await conn.execute(query)]

    async def all_tables(self, conn: AsyncConnection) -> list[TableSchema]:
        """Every table of every project."""
        return [schema_from_row(r) for r in await conn.execute(sa.select(user_tables))]

    async def count_rows(self, conn: AsyncConnection, schema: TableSchema) -> int:
        table = layout.row_table(schema)
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)

    async def list_tables(self, project_id: str, table_type: str, *, offset: int = 0,
                          limit: int = 0, page_token: str = "", count_rows: bool = False,
                          prefix: str = "") -> TablePage:
        """Tables sorted by id (then type); ``table_type`` ``""`` lists every type;
        ``prefix`` filters ids case-insensitively."""
        if table_type:
            check_table_type(table_type)
        size = check_page(offset, limit)
        bound = page_tokens.params_hash("tables", project_id, table_type, prefix)
        t = user_tables
        cond = [t.c.project_id == project_id]
        if table_type:
            cond.append(t.c.table_type == table_type)
        if prefix:
            cond.append(sa.func.lower(sa.func.substr(t.c.table_id, 1, len(prefix)))
                        == prefix.lower())
        query = sa.select(t).where(*cond).order_by(t.c.table_id, t.c.table_type).limit(size + 1)
        if page_token:
            cursor = page_tokens.decode(page_token, bound)
            if len(cursor) not in (1, 2) or not all(isinstance(c, str) for c in cursor):
                raise InvalidArgument.field("page_token", "is not a valid page token",
                                            reason="INVALID_PAGE_TOKEN")
            if len(cursor) == 1:
                query = query.where(t.c.table_id > cursor[0])
            else:
                query = query.where(sa.tuple_(t.c.table_id, t.c.table_type) > tuple(cursor))
        elif offset:
            query = query.offset(offset)
        async with self.db.read() as conn:
            total = int(await conn.scalar(sa.select(sa.func.count()).select_from(t).where(*cond))
                        or 0)
            rows = (await conn.execute(query)).all()
            items = [schema_from_row(r) for r in rows[:size]]
            counts = None
            if count_rows:
                counts = {s.storage_id: await self.count_rows(conn, s) for s in items}
        token = ""
        if len(rows) > size:
            last = items[-1]
            cursor = [last.id] if table_type else [last.id, str(last.table_type)]
            token = page_tokens.encode(cursor, bound)
        return TablePage(items=items, total=total, next_page_token=token, num_rows=counts)

    # -- helpers ---------------------------------------------------------------------------

    async def _context(self, conn: AsyncConnection, project_id: str) -> ValidationContext:
        ids = await conn.scalars(sa.select(user_tables.c.table_id).where(
            user_tables.c.project_id == project_id, user_tables.c.table_type == "knowledge"))
        return ValidationContext(models=self.models, knowledge_tables=frozenset(ids))

    async def _validate(self, conn: AsyncConnection, schema: TableSchema,
                        field_for: Callable[[str], str] | None = None, *,
                        previous: TableSchema | None = None) -> None:
        """Validate ``schema``; a RAG column of ``previous`` (the table before the change)
        may keep its knowledge table even if that no longer exists (dangling)."""
        ctx = await self._context(conn, schema.project_id)
        if previous is not None:
            ctx.tolerated_rag_targets = frozenset(
                (c.storage_name, c.gen_config.rag_params.table_id) for c in previous.columns
                if isinstance(c.gen_config, LLMGenConfig) and c.gen_config.rag_params)
        if field_for is None:
            validate_table(schema, ctx)
        else:
            validate_table(schema, ctx, field_for)

    async def _exists(self, conn: AsyncConnection, project_id: str, table_type: str,
                      table_id: str) -> bool:
        found = await conn.scalar(sa.select(user_tables.c.storage_id).where(
            user_tables.c.project_id == project_id, user_tables.c.table_type == table_type,
            user_tables.c.table_id == table_id))
        return found is not None

    async def _save(self, conn: AsyncConnection, schema: TableSchema, next_column: int | None = None
                    ) -> TableSchema:
        now = _now()
        values: dict[str, Any] = {
            "table_id": schema.id, "columns": [column_to_json(c) for c in schema.columns],
            "version": schema.version + 1, "update_time": now}
        if next_column is not None:
            values["next_column"] = next_column
        await conn.execute(user_tables.update()
                           .where(user_tables.c.storage_id == schema.storage_id).values(values))
        return dataclasses.replace(schema, version=schema.version + 1, update_time=now)

    async def _next_column(self, conn: AsyncConnection, storage_id: str) -> int:
        return int(await conn.scalar(sa.select(user_tables.c.next_column).where(
            user_tables.c.storage_id == storage_id)) or 0)

    # -- tables ----------------------------------------------------------------------------

    async def create_table(self, project_id: str, table_type: str, table_id: str,
                           columns: Sequence[ColumnSchema], *, embedding_model: str = "",
                           text_analyzer: str = "",
                           field_for: Callable[[str], str] | None = None) -> TableSchema:
        """Create a table (knowledge tables get their fixed columns first).

        Raises:
            InvalidArgument / NotFound: see :func:`validate_table`.
            AlreadyExists: a table of this type with this id exists.
        """
        check_table_type(table_type)
        check_table_id(table_id)
        user_cols = list(columns)
        fixed: list[ColumnSchema] = []
        if table_type == "knowledge":
            dimension = 0
            if self.models is not None:
                embedding_model = embedding_model or self.models.default("embed").id
                with contextlib.suppress(NotFound):  # validation names an unknown model
                    dimension = self.models.get(embedding_model).embedding_size
            fixed = knowledge_columns(embedding_model, dimension)
            for i, col in enumerate(user_cols):
                if col.id in {c.id for c in fixed}:
                    raise InvalidArgument.field(
                        f"cols[{i}].id", f"{col.id!r} is a fixed column of knowledge tables "
                                         "(created automatically)")
            text_analyzer = text_analyzer or DEFAULT_TEXT_ANALYZER
            if text_analyzer not in TEXT_ANALYZERS:
                raise InvalidArgument.field(
                    "text_analyzer", f"unknown text analyzer {text_analyzer!r}; one of "
                                     f"{', '.join(TEXT_ANALYZERS)}", reason="UNKNOWN_ANALYZER")
        elif embedding_model:
            raise InvalidArgument.field("embedding_model", "only knowledge tables have one")
        elif text_analyzer:
            raise InvalidArgument.field("text_analyzer", "only knowledge tables have one")
        all_cols = [dataclasses.replace(c, storage_name=f"c_{n}")
                    for n, c in enumerate([*fixed, *user_cols], start=1)]
        now = _now()
        schema = TableSchema(project_id=project_id, table_type=table_type,  # type: ignore[arg-type]
                             id=table_id, columns=tuple(all_cols),
                             embedding_model=embedding_model, text_analyzer=text_analyzer,
                             create_time=now, update_time=now,
                             version=1, storage_id=layout.new_storage_id())
        async with self._change() as conn:
            await self._validate(conn, schema, field_for)
            if await self._exists(conn, project_id, table_type, table_id):
                raise _exists_error(table_type, table_id)
            await self._insert_meta(conn, schema, len(all_cols) + 1)
            await layout.create_row_table(conn, schema)
            await self.fulltext.created(conn, schema)
        return schema

    async def _insert_meta(self, conn: AsyncConnection, schema: TableSchema,
                           next_column: int) -> None:
        try:
            async with conn.begin_nested():
                await conn.execute(user_tables.insert().values(
                    storage_id=schema.storage_id, project_id=schema.project_id,
                    table_type=schema.table_type, table_id=schema.id,
                    columns=[column_to_json(c) for c in schema.columns],
                    embedding_model=schema.embedding_model,
                    text_analyzer=schema.text_analyzer, version=schema.version,
                    next_column=next_column, create_time=schema.create_time,
                    update_time=schema.update_time))
        except sa.exc.IntegrityError:  # a concurrent create won the race (PostgreSQL)
            raise _exists_error(schema.table_type, schema.id) from None

    async def delete_table(self, project_id: str, table_type: str, table_id: str) -> None:
        """Delete a table, its rows and its full-text index.

        A knowledge table may be deleted while RAG columns use it: they dangle (see the
        module docstring).
        """
        check_table_type(table_type)
        async with self._change() as conn:
            schema = await self.load(conn, project_id, table_type, table_id, for_update=True)
            await fulltext.drop(conn, schema)
            await layout.drop_row_table(conn, schema)
            await conn.execute(user_tables.delete().where(
                user_tables.c.storage_id == schema.storage_id))

    async def knowledge_tables(self) -> list[TableSchema]:
        """Every project's knowledge tables (start-up checks)."""
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(user_tables).where(
                user_tables.c.table_type == "knowledge"))).all()
        return [schema_from_row(r) for r in rows]

    async def record_embedding_dimensions(self, schema: TableSchema,
                                          dimensions: Mapping[str, int]) -> TableSchema:
        """Record the vector length of embedding columns that have none yet (tables made
        before lengths were recorded); columns already recorded keep theirs."""
        async with self._change() as conn:
            current = await self.load(conn, schema.project_id, schema.table_type, schema.id,
                                      for_update=True)
            columns = tuple(
                dataclasses.replace(c, gen_config=dataclasses.replace(
                    c.gen_config, dimension=dimensions[c.id]))
                if isinstance(c.gen_config, EmbedGenConfig) and not c.gen_config.dimension
                and dimensions.get(c.id) else c
                for c in current.columns)
            if columns == current.columns:
                return current
            return await self._save(conn, dataclasses.replace(current, columns=columns))

    async def dangling_references(self, schema: TableSchema) -> list[DanglingReference]:
        """The RAG columns of ``schema`` whose knowledge table does not exist, in column
        order."""
        targets = rag_targets(schema)
        if not targets:
            return []
        async with self.db.read() as conn:
            existing = set(await conn.scalars(sa.select(user_tables.c.table_id).where(
                user_tables.c.project_id == schema.project_id,
                user_tables.c.table_type == "knowledge",
                user_tables.c.table_id.in_(sorted(set(targets.values()))))))
        return [DanglingReference(column_id, table_id)
                for column_id, table_id in targets.items() if table_id not in existing]

    async def duplicate_table(self, project_id: str, table_type: str, src: str,
                              dst: str = "", *, include_data: bool = True) -> TableSchema:
        """Copy a table's schema (and rows). ``dst`` empty picks ``<src>_copy_<n>``."""
        check_table_type(table_type)
        if dst:
            check_table_id(dst, "table_id_dst")
        async with self._change() as conn:
            source = await self.load(conn, project_id, table_type, src)
            if not dst:
                dst = await self._free_copy_id(conn, project_id, table_type, src)
            elif await self._exists(conn, project_id, table_type, dst):
                raise _exists_error(table_type, dst)
            now = _now()
            copy = dataclasses.replace(source, id=dst, storage_id=layout.new_storage_id(),
                                       create_time=now, update_time=now, version=1)
            await self._insert_meta(conn, copy, await self._next_column(conn, source.storage_id))
            await layout.create_row_table(conn, copy)
            if include_data:
                await layout.copy_rows(conn, source, copy)
            await self.fulltext.created(conn, copy)
        return copy

    async def _free_copy_id(self, conn: AsyncConnection, project_id: str, table_type: str,
                            src: str) -> str:
        taken = set(await conn.scalars(sa.select(user_tables.c.table_id).where(
            user_tables.c.project_id == project_id, user_tables.c.table_type == table_type)))
        n = 1
        while True:
            suffix = f"_copy_{n}"
            candidate = src[:MAX_ID_LENGTH - len(suffix)].rstrip(" ") + suffix
            if candidate not in taken:
                return candidate
            n += 1

    async def rename_table(self, project_id: str, table_type: str, src: str,
                           dst: str) -> TableSchema:
        """Rename a table (metadata only). Renaming a knowledge table rewrites the RAG
        columns pointing at it."""
        check_table_type(table_type)
        check_table_id(dst, "table_id_dst")
        async with self._change() as conn:
            schema = await self.load(conn, project_id, table_type, src, for_update=True)
            if src == dst:
                return schema
            if await self._exists(conn, project_id, table_type, dst):
                raise _exists_error(table_type, dst)
            renamed = await self._save(conn, dataclasses.replace(schema, id=dst))
            if table_type == "knowledge":
                for user in await self.project_tables(conn, project_id):
                    columns = tuple(_retarget_rag(c, src, dst) for c in user.columns)
                    if columns != user.columns:
                        await self._save(conn, dataclasses.replace(user, columns=columns))
        return renamed

    # -- columns ---------------------------------------------------------------------------

    async def add_columns(self, project_id: str, table_type: str, table_id: str,
                          columns: Sequence[ColumnSchema]) -> TableSchema:
        """Append columns (ALTER TABLE ADD COLUMN each, in the metadata's transaction)."""
        check_table_type(table_type)
        if not columns:
            raise InvalidArgument.field("cols", "at least one column is required")
        async with self._change() as conn:
            schema = await self.load(conn, project_id, table_type, table_id, for_update=True)
            first = await self._next_column(conn, schema.storage_id)
            added = [dataclasses.replace(c, storage_name=f"c_{first + i}", system=False)
                     for i, c in enumerate(columns)]
            index = {c.id: i for i, c in enumerate(columns)}
            new = dataclasses.replace(schema, columns=(*schema.columns, *added))
            await self._validate(conn, new, lambda cid: f"cols[{index[cid]}]" if cid in index
                                 else f"cols[{cid}]", previous=schema)
            current = schema
            for col in added:
                await layout.add_column(conn, current, col)
                grown = dataclasses.replace(current, columns=(*current.columns, col))
                await self.fulltext.column_added(conn, current, grown, col)
                current = grown
            return await self._save(conn, new, next_column=first + len(added))

    async def drop_columns(self, project_id: str, table_type: str, table_id: str,
                           names: Sequence[str]) -> TableSchema:
        """Drop columns; refused when another column references them."""
        check_table_type(table_type)
        v = Violations()
        v.check(bool(names), "column_names", "at least one column is required")
        v.raise_if_any()
        async with self._change() as conn:
            schema = await self.load(conn, project_id, table_type, table_id, for_update=True)
            protected = protected_columns(schema)
            for i, name in enumerate(names):
                if schema.column(name) is None:
                    v.add(f"column_names[{i}]", _unknown_column(schema, name))
                elif name in protected:
                    v.add(f"column_names[{i}]", f"column {name!r} is a fixed column of "
                                                f"{table_type} tables and cannot be dropped")
            v.raise_if_any()
            dropped = set(names)
            kept = tuple(c for c in schema.columns if c.id not in dropped)
            for col in kept:
                for ref in _column_refs(col):
                    if ref in dropped:
                        raise InvalidArgument(
                            f"column {ref!r} is referenced by column {col.id!r}; drop or change "
                            f"{col.id!r} first", reason="COLUMN_IN_USE",
                            field_violations=[FieldViolation("column_names",
                                                             f"{ref!r} is used by {col.id!r}")])
            new = dataclasses.replace(schema, columns=kept)
            await self._validate(conn, new, previous=schema)
            rebuild = await self.fulltext.columns_dropping(conn, schema, dropped)
            for col in schema.columns:
                if col.id in dropped:
                    await layout.drop_column(conn, schema, col)
            if rebuild:
                await fulltext.create(conn, new)
            return await self._save(conn, new)

    async def rename_columns(self, project_id: str, table_type: str, table_id: str,
                             mapping: Mapping[str, str]) -> TableSchema:
        """Rename columns and rewrite ``${old}`` references (prompts, RAG search queries).

        Python code is not rewritten: it reads ``row["..."]`` by name, so it must be updated
        by its author.
        """
        check_table_type(table_type)
        v = Violations()
        v.check(bool(mapping), "column_map", "at least one column is required")
        v.raise_if_any()
        async with self._change() as conn:
            schema = await self.load(conn, project_id, table_type, table_id, for_update=True)
            protected = protected_columns(schema)
            for old, new_id in mapping.items():
                if schema.column(old) is None:
                    v.add(f"column_map[{old}]", _unknown_column(schema, old))
                elif old in protected:
                    v.add(f"column_map[{old}]", f"column {old!r} is a fixed column of "
                                                f"{table_type} tables and cannot be renamed")
                problem = column_id_problem(new_id)
                if problem:
                    v.add(f"column_map[{old}]", problem)
            v.raise_if_any()
            renames = {o: n for o, n in mapping.items() if o != n}
            columns = tuple(_renamed(c, renames) for c in schema.columns)
            new = dataclasses.replace(schema, columns=columns)
            await self._validate(conn, new, lambda cid: f"column_map[{cid}]", previous=schema)
            return await self._save(conn, new)

    async def reorder_columns(self, project_id: str, table_type: str, table_id: str,
                              names: Sequence[str]) -> TableSchema:
        """Reorder the non-system columns (system columns keep their place, first)."""
        check_table_type(table_type)
        async with self._change() as conn:
            schema = await self.load(conn, project_id, table_type, table_id, for_update=True)
            movable = [c for c in schema.columns if not c.system]
            wanted = [c.id for c in movable]
            v = Violations()
            for i, name in enumerate(names):
                if name not in wanted:
                    v.add(f"column_names[{i}]", _unknown_column(schema, name)
                          if schema.column(name) is None else
                          f"column {name!r} is a system column and keeps its place")
            if len(set(names)) != len(names):
                v.add("column_names", "lists a column more than once")
            if not v.items and set(names) != set(wanted):
                missing = ", ".join(repr(n) for n in wanted if n not in set(names))
                v.add("column_names", f"must list every non-system column (missing: {missing})")
            v.raise_if_any()
            by_id = {c.id: c for c in movable}
            columns = (*[c for c in schema.columns if c.system], *[by_id[n] for n in names])
            new = dataclasses.replace(schema, columns=columns)
            position = {n: i for i, n in enumerate(names)}
            await self._validate(conn, new, lambda cid: f"column_names[{position.get(cid, cid)}]",
                                 previous=schema)
            return await self._save(conn, new)

    async def update_gen_config(self, project_id: str, table_type: str, table_id: str,
                                configs: Mapping[str, GenConfig | None]) -> TableSchema:
        """Set, replace or (None) remove columns' gen configs."""
        check_table_type(table_type)
        v = Violations()
        v.check(bool(configs), "column_map", "at least one column is required")
        v.raise_if_any()
        async with self._change() as conn:
            schema = await self.load(conn, project_id, table_type, table_id, for_update=True)
            for name in configs:
                col = schema.column(name)
                if col is None:
                    v.add(f"column_map[{name}]", _unknown_column(schema, name))
                elif col.system:
                    v.add(f"column_map[{name}]", f"column {name!r} is a system column; its "
                                                 "generation cannot be changed")
            v.raise_if_any()
            columns = tuple(dataclasses.replace(c, gen_config=configs[c.id])
                            if c.id in configs else c for c in schema.columns)
            new = dataclasses.replace(schema, columns=columns)
            await self._validate(conn, new, lambda cid: f"column_map[{cid}]", previous=schema)
            return await self._save(conn, new)


def _exists_error(table_type: str, table_id: str) -> AlreadyExists:
    return AlreadyExists(f"{table_type} table {table_id!r} already exists",
                         reason="TABLE_ALREADY_EXISTS",
                         metadata={"tableType": table_type, "tableId": table_id},
                         resource_type=f"{table_type} table", resource_name=table_id)


def _unknown_column(schema: TableSchema, name: str) -> str:
    valid = ", ".join(repr(c) for c in schema.column_ids)
    return f"unknown column {name!r} (columns: {valid})"


def _column_refs(col: ColumnSchema) -> list[str]:
    config = col.gen_config
    if isinstance(config, LLMGenConfig):
        refs = references(config.system_prompt) + references(config.prompt)
        if config.rag_params is not None:
            refs += references(config.rag_params.search_query)
        return refs
    if isinstance(config, EmbedGenConfig):
        return [config.source_column]
    return []


def _renamed(col: ColumnSchema, renames: Mapping[str, str]) -> ColumnSchema:
    config = col.gen_config
    if isinstance(config, LLMGenConfig):
        rag = config.rag_params
        if rag is not None:
            rag = dataclasses.replace(
                rag, search_query=rename_references(rag.search_query, renames))
        config = dataclasses.replace(
            config, system_prompt=rename_references(config.system_prompt, renames),
            prompt=rename_references(config.prompt, renames), rag_params=rag)
    elif isinstance(config, EmbedGenConfig) and config.source_column in renames:
        config = dataclasses.replace(config, source_column=renames[config.source_column])
    return dataclasses.replace(col, id=renames.get(col.id, col.id), gen_config=config)


def rag_targets(schema: TableSchema) -> dict[str, str]:
    """Column id -> knowledge table id, for the RAG columns of ``schema``."""
    return {c.id: c.gen_config.rag_params.table_id for c in schema.columns
            if isinstance(c.gen_config, LLMGenConfig) and c.gen_config.rag_params is not None}


def _retarget_rag(col: ColumnSchema, src: str, dst: str) -> ColumnSchema:
    config = col.gen_config
    if (isinstance(config, LLMGenConfig) and config.rag_params is not None
            and config.rag_params.table_id == src):
        rag = dataclasses.replace(config.rag_params, table_id=dst)
        return dataclasses.replace(col, gen_config=dataclasses.replace(config, rag_params=rag))
    return col
