"""TableService: tables, columns and rows over gRPC.

Thin: validate the request shape, convert protobuf <-> domain (``table_convert``), call the
:class:`~rowforge.server.tables.store.TableStore` and the row engine. The four generation RPCs
(AddRows, StreamAddRows, RegenRows, StreamRegenRows) come from the engine's
``RowGenerationMixin``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from rowforge.server.auth import current_project
from rowforge.server.errors import FailedPrecondition, InvalidArgument, Violations
from rowforge.server.idempotency import IdempotencyKeys, request_hash
from rowforge.server.services.batch_job import job_pb
from rowforge.server.services.table_convert import (
    columns_from_pb,
    fill_rows,
    gen_config_from_pb,
    legacy_values,
    row_to_pb,
    schema_to_pb,
    table_type_from_pb,
    updates_from_pb,
)
from rowforge.server.services.table_generation import STRATEGIES, RowGenerationMixin
from rowforge.server.tables.delimited import (
    DelimitedError,
    DelimitedReader,
    DelimitedWriter,
    RowTyper,
)
from rowforge.server.tables.engine import RowEngine
from rowforge.server.tables.jobs import TableJobs, TableJobSpec
from rowforge.server.tables.model import CellStatus, TableSchema
from rowforge.server.tables.row_store import RowQuery, select_columns
from rowforge.server.tables.store import TableStore
from rowforge.v1 import common_pb2, table_service_pb2_grpc
from rowforge.v1 import table_service_pb2 as pb

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TableService"].full_name

MAX_UPDATE_ROWS = 100
#: ImportRows limits: bytes per chunk, bytes per file, rows per file.
MAX_IMPORT_CHUNK = 1024 * 1024
MAX_IMPORT_BYTES = 256 * 1024 * 1024
MAX_IMPORT_ROWS = 100_000
EXPORT_CHUNK = 64 * 1024
FORMATS = {pb.DELIMITED_FORMAT_UNSPECIFIED: "csv", pb.DELIMITED_FORMAT_CSV: "csv",
           pb.DELIMITED_FORMAT_TSV: "tsv"}


def _required(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument.field(field, "is required")
    return value


class TableServicer(RowGenerationMixin, table_service_pb2_grpc.TableServiceServicer):
    """TableService over :class:`TableStore`; generation RPCs from ``RowGenerationMixin``.

    Args:
        store: The table store.
        engine: The row engine (generation, re-embedding after updates, imports).
        idempotency: Remembers AddRows/ImportRows responses by idempotency key.
        table_jobs: Starts table jobs (None: CreateTableJob is FAILED_PRECONDITION).
    """

    def __init__(self, store: TableStore, engine: RowEngine,
                 idempotency: IdempotencyKeys, *, table_jobs: TableJobs | None = None) -> None:
        self.store = store
        self.engine = engine
        self.idempotency = idempotency
        self.table_jobs = table_jobs

    # -- table jobs ------------------------------------------------------------------------

    async def CreateTableJob(self, request: pb.CreateTableJobRequest,
                             context: grpc.aio.ServicerContext) -> pb.CreateTableJobResponse:
        if self.table_jobs is None:
            raise FailedPrecondition("this server runs no table jobs",
                                     reason="TABLE_JOBS_UNAVAILABLE")
        strategy = STRATEGIES.get(request.regen_strategy)
        if strategy is None:
            raise InvalidArgument.field(
                "regen_strategy", "is required: REGEN_STRATEGY_RUN_ALL, _RUN_BEFORE, "
                "_RUN_SELECTED or _RUN_AFTER", reason="INVALID_REGEN_STRATEGY")
        spec = TableJobSpec(
            table_type=table_type_from_pb(request.table_type),
            table_id=_required(request.table_id, "table_id"), strategy=strategy,
            output_column=request.output_column_id, only_missing=request.only_missing,
            row_ids=tuple(request.row_ids), where=request.where, all_rows=request.all_rows)
        job = await self.table_jobs.create(current_project(), spec, request.idempotency_key)
        return pb.CreateTableJobResponse(job=job_pb(job))

    async def _schema(self, table_type: common_pb2.TableType.ValueType, table_id: str,
                      field: str = "table_id") -> TableSchema:
        kind = table_type_from_pb(table_type)
        return await self.store.get_table(current_project(), kind, _required(table_id, field))

    # -- tables ----------------------------------------------------------------------------

    async def CreateTable(self, request: pb.CreateTableRequest,
                          context: grpc.aio.ServicerContext) -> pb.CreateTableResponse:
        kind = table_type_from_pb(request.table_type)
        columns = columns_from_pb(request.cols)
        positions = {c.id: i for i, c in enumerate(columns)}
        schema = await self.store.create_table(
            current_project(), kind, request.table_id, columns,
            embedding_model=request.embedding_model, text_analyzer=request.text_analyzer,
            field_for=lambda cid: f"cols[{positions[cid]}]" if cid in positions
            else f"cols[{cid}]")
        return pb.CreateTableResponse(table=schema_to_pb(schema, 0))

    async def GetTable(self, request: pb.GetTableRequest,
                       context: grpc.aio.ServicerContext) -> pb.GetTableResponse:
        schema = await self._schema(request.table_type, request.table_id)
        return pb.GetTableResponse(table=schema_to_pb(
            schema, await self.store.count_rows(schema),
            await self.store.dangling_references(schema)))

    async def ListTables(self, request: pb.ListTablesRequest,
                         context: grpc.aio.ServicerContext) -> pb.ListTablesResponse:
        # TABLE_TYPE_UNSPECIFIED lists every type.
        kind = table_type_from_pb(request.table_type) if request.table_type else ""
        page = await self.store.list_tables(
            current_project(), kind, offset=request.offset, limit=request.limit,
            page_token=request.page_token, count_rows=request.count_rows,
            prefix=request.search_query)
        counts = page.num_rows or {}
        return pb.ListTablesResponse(
            items=[schema_to_pb(s, counts.get(s.storage_id)) for s in page.items],
            next_page_token=page.next_page_token, total=page.total)

    async def DeleteTable(self, request: pb.DeleteTableRequest,
                          context: grpc.aio.ServicerContext) -> pb.DeleteTableResponse:
        kind = table_type_from_pb(request.table_type)
        await self.store.delete_table(current_project(), kind,
                                      _required(request.table_id, "table_id"))
        return pb.DeleteTableResponse()

    async def DuplicateTable(self, request: pb.DuplicateTableRequest,
                             context: grpc.aio.ServicerContext) -> pb.DuplicateTableResponse:
        kind = table_type_from_pb(request.table_type)
        include = request.include_data if request.HasField("include_data") else True
        schema = await self.store.duplicate_table(
            current_project(), kind, _required(request.table_id_src, "table_id_src"),
            request.table_id_dst, include_data=include)
        return pb.DuplicateTableResponse(
            table=schema_to_pb(schema, await self.store.count_rows(schema)))

    async def RenameTable(self, request: pb.RenameTableRequest,
                          context: grpc.aio.ServicerContext) -> pb.RenameTableResponse:
        kind = table_type_from_pb(request.table_type)
        schema = await self.store.rename_table(
            current_project(), kind, _required(request.table_id_src, "table_id_src"),
            request.table_id_dst)
        return pb.RenameTableResponse(table=schema_to_pb(schema,
                                                         await self.store.count_rows(schema)))

    # -- columns ---------------------------------------------------------------------------

    async def AddColumns(self, request: pb.AddColumnsRequest,
                         context: grpc.aio.ServicerContext) -> pb.AddColumnsResponse:
        kind = table_type_from_pb(request.table_type)
        schema = await self.store.add_columns(current_project(), kind,
                                              _required(request.table_id, "table_id"),
                                              columns_from_pb(request.cols))
        return pb.AddColumnsResponse(table=schema_to_pb(schema))

    async def DropColumns(self, request: pb.DropColumnsRequest,
                          context: grpc.aio.ServicerContext) -> pb.DropColumnsResponse:
        kind = table_type_from_pb(request.table_type)
        schema = await self.store.drop_columns(current_project(), kind,
                                               _required(request.table_id, "table_id"),
                                               list(request.column_names))
        return pb.DropColumnsResponse(table=schema_to_pb(schema))

    async def RenameColumns(self, request: pb.RenameColumnsRequest,
                            context: grpc.aio.ServicerContext) -> pb.RenameColumnsResponse:
        kind = table_type_from_pb(request.table_type)
        schema = await self.store.rename_columns(current_project(), kind,
                                                 _required(request.table_id, "table_id"),
                                                 dict(request.column_map))
        return pb.RenameColumnsResponse(table=schema_to_pb(schema))

    async def ReorderColumns(self, request: pb.ReorderColumnsRequest,
                             context: grpc.aio.ServicerContext) -> pb.ReorderColumnsResponse:
        kind = table_type_from_pb(request.table_type)
        schema = await self.store.reorder_columns(current_project(), kind,
                                                  _required(request.table_id, "table_id"),
                                                  list(request.column_names))
        return pb.ReorderColumnsResponse(table=schema_to_pb(schema))

    async def UpdateGenConfig(self, request: pb.UpdateGenConfigRequest,
                              context: grpc.aio.ServicerContext) -> pb.UpdateGenConfigResponse:
        kind = table_type_from_pb(request.table_type)
        configs = {name: gen_config_from_pb(config) for name, config in request.column_map.items()}
        schema = await self.store.update_gen_config(current_project(), kind,
                                                    _required(request.table_id, "table_id"),
                                                    configs)
        return pb.UpdateGenConfigResponse(table=schema_to_pb(schema))

    # -- rows ------------------------------------------------------------------------------

    async def ListRows(self, request: pb.ListRowsRequest,
                       context: grpc.aio.ServicerContext) -> pb.ListRowsResponse:
        schema = await self._schema(request.table_type, request.table_id)
        page = await self.store.list_rows(schema, RowQuery(
            offset=request.offset, limit=request.limit, page_token=request.page_token,
            where=request.where, columns=list(request.columns),
            search_query=request.search_query, search_columns=list(request.search_columns),
            order_by=request.order_by, descending=request.descending))
        response = pb.ListRowsResponse(next_page_token=page.next_page_token, total=page.total)
        fill_rows(response.items, page.items, schema, legacy=legacy_values(request))
        return response

    async def GetRow(self, request: pb.GetRowRequest,
                     context: grpc.aio.ServicerContext) -> pb.GetRowResponse:
        schema = await self._schema(request.table_type, request.table_id)
        rows = await self.store.get_rows(schema, [_required(request.row_id, "row_id")],
                                         columns=list(request.columns))
        return pb.GetRowResponse(row=row_to_pb(rows[0], schema, legacy=legacy_values(request)))

    async def UpdateRows(self, request: pb.UpdateRowsRequest,
                         context: grpc.aio.ServicerContext) -> pb.UpdateRowsResponse:
        field, count = ("rows", len(request.rows)) if request.rows else ("data", len(request.data))
        v = Violations()
        v.check(count > 0, field, "at least one row is required")
        v.check(count <= MAX_UPDATE_ROWS, field,
                f"at most {MAX_UPDATE_ROWS} rows per call (got {count})")
        v.raise_if_any()
        updates = updates_from_pb(request)
        schema = await self._schema(request.table_type, request.table_id)
        count = await self.engine.update_rows(schema, updates)
        return pb.UpdateRowsResponse(updated_count=count)

    async def DeleteRows(self, request: pb.DeleteRowsRequest,
                         context: grpc.aio.ServicerContext) -> pb.DeleteRowsResponse:
        schema = await self._schema(request.table_type, request.table_id)
        count = await self.store.delete_rows(schema, list(request.row_ids), request.where)
        return pb.DeleteRowsResponse(deleted_count=count)

    # -- import / export -------------------------------------------------------------------

    async def ImportRows(self, request_iterator: AsyncIterator[pb.ImportRowsRequest],
                         context: grpc.aio.ServicerContext) -> pb.ImportRowsResponse:
        """All or nothing: records are parsed and typed as the chunks stream in (errors name
        their line), inserted in one transaction at the end, then generated through the
        engine in batches of 100 rows."""
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("part") != "metadata":
            raise InvalidArgument.field("metadata", "the first message must carry the metadata")
        meta = first.metadata
        schema = await self._schema(meta.table_type, meta.table_id)
        if meta.format not in FORMATS:
            raise InvalidArgument.field("metadata.format", "must be CSV or TSV")
        reader = DelimitedReader(FORMATS[meta.format])
        typer = RowTyper(schema)
        parts = [meta.SerializeToString(deterministic=True)]  # what the idempotency key binds
        rows: list[dict[str, Any]] = []

        def take(records: list[tuple[int, list[str]]]) -> None:
            for line, fields in records:
                row = typer.add(line, fields)
                if row is not None:
                    rows.append(row)
            if len(rows) > MAX_IMPORT_ROWS:
                raise InvalidArgument.field("chunk", f"at most {MAX_IMPORT_ROWS} rows per import",
                                            reason="IMPORT_TOO_LARGE")

        try:
            async for message in request_iterator:
                if message.WhichOneof("part") != "chunk":
                    raise InvalidArgument.field("metadata", "only the first message carries "
                                                            "metadata; send chunks after it")
                if len(message.chunk) > MAX_IMPORT_CHUNK:
                    raise InvalidArgument.field("chunk", f"at most {MAX_IMPORT_CHUNK} bytes per "
                                                         "chunk")
                if reader.bytes_read + len(message.chunk) > MAX_IMPORT_BYTES:
                    raise InvalidArgument.field("chunk", f"at most {MAX_IMPORT_BYTES} bytes per "
                                                         "import", reason="IMPORT_TOO_LARGE")
                take(reader.feed(message.chunk))
                parts.append(message.chunk)
            take(reader.close())
        except DelimitedError as exc:
            raise InvalidArgument.field(f"line {exc.line}", exc.message,
                                        reason="MALFORMED_DELIMITED") from None
        typer.finish()
        return await self.idempotency.run(
            current_project(), "ImportRows", meta.idempotency_key, request_hash(*parts),
            lambda: self._import(schema, meta, rows), pb.ImportRowsResponse.FromString,
            field="metadata.idempotency_key")

    async def _import(self, schema: TableSchema, meta: pb.ImportRowsMetadata,
                      rows: list[dict[str, Any]]) -> pb.ImportRowsResponse:
        """Insert the typed rows in one transaction, then generate them."""
        generate = (meta.generate if meta.HasField("generate") else True) and bool(
            schema.generated_columns)
        in_job = generate and meta.generate_in_job
        if in_job:
            if self.table_jobs is None:
                raise FailedPrecondition("this server runs no table jobs",
                                         reason="TABLE_JOBS_UNAVAILABLE")
            self.table_jobs.check_table(schema)  # before anything is written
        status = CellStatus.PENDING if generate else CellStatus.SKIPPED
        inserted = await self.store.insert_rows(schema, rows, generated_status=status,
                                                field_name="rows")
        ids = [row.id for row in inserted]
        if in_job and ids:
            assert self.table_jobs is not None
            job = await self.table_jobs.create_for_rows(current_project(), schema, ids)
            return pb.ImportRowsResponse(row_count=len(inserted), row_ids=ids, job=job_pb(job))
        errors = await self.engine.generate_stored(schema, inserted) if generate else 0
        return pb.ImportRowsResponse(row_count=len(inserted), error_count=errors, row_ids=ids)

    async def ExportRows(self, request: pb.ExportRowsRequest,
                         context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ExportRowsResponse]:
        schema = await self._schema(request.table_type, request.table_id)
        if request.format not in FORMATS:
            raise InvalidArgument.field("format", "must be CSV or TSV")
        columns = select_columns(schema, list(request.columns))
        writer = DelimitedWriter(FORMATS[request.format], columns, raw=request.raw)
        pending = [writer.header()]
        size = len(pending[0])
        async for rows in self.store.iter_rows(schema, columns=[c.id for c in columns],
                                               where=request.where):
            text = writer.rows(rows)
            pending.append(text)
            size += len(text)
            if size >= EXPORT_CHUNK:
                yield pb.ExportRowsResponse(chunk="".join(pending).encode())
                pending, size = [], 0
        if pending:
            yield pb.ExportRowsResponse(chunk="".join(pending).encode())
