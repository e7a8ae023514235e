"""``client.table``: tables, columns, rows, import/export, and the knowledge-table calls
(``hybrid_search``, ``embed_file``) where the JamAI SDK puts them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeVar, overload

from rowforge.clients import _convert as c
from rowforge.clients import types as t
from rowforge.clients._files import FileSource, file_source
from rowforge.clients._table_jobs import TableJob
from rowforge.clients._transport import (
    Emit,
    Next,
    Open,
    Plan,
    SyncStream,
    Transport,
    Unary,
    Upload,
    one_call,
    sync_view,
)
from rowforge.clients.batch_jobs import job_py
from rowforge.clients.exceptions import NotFoundError
from rowforge.v1 import common_pb2
from rowforge.v1 import knowledge_service_pb2 as kpb
from rowforge.v1 import table_service_pb2 as tpb

TABLE = "TableService"
KNOWLEDGE = "KnowledgeService"
MAX_PAGE = 100
IMPORT_CHUNK = 1024 * 1024
#: How long a table's column types are trusted for typing row values (see ``_dtypes``).
DTYPE_TTL_S = 60.0

TableTypeLike = str | t.TableType | int
M = TypeVar("M", bound=t._Model)


class _DtypeCache:
    """Column types per table, to give ``int`` cells their ints back (numbers travel as
    doubles). Refreshed after ``DTYPE_TTL_S`` and whenever this client changes the schema."""

    def __init__(self) -> None:
        self._entries: dict[tuple[int, str], tuple[float, dict[str, str]]] = {}

    def get(self, key: tuple[int, str]) -> dict[str, str] | None:
        entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry[0] > DTYPE_TTL_S:
            return None
        return entry[1]

    def put(self, table: tpb.Table) -> None:
        if len(self._entries) > 1000:
            self._entries.clear()
        self._entries[(table.table_type, table.id)] = (time.monotonic(), c.dtypes_of(table))

    def drop(self, key: tuple[int, str]) -> None:
        self._entries.pop(key, None)


def _request_of(model: type[M], value: Any, **fields: Any) -> M:
    """A request model from an instance, a dict, or keyword fields."""
    if isinstance(value, model):
        return value
    if isinstance(value, Mapping):
        return model.model_validate(value)
    return model.model_validate(fields)


class TableClient:
    """Generative tables. Reached as ``client.table``; every method exists on the sync
    client (returns the value) and on the async one (returns an awaitable, or an async
    iterator for streams)."""

    def __init__(self, transport: Transport, files: Any) -> None:
        self._t = sync_view(transport)
        self._files = files
        self._dtypes = _DtypeCache()

    # -- plumbing ---------------------------------------------------------------------------

    def _table_changed(self, table: tpb.Table) -> t.TableMetaResponse:
        self._dtypes.put(table)
        return c.table_py(table)

    def _dtypes_for(self, table_type: common_pb2.TableType.ValueType, table_id: str,
                    need: Sequence[str] = ()) -> Plan[dict[str, str]]:
        cached = self._dtypes.get((table_type, table_id))
        if cached is not None and all(n in cached for n in need):
            return cached
        resp = yield Unary(TABLE, "GetTable", tpb.GetTableRequest(
            table_type=table_type, table_id=table_id), idempotent=True)
        self._dtypes.put(resp.table)
        return c.dtypes_of(resp.table)

    # -- tables -----------------------------------------------------------------------------

    def create_action_table(self, request: t.ActionTableSchemaCreate | Mapping[str, Any]
                            ) -> t.TableMetaResponse:
        """Create an action table (input, LLM and Python columns)."""
        return self.create_table("action", _request_of(t.ActionTableSchemaCreate, request))

    def create_knowledge_table(self, request: t.KnowledgeTableSchemaCreate | Mapping[str, Any]
                               ) -> t.TableMetaResponse:
        """Create a knowledge table (Title, Text, File ID, Page and embeddings are added)."""
        return self.create_table("knowledge", _request_of(t.KnowledgeTableSchemaCreate, request))

    def create_chat_table(self, request: t.ChatTableSchemaCreate | Mapping[str, Any]
                          ) -> t.TableMetaResponse:
        """Create a chat table (a ``User`` input and an ``AI`` LLM column)."""
        return self.create_table("chat", _request_of(t.ChatTableSchemaCreate, request))

    def create_table(self, table_type: TableTypeLike,
                     schema: t.TableSchemaCreate | Mapping[str, Any]) -> t.TableMetaResponse:
        """Create a table of any type from a schema (a model or its dict form)."""
        kind = c.table_type_pb(table_type)
        if isinstance(schema, Mapping):
            model: type[t.TableSchemaCreate] = (t.KnowledgeTableSchemaCreate
                                                if kind == common_pb2.TABLE_TYPE_KNOWLEDGE
                                                else t.TableSchemaCreate)
            schema = model.model_validate(schema)
        request = tpb.CreateTableRequest(
            table_type=kind, table_id=schema.id, cols=[c.column_pb(col) for col in schema.cols],
            embedding_model=getattr(schema, "embedding_model", "") or "",
            text_analyzer=getattr(schema, "text_analyzer", "") or "")
        return self._t.run(one_call(Unary(TABLE, "CreateTable", request), self._table_of))

    def get_table(self, table_type: TableTypeLike, table_id: str) -> t.TableMetaResponse:
        """A table's schema and row count.

        Raises:
            TableNotFoundError: no such table of that type.
        """
        request = tpb.GetTableRequest(table_type=c.table_type_pb(table_type), table_id=table_id)
        return self._t.run(one_call(Unary(TABLE, "GetTable", request, idempotent=True),
                                      self._table_of))

    def list_tables(self, table_type: TableTypeLike, offset: int = 0, limit: int = MAX_PAGE,
                    search_query: str = "", count_rows: bool = False, *, page_token: str = ""
                    ) -> t.Page[t.TableMetaResponse]:
        """One page of tables of a type, sorted by id (``search_query``: id prefix)."""
        request = tpb.ListTablesRequest(
            table_type=c.table_type_pb(table_type), offset=offset, limit=limit,
            page_token=page_token, count_rows=count_rows, search_query=search_query)

        def parse(resp: tpb.ListTablesResponse) -> t.Page[t.TableMetaResponse]:
            return t.Page[t.TableMetaResponse](
                items=[c.table_py(x) for x in resp.items], offset=offset, limit=limit,
                total=resp.total, next_page_token=resp.next_page_token)

        return self._t.run(one_call(Unary(TABLE, "ListTables", request, idempotent=True),
                                      parse))

    def iter_tables(self, table_type: TableTypeLike, search_query: str = "",
                    count_rows: bool = False) -> Iterator[t.TableMetaResponse]:
        """Every table of a type, following page tokens."""
        kind = c.table_type_pb(table_type)

        def plan() -> Plan[None]:
            token = ""
            while True:
                resp = yield Unary(TABLE, "ListTables", tpb.ListTablesRequest(
                    table_type=kind, limit=MAX_PAGE, page_token=token, count_rows=count_rows,
                    search_query=search_query), idempotent=True)
                for item in resp.items:
                    yield Emit(c.table_py(item))
                token = resp.next_page_token
                if not token:
                    return

        return self._t.iterate(plan())

    def delete_table(self, table_type: TableTypeLike, table_id: str, *,
                     missing_ok: bool = False) -> t.OkResponse:
        """Delete a table and its rows (``missing_ok``: no error when it does not exist)."""
        kind = c.table_type_pb(table_type)
        self._dtypes.drop((kind, table_id))

        def plan() -> Plan[t.OkResponse]:
            try:
                yield Unary(TABLE, "DeleteTable", tpb.DeleteTableRequest(
                    table_type=kind, table_id=table_id))
            except NotFoundError:
                if not missing_ok:
                    raise
                return t.OkResponse(ok=False, count=0)
            return t.OkResponse(ok=True)

        return self._t.run(plan())

    def duplicate_table(self, table_type: TableTypeLike, table_id_src: str,
                        table_id_dst: str | None = None, include_data: bool = True
                        ) -> t.TableMetaResponse:
        """Copy a table, with its rows unless ``include_data=False``; the server names the copy
        when ``table_id_dst`` is not given."""
        request = tpb.DuplicateTableRequest(
            table_type=c.table_type_pb(table_type), table_id_src=table_id_src,
            table_id_dst=table_id_dst or "", include_data=include_data)
        return self._t.run(one_call(Unary(TABLE, "DuplicateTable", request), self._table_of))

    def rename_table(self, table_type: TableTypeLike, table_id_src: str, table_id_dst: str
                     ) -> t.TableMetaResponse:
        """Rename a table."""
        kind = c.table_type_pb(table_type)
        self._dtypes.drop((kind, table_id_src))
        request = tpb.RenameTableRequest(table_type=kind, table_id_src=table_id_src,
                                         table_id_dst=table_id_dst)
        return self._t.run(one_call(Unary(TABLE, "RenameTable", request), self._table_of))

    # -- columns ----------------------------------------------------------------------------

    def add_columns(self, table_type: TableTypeLike, table_id: str,
                    cols: Sequence[t.ColumnSchemaCreate | Mapping[str, Any]]
                    ) -> t.TableMetaResponse:
        """Append columns to a table."""
        parsed = [col if isinstance(col, t.ColumnSchemaCreate)
                  else t.ColumnSchemaCreate.model_validate(col) for col in cols]
        request = tpb.AddColumnsRequest(table_type=c.table_type_pb(table_type),
                                        table_id=table_id,
                                        cols=[c.column_pb(col) for col in parsed])
        return self._t.run(one_call(Unary(TABLE, "AddColumns", request), self._table_of))

    def add_action_columns(self, request: t.AddActionColumnSchema | Mapping[str, Any]
                           ) -> t.TableMetaResponse:
        """JamAI's shape of :meth:`add_columns` for action tables."""
        request = _request_of(t.AddActionColumnSchema, request)
        return self.add_columns("action", request.id, request.cols)

    def add_knowledge_columns(self, request: t.AddKnowledgeColumnSchema | Mapping[str, Any]
                              ) -> t.TableMetaResponse:
        """JamAI's shape of :meth:`add_columns` for knowledge tables."""
        request = _request_of(t.AddKnowledgeColumnSchema, request)
        return self.add_columns("knowledge", request.id, request.cols)

    def add_chat_columns(self, request: t.AddChatColumnSchema | Mapping[str, Any]
                         ) -> t.TableMetaResponse:
        """JamAI's shape of :meth:`add_columns` for chat tables."""
        request = _request_of(t.AddChatColumnSchema, request)
        return self.add_columns("chat", request.id, request.cols)

    def drop_columns(self, table_type: TableTypeLike,
                     request: t.ColumnDropRequest | Mapping[str, Any] | str,
                     column_names: Sequence[str] | None = None) -> t.TableMetaResponse:
        """Drop columns: ``drop_columns(type, t.ColumnDropRequest(table_id=..., column_names=[..]))``
        or ``drop_columns(type, table_id, [names])``."""
        req = _request_of(t.ColumnDropRequest, request, table_id=request,
                          column_names=list(column_names or []))
        pb = tpb.DropColumnsRequest(table_type=c.table_type_pb(table_type),
                                    table_id=req.table_id, column_names=req.column_names)
        return self._t.run(one_call(Unary(TABLE, "DropColumns", pb), self._table_of))

    def rename_columns(self, table_type: TableTypeLike,
                       request: t.ColumnRenameRequest | Mapping[str, Any] | str,
                       column_map: Mapping[str, str] | None = None) -> t.TableMetaResponse:
        """Rename columns (``{old: new}``); references in prompts follow."""
        req = _request_of(t.ColumnRenameRequest, request, table_id=request,
                          column_map=dict(column_map or {}))
        pb = tpb.RenameColumnsRequest(table_type=c.table_type_pb(table_type),
                                      table_id=req.table_id, column_map=req.column_map)
        return self._t.run(one_call(Unary(TABLE, "RenameColumns", pb), self._table_of))

    def reorder_columns(self, table_type: TableTypeLike,
                        request: t.ColumnReorderRequest | Mapping[str, Any] | str,
                        column_names: Sequence[str] | None = None) -> t.TableMetaResponse:
        """Reorder the non-system columns."""
        req = _request_of(t.ColumnReorderRequest, request, table_id=request,
                          column_names=list(column_names or []))
        pb = tpb.ReorderColumnsRequest(table_type=c.table_type_pb(table_type),
                                       table_id=req.table_id, column_names=req.column_names)
        return self._t.run(one_call(Unary(TABLE, "ReorderColumns", pb), self._table_of))

    def update_gen_config(self, table_type: TableTypeLike,
                          request: t.GenConfigUpdateRequest | Mapping[str, Any] | str,
                          column_map: Mapping[str, Any] | None = None) -> t.TableMetaResponse:
        """Set or replace generation configs (``None`` turns a column into an input)."""
        req = _request_of(t.GenConfigUpdateRequest, request, table_id=request,
                          column_map=dict(column_map or {}))
        pb = tpb.UpdateGenConfigRequest(table_type=c.table_type_pb(table_type),
                                        table_id=req.table_id)
        for name, config in req.column_map.items():
            pb.column_map[name].CopyFrom(c.gen_config_pb(config))
        return self._t.run(one_call(Unary(TABLE, "UpdateGenConfig", pb), self._table_of))

    # -- rows -------------------------------------------------------------------------------

    @overload
    def add_table_rows(self, table_type: TableTypeLike,
                       request: t.MultiRowAddRequest[Literal[True]] | t.RowAddRequest[Literal[True]]
                       ) -> SyncStream[t.RowStreamChunk]: ...

    @overload
    def add_table_rows(
        self, table_type: TableTypeLike,
        request: t.MultiRowAddRequest[Literal[False]] | t.RowAddRequest[Literal[False]]
    ) -> t.MultiRowCompletionResponse: ...

    @overload
    def add_table_rows(self, table_type: TableTypeLike,
                       request: t.MultiRowAddRequest[bool] | t.RowAddRequest[bool]
                       ) -> t.MultiRowCompletionResponse | SyncStream[t.RowStreamChunk]: ...

    def add_table_rows(self, table_type: TableTypeLike,
                       request: t.MultiRowAddRequest[Any] | t.RowAddRequest[Any]) -> Any:
        """Add rows and generate their LLM/Python columns.

        Returns:
            With ``stream=False`` a :class:`~rowforge.clients.types.MultiRowCompletionResponse`
            (``.rows[i].row_id``, ``.rows[i].columns[col].text``); with ``stream=True`` an
            iterator of :class:`~rowforge.clients.types.RowStreamChunk`
            (``.output_column_name``, ``.text``, ``.row_id``).
        """
        if isinstance(request, t.RowAddRequest):
            request = request.to_multi()
        kind = c.table_type_pb(table_type)
        rows = [c.row_values_pb(c.unwrap_row(row), f"data[{i}]")
                for i, row in enumerate(request.data)]
        if request.stream:
            pb = tpb.StreamAddRowsRequest(table_type=kind, table_id=request.table_id, rows=rows,
                                          concurrent=request.concurrent, legacy_values=False,
                                          coalesce_events=True)
            return self._t.iterate(self._row_stream(kind, request.table_id, "StreamAddRows", pb))
        pb2 = tpb.AddRowsRequest(table_type=kind, table_id=request.table_id, rows=rows,
                                 concurrent=request.concurrent, legacy_values=False,
                                 idempotency_key=request.idempotency_key or uuid.uuid4().hex)
        return self._t.run(one_call(Unary(TABLE, "AddRows", pb2, idempotent=True),
                                      self._completions(kind, request.table_id)))

    @overload
    def regen_table_rows(
        self, table_type: TableTypeLike,
        request: t.MultiRowRegenRequest[Literal[True]] | t.RowRegenRequest[Literal[True]]
    ) -> SyncStream[t.RowStreamChunk]: ...

    @overload
    def regen_table_rows(
        self, table_type: TableTypeLike,
        request: t.MultiRowRegenRequest[Literal[False]] | t.RowRegenRequest[Literal[False]]
    ) -> t.MultiRowCompletionResponse: ...

    @overload
    def regen_table_rows(self, table_type: TableTypeLike,
                         request: t.MultiRowRegenRequest[bool] | t.RowRegenRequest[bool]
                         ) -> t.MultiRowCompletionResponse | SyncStream[t.RowStreamChunk]: ...

    def regen_table_rows(self, table_type: TableTypeLike,
                         request: t.MultiRowRegenRequest[Any] | t.RowRegenRequest[Any]) -> Any:
        """Regenerate rows' generated columns (``regen_strategy`` picks which); returns like
        :meth:`add_table_rows`."""
        if isinstance(request, t.RowRegenRequest):
            request = request.to_multi()
        kind = c.table_type_pb(table_type)
        fields: dict[str, Any] = {"table_type": kind, "table_id": request.table_id,
                  "row_ids": request.row_ids,
                  "regen_strategy": c.regen_strategy_pb(request.regen_strategy),
                  "output_column_id": request.output_column_id or "",
                  "concurrent": request.concurrent, "legacy_values": False}
        if request.stream:
            fields["coalesce_events"] = True
            return self._t.iterate(self._row_stream(
                kind, request.table_id, "StreamRegenRows", tpb.StreamRegenRowsRequest(**fields)))
        return self._t.run(one_call(Unary(TABLE, "RegenRows", tpb.RegenRowsRequest(**fields)),
                                      self._completions(kind, request.table_id)))

    def _completions(self, kind: int, table_id: str
                     ) -> Callable[[Any], t.MultiRowCompletionResponse]:
        def parse(resp: Any) -> t.MultiRowCompletionResponse:
            dtypes = self._dtypes.get((kind, table_id))
            return t.MultiRowCompletionResponse(
                rows=[c.row_completion_py(r, dtypes) for r in resp.rows])

        return parse

    def _row_stream(self, kind: int, table_id: str, method: str, request: Any) -> Plan[None]:
        stream = yield Open(TABLE, method, request)
        text = c.StreamText()
        dtypes = self._dtypes.get((kind, table_id))
        while (message := (yield Next(stream))) is not None:
            # coalesce_events: the events ready at once come as one message's batch
            if message.WhichOneof("event") == "batch":
                for event in message.batch.events:
                    yield Emit(text.chunk(event, dtypes))
            else:
                yield Emit(text.chunk(message, dtypes))

    def list_table_rows(
        self,
        table_type: TableTypeLike,
        table_id: str,
        offset: int = 0,
        limit: int = MAX_PAGE,
        where: str | None = None,
        columns: Sequence[str] | None = None,
        search_query: str = "",
        search_columns: Sequence[str] | None = None,
        order_by: str | None = None,
        order_ascending: bool = True,
        *,
        page_token: str = "",
    ) -> t.Page[dict[str, Any]]:
        """One page of rows (``limit`` at most 100) as dicts with wrapped values:
        ``row["col"]["value"]``; ``ID`` and ``Updated at`` are plain.

        Args:
            where: SQL-like filter, e.g. ``"status" = 'active' AND "n" > 3``.
            columns: Columns to return (ID and Updated at always are).
            search_query: Full-text query over ``search_columns`` (default: all text columns).
            page_token: ``next_page_token`` of the previous page (then ``offset`` is ignored).
        """
        kind = c.table_type_pb(table_type)
        request = self._list_rows_request(kind, table_id, where, columns, search_query,
                                          search_columns, order_by, order_ascending)
        request.offset, request.limit, request.page_token = offset, limit, page_token

        def plan() -> Plan[t.Page[dict[str, Any]]]:
            resp, dtypes = yield from self._rows_page(kind, table_id, request)
            return t.Page[dict[str, Any]](
                items=[c.wrapped_row(r, dtypes) for r in resp.items], offset=offset,
                limit=limit, total=resp.total, next_page_token=resp.next_page_token)

        return self._t.run(plan())

    def iter_table_rows(
        self,
        table_type: TableTypeLike,
        table_id: str,
        where: str | None = None,
        columns: Sequence[str] | None = None,
        search_query: str = "",
        search_columns: Sequence[str] | None = None,
        order_by: str | None = None,
        order_ascending: bool = True,
        *,
        page_size: int = MAX_PAGE,
    ) -> Iterator[dict[str, Any]]:
        """Every matching row (wrapped dicts), page after page by ``next_page_token``."""
        kind = c.table_type_pb(table_type)
        request = self._list_rows_request(kind, table_id, where, columns, search_query,
                                          search_columns, order_by, order_ascending)
        request.limit = page_size
        return self._t.iterate(self._all_rows(kind, table_id, request, emit=True))

    def list_all_rows(self, table_type: TableTypeLike, table_id: str, **kwargs: Any
                      ) -> list[dict[str, Any]]:
        """Every matching row as a list (see :meth:`iter_table_rows` for the arguments)."""
        kind = c.table_type_pb(table_type)
        page_size = kwargs.pop("page_size", MAX_PAGE)
        request = self._list_rows_request(kind, table_id, **kwargs)
        request.limit = page_size
        return self._t.run(self._all_rows(kind, table_id, request, emit=False))

    def _all_rows(self, kind: common_pb2.TableType.ValueType, table_id: str, request: tpb.ListRowsRequest, emit: bool
                  ) -> Plan[Any]:
        collected: list[dict[str, Any]] = []
        while True:
            resp, dtypes = yield from self._rows_page(kind, table_id, request)
            for row in resp.items:
                if emit:
                    yield Emit(c.wrapped_row(row, dtypes))
                else:
                    collected.append(c.wrapped_row(row, dtypes))
            if not resp.next_page_token:
                return None if emit else collected
            request.page_token = resp.next_page_token

    def _rows_page(self, kind: common_pb2.TableType.ValueType, table_id: str, request: tpb.ListRowsRequest
                   ) -> Plan[tuple[Any, dict[str, str]]]:
        dtypes = yield from self._dtypes_for(kind, table_id)
        resp = yield Unary(TABLE, "ListRows", request, idempotent=True)
        names = {name for row in resp.items for name in row.cells}
        if not names.issubset(dtypes):
            self._dtypes.drop((kind, table_id))
            dtypes = yield from self._dtypes_for(kind, table_id)
        return resp, dtypes

    @staticmethod
    def _list_rows_request(kind: common_pb2.TableType.ValueType, table_id: str, where: str | None = None,
                           columns: Sequence[str] | None = None, search_query: str = "",
                           search_columns: Sequence[str] | None = None,
                           order_by: str | None = None, order_ascending: bool = True
                           ) -> tpb.ListRowsRequest:
        return tpb.ListRowsRequest(
            table_type=kind, table_id=table_id, where=where or "", columns=list(columns or []),
            search_query=search_query or "", search_columns=list(search_columns or []),
            order_by=order_by or "", descending=not order_ascending, legacy_values=False)

    def get_table_row(self, table_type: TableTypeLike, table_id: str, row_id: str,
                      columns: Sequence[str] | None = None) -> dict[str, Any]:
        """One row as a dict with wrapped values.

        Raises:
            RowNotFoundError: no such row.
        """
        kind = c.table_type_pb(table_type)
        request = tpb.GetRowRequest(table_type=kind, table_id=table_id, row_id=row_id,
                                    columns=list(columns or []), legacy_values=False)

        def plan() -> Plan[dict[str, Any]]:
            dtypes = yield from self._dtypes_for(kind, table_id)
            resp = yield Unary(TABLE, "GetRow", request, idempotent=True)
            return c.wrapped_row(resp.row, dtypes)

        return self._t.run(plan())

    def update_table_rows(self, table_type: TableTypeLike,
                          request: t.MultiRowUpdateRequest | t.RowUpdateRequest) -> t.OkResponse:
        """Set cells of existing rows (``data={row_id: {col: value}}``); generated columns are
        not regenerated."""
        if isinstance(request, t.RowUpdateRequest):
            request = request.to_multi()
        pb = tpb.UpdateRowsRequest(table_type=c.table_type_pb(table_type),
                                   table_id=request.table_id)
        for row_id, values in request.data.items():
            pb.rows[row_id].CopyFrom(c.row_values_pb(c.unwrap_row(values), f"data[{row_id}]"))
        return self._t.run(one_call(Unary(TABLE, "UpdateRows", pb),
                                      lambda r: t.OkResponse(count=r.updated_count)))

    # -- table jobs (durable background generation) ---------------------------------------

    def regen_table_rows_job(self, table_type: TableTypeLike, table_id: str, *,
                             row_ids: Sequence[str] | None = None, where: str | None = None,
                             all_rows: bool = False, regen_strategy: str = "run_all",
                             output_column_id: str = "", only_missing: bool = False,
                             idempotency_key: str | None = None) -> TableJob:
        """Regenerate rows as a durable background job (any number of rows; survives a
        server restart; rate-limited per model). Give exactly one of ``row_ids``, ``where``
        or ``all_rows=True``.

        Args:
            regen_strategy: ``run_all``, ``run_before``, ``run_selected`` or ``run_after``
                (around ``output_column_id``).
            only_missing: Only cells that are empty or not DONE.
            idempotency_key: The same key returns the same job.

        Returns:
            A :class:`TableJob` handle: ``.wait()``, ``.watch()``, ``.cancel()``.
        """
        kind = c.table_type_pb(table_type)
        request = tpb.CreateTableJobRequest(
            table_type=kind, table_id=table_id, row_ids=list(row_ids or ()),
            where=where or "", all_rows=all_rows,
            regen_strategy=c.regen_strategy_pb(regen_strategy),
            output_column_id=output_column_id, only_missing=only_missing,
            idempotency_key=idempotency_key or f"tj-{uuid.uuid4().hex}")
        return self._t.run(one_call(Unary(TABLE, "CreateTableJob", request, idempotent=True),
                                    lambda r: TableJob(self._t, job_py(r.job))))

    def backfill_column(self, table_type: TableTypeLike, table_id: str, column_id: str, *,
                        only_missing: bool = True, where: str | None = None,
                        idempotency_key: str | None = None) -> TableJob:
        """Fill generated column ``column_id`` for every row (or those matching ``where``)
        as a background job; by default only its empty or errored cells."""
        return self.regen_table_rows_job(
            table_type, table_id, where=where, all_rows=not where,
            regen_strategy="run_selected", output_column_id=column_id,
            only_missing=only_missing, idempotency_key=idempotency_key)

    def delete_table_rows(self, table_type: TableTypeLike,
                          request: t.MultiRowDeleteRequest | t.RowDeleteRequest) -> t.OkResponse:
        """Delete rows by id and/or ``where`` filter; ``count`` is how many went."""
        if isinstance(request, t.RowDeleteRequest):
            request = request.to_multi()
        if not request.row_ids and not request.where:
            raise c.bad_argument("row_ids", "give row_ids or a where filter (deleting every row "
                                            "needs where='TRUE')")
        pb = tpb.DeleteRowsRequest(table_type=c.table_type_pb(table_type),
                                   table_id=request.table_id, row_ids=request.row_ids or [],
                                   where=request.where or "")
        return self._t.run(one_call(Unary(TABLE, "DeleteRows", pb),
                                      lambda r: t.OkResponse(count=r.deleted_count)))

    # -- import / export --------------------------------------------------------------------

    def import_table_data(self, table_type: TableTypeLike,
                          request: t.TableImportRequest | Mapping[str, Any]) -> t.ImportResponse:
        """Import a CSV/TSV file (first line: column ids) and generate the new rows."""
        req = _request_of(t.TableImportRequest, request)
        return self.import_rows(table_type, req.table_id, req.file_path,
                                tsv=req.delimiter == "\t", generate=req.generate)

    def import_rows(self, table_type: TableTypeLike, table_id: str,
                    source: str | Path | BinaryIO | bytes, *, tsv: bool = False,
                    generate: bool = True, generate_in_job: bool = False) -> t.ImportResponse:
        """Import CSV/TSV rows from a path, bytes or a binary file object, streamed in
        1 MiB chunks. ``generate_in_job``: return once the rows are stored and generate them
        in a table job (``job_id``) instead of inline."""
        metadata = tpb.ImportRowsMetadata(
            table_type=c.table_type_pb(table_type), table_id=table_id,
            format=tpb.DELIMITED_FORMAT_TSV if tsv else tpb.DELIMITED_FORMAT_CSV,
            generate=generate, generate_in_job=generate_in_job)

        def requests() -> Iterator[tpb.ImportRowsRequest]:
            yield tpb.ImportRowsRequest(metadata=metadata)
            for chunk in _chunks(source, IMPORT_CHUNK):
                yield tpb.ImportRowsRequest(chunk=chunk)

        return self._t.run(one_call(
            Upload(TABLE, "ImportRows", requests()),
            lambda r: t.ImportResponse(row_count=r.row_count, error_count=r.error_count,
                                       row_ids=list(r.row_ids), job_id=r.job.job_id)))

    def iter_export(self, table_type: TableTypeLike, table_id: str,
                    columns: Sequence[str] | None = None, where: str | None = None,
                    delimiter: str = ",", *, raw: bool = False) -> Iterator[bytes]:
        """The table as CSV (or TSV with ``delimiter="\\t"``), in chunks of bytes.

        Text values starting with ``= + - @``, a tab or a carriage return get a leading
        ``'`` (so spreadsheets do not run them as formulas) unless ``raw`` is true: use
        ``raw=True`` for a file meant to be imported again.
        """
        request = _export_request(table_type, table_id, columns, where, delimiter, raw)

        def plan() -> Plan[None]:
            stream = yield Open(TABLE, "ExportRows", request, idempotent=True, deadline="upload")
            while (msg := (yield Next(stream))) is not None:
                yield Emit(msg.chunk)

        return self._t.iterate(plan())

    def export_table_data(self, table_type: TableTypeLike, table_id: str,
                          columns: Sequence[str] | None = None, where: str | None = None,
                          delimiter: str = ",", *, raw: bool = False) -> bytes:
        """The table as CSV/TSV bytes (see :meth:`iter_export` to stream large tables, and
        for ``raw``)."""
        request = _export_request(table_type, table_id, columns, where, delimiter, raw)

        def plan() -> Plan[bytes]:
            stream = yield Open(TABLE, "ExportRows", request, idempotent=True, deadline="upload")
            parts = []
            while (msg := (yield Next(stream))) is not None:
                parts.append(msg.chunk)
            return b"".join(parts)

        return self._t.run(plan())

    # -- knowledge --------------------------------------------------------------------------

    def hybrid_search(self, table_id: str, query: str, k: int = 10, where: str | None = None,
                      reranking_model: str | None = None, columns: Sequence[str] | None = None
                      ) -> t.SearchResults:
        """Search a knowledge table: vector and full-text hits fused with RRF (then reranked
        when ``reranking_model`` is given). Hits are wrapped row dicts with ``.score``."""
        request = kpb.HybridSearchRequest(table_id=table_id, query=query, k=k, where=where or "",
                                          reranking_model=reranking_model or "",
                                          columns=list(columns or []), legacy_values=False)

        def plan() -> Plan[t.SearchResults]:
            dtypes = yield from self._dtypes_for(common_pb2.TABLE_TYPE_KNOWLEDGE, table_id)
            resp = yield Unary(KNOWLEDGE, "HybridSearch", request, idempotent=True)
            out = t.SearchResults()
            out.reranked, out.rerank_error = resp.reranked, resp.rerank_error
            for hit in resp.items:
                row = t.SearchRow(c.wrapped_row(hit.row, dtypes))
                row.score, row.vector_rank, row.lexical_rank = (hit.score, hit.vector_rank,
                                                                hit.lexical_rank)
                out.append(row)
            return out

        return self._t.run(plan())

    def embed_file(self, file_path: FileSource, table_id: str, chunk_size: int = 1000,
                   chunk_overlap: int = 200,
                   progress: Callable[[int, int], None] | None = None, *,
                   name: str | None = None,
                   content_type: str | None = None) -> t.EmbedFileResponse:
        """Parse, chunk and embed a file into a knowledge table (the seed's
        ``embed_file(file_path, table_id)``).

        ``file_path`` is a local path, bytes (with ``name``, whose extension and the content
        decide the type), a binary file object, or the ``file://`` URI of a stored file. A
        local file is uploaded and embedded in one call (EmbedFileContent, 1 MiB chunks):
        refused (too large, unsupported, empty, no text...), it leaves nothing on the server;
        embedded, it is kept as a file (``.uri``) the rows point to. ``progress(chunks_done,
        chunk_count)`` is called as a stored file's chunks are embedded (once at the end for
        an upload).

        Raises:
            FileNotFoundError: the local path does not exist.
            InvalidArgumentError: bad file or chunking; NotFoundError: no such knowledge table
                (or stored file).
        """
        if isinstance(file_path, str) and file_path.startswith("file://"):
            return self._t.run(self._embed_stored(file_path, table_id, chunk_size,
                                                  chunk_overlap, progress))

        def requests(metadata: Any, chunks: Iterator[bytes]
                     ) -> Iterator[kpb.EmbedFileContentRequest]:
            yield kpb.EmbedFileContentRequest(metadata=kpb.EmbedFileContentMetadata(
                table_id=table_id, file=metadata, chunk_size=chunk_size,
                chunk_overlap=chunk_overlap))
            for chunk in chunks:
                yield kpb.EmbedFileContentRequest(chunk=chunk)

        def plan() -> Plan[t.EmbedFileResponse]:
            metadata, chunks = file_source(file_path, name, content_type)
            resp = yield Upload(KNOWLEDGE, "EmbedFileContent", requests(metadata, chunks))
            if progress is not None:
                progress(resp.chunk_count, resp.chunk_count)
            return t.EmbedFileResponse(uri=resp.file.uri, row_ids=list(resp.row_ids),
                                       row_count=resp.row_count, chunk_count=resp.chunk_count,
                                       page_count=resp.page_count)

        return self._t.run(plan())

    @staticmethod
    def _embed_stored(uri: str, table_id: str, chunk_size: int, chunk_overlap: int,
                      progress: Callable[[int, int], None] | None
                      ) -> Plan[t.EmbedFileResponse]:
        stream = yield Open(KNOWLEDGE, "EmbedFile", kpb.EmbedFileRequest(
            table_id=table_id, file_uri=uri, chunk_size=chunk_size,
            chunk_overlap=chunk_overlap), deadline="upload")
        out = t.EmbedFileResponse(uri=uri)
        while (event := (yield Next(stream))) is not None:
            kind = event.WhichOneof("event")
            if kind == "started":
                out.chunk_count = event.started.chunk_count
                out.page_count = event.started.page_count
            elif kind == "progress" and progress is not None:
                progress(event.progress.chunks_done, event.progress.chunk_count)
            elif kind == "completed":
                out.row_count = event.completed.row_count
                out.row_ids = list(event.completed.row_ids)
        return out

    # -- helpers ----------------------------------------------------------------------------

    def _table_of(self, resp: Any) -> t.TableMetaResponse:
        return self._table_changed(resp.table)


def _chunks(source: str | Path | BinaryIO | bytes, size: int) -> Iterator[bytes]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        for i in range(0, len(data), size):
            yield data[i:i + size]
        return
    if isinstance(source, (str, Path)):
        with open(source, "rb") as fh:
            yield from iter(lambda: fh.read(size), b"")
        return
    yield from iter(lambda: source.read(size), b"")


def _export_request(table_type: TableTypeLike, table_id: str, columns: Sequence[str] | None,
                    where: str | None, delimiter: str, raw: bool) -> tpb.ExportRowsRequest:
    return tpb.ExportRowsRequest(
        table_type=c.table_type_pb(table_type), table_id=table_id,
        format=tpb.DELIMITED_FORMAT_TSV if delimiter == "\t" else tpb.DELIMITED_FORMAT_CSV,
        columns=list(columns or []), where=where or "", raw=raw)
