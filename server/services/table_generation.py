"""The generation RPCs of TableService: AddRows, StreamAddRows, RegenRows, StreamRegenRows.

:class:`RowGenerationMixin` is inherited by the TableService servicer (``services/table.py``);
it validates the request shape, converts protobuf <-> domain and runs the row engine
(``app.engine``). Streams carry the engine's events as the ``event`` oneof; a client that
cancels (or whose deadline passes) cancels the generation behind the stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from rowforge.server.auth import current_project
from rowforge.server.errors import InvalidArgument
from rowforge.server.services.table_convert import (
    cell_completion_to_pb,
    references_to_pb,
    struct_from_pb,
    table_type_from_pb,
)
from rowforge.server.tables.engine import (
    CellCompleted,
    CellDelta,
    CellReferences,
    Completed,
    Event,
    EventSink,
    RowCompleted,
    RowCreated,
    RowEngine,
    RowResult,
    check_row_count,
    install_engine,
)
from rowforge.server.tables.model import EMBEDDING_DTYPE, Cell, TableSchema
from rowforge.v1 import table_service_pb2 as pb

STRATEGIES = {
    pb.REGEN_STRATEGY_UNSPECIFIED: "run_all",
    pb.REGEN_STRATEGY_RUN_ALL: "run_all",
    pb.REGEN_STRATEGY_RUN_BEFORE: "run_before",
    pb.REGEN_STRATEGY_RUN_SELECTED: "run_selected",
    pb.REGEN_STRATEGY_RUN_AFTER: "run_after",
}

StreamResponse = type[pb.StreamAddRowsResponse] | type[pb.StreamRegenRowsResponse]


class RowGenerationMixin:
    """AddRows / StreamAddRows / RegenRows / StreamRegenRows over ``app.engine``.

    The servicer using it must set ``self.app``.
    """

    app: Any

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # The servicer is built in the service's register(): installing the engine there
        # gives app.engine (and app.sandbox, with its stop hook) before the server starts,
        # without the servicer's own __init__ having to know about it.
        self = super().__new__(cls)
        app = kwargs.get("app", args[0] if args else None)
        if app is not None and hasattr(app, "on_stop"):
            install_engine(app)
        return self

    @property
    def engine(self) -> RowEngine:
        return install_engine(self.app)

    # -- AddRows ---------------------------------------------------------------------------

    async def AddRows(self, request: pb.AddRowsRequest,
                      context: grpc.aio.ServicerContext) -> pb.AddRowsResponse:
        schema, data, concurrent = await self._add_args(request)
        results = await self.engine.add_rows(schema, data, concurrent=concurrent,
                                             deadline=_deadline(context))
        return pb.AddRowsResponse(rows=[_row_completion(schema, r) for r in results])

    async def StreamAddRows(self, request: pb.StreamAddRowsRequest,
                            context: grpc.aio.ServicerContext
                            ) -> AsyncIterator[pb.StreamAddRowsResponse]:
        schema, data, concurrent = await self._add_args(request)
        deadline = _deadline(context)

        def run(sink: EventSink) -> Awaitable[Any]:
            return self.engine.add_rows(schema, data, concurrent=concurrent, sink=sink,
                                        deadline=deadline)

        async for event in _events(run):
            yield _stream_message(pb.StreamAddRowsResponse, schema, event)

    async def _add_args(self, request: pb.AddRowsRequest | pb.StreamAddRowsRequest
                        ) -> tuple[TableSchema, list[dict[str, Any]], bool]:
        check_row_count(len(request.data), "data")
        kind = table_type_from_pb(request.table_type)
        if not request.table_id:
            raise InvalidArgument.field("table_id", "is required")
        schema = await self.app.tables.get_table(current_project(), kind, request.table_id)
        data = [struct_from_pb(row) for row in request.data]
        concurrent = request.concurrent if request.HasField("concurrent") else True
        return schema, data, concurrent

    # -- RegenRows -------------------------------------------------------------------------

    async def RegenRows(self, request: pb.RegenRowsRequest,
                        context: grpc.aio.ServicerContext) -> pb.RegenRowsResponse:
        schema, args = await self._regen_args(request)
        results = await self.engine.regen_rows(schema, deadline=_deadline(context), **args)
        return pb.RegenRowsResponse(rows=[_row_completion(schema, r) for r in results])

    async def StreamRegenRows(self, request: pb.StreamRegenRowsRequest,
                              context: grpc.aio.ServicerContext
                              ) -> AsyncIterator[pb.StreamRegenRowsResponse]:
        schema, args = await self._regen_args(request)
        deadline = _deadline(context)

        def run(sink: EventSink) -> Awaitable[Any]:
            return self.engine.regen_rows(schema, sink=sink, deadline=deadline, **args)

        async for event in _events(run):
            yield _stream_message(pb.StreamRegenRowsResponse, schema, event)

    async def _regen_args(self, request: pb.RegenRowsRequest | pb.StreamRegenRowsRequest
                          ) -> tuple[TableSchema, dict[str, Any]]:
        check_row_count(len(request.row_ids), "row_ids")
        strategy = STRATEGIES.get(request.regen_strategy)
        if strategy is None:
            raise InvalidArgument.field("regen_strategy",
                                        f"unknown strategy {request.regen_strategy}")
        kind = table_type_from_pb(request.table_type)
        if not request.table_id:
            raise InvalidArgument.field("table_id", "is required")
        schema = await self.app.tables.get_table(current_project(), kind, request.table_id)
        concurrent = request.concurrent if request.HasField("concurrent") else True
        return schema, {"row_ids": list(request.row_ids), "strategy": strategy,
                        "output_column": request.output_column_id, "concurrent": concurrent}


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The call's deadline as ``loop.time()`` (None without one)."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return asyncio.get_running_loop().time() + remaining


async def _events(run: Callable[[EventSink], Awaitable[Any]]) -> AsyncIterator[Event]:
    """Run the engine in a task and yield its events as they come.

    Leaving early (client cancelled, deadline, error) cancels the task and waits for it, so
    the engine's shielded clean-up (cells marked SKIPPED) is done before the RPC ends.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue()
    end = object()

    async def produce() -> None:
        try:
            await run(queue.put_nowait)
        finally:
            queue.put_nowait(end)

    task = asyncio.create_task(produce(), name="rowforge-generation")
    try:
        while (item := await queue.get()) is not end:
            yield item
        await task  # raises the engine's error, if any
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: it is reported through the RPC, not the loop


def _cell_completion(schema: TableSchema, column: str, cell: Cell) -> pb.CellCompletion:
    col = schema.column(column)
    if col is not None and col.dtype == EMBEDDING_DTYPE and cell.value is not None:
        # Vectors stay in the table; streaming thousands of floats per cell helps nobody.
        cell = Cell(value=None, status=cell.status, error=cell.error, usage=cell.usage)
    return cell_completion_to_pb(cell)


def _row_completion(schema: TableSchema, result: RowResult) -> pb.RowCompletion:
    out = pb.RowCompletion(row_id=result.row_id)
    for name, cell in result.cells.items():
        out.columns[name].CopyFrom(_cell_completion(schema, name, cell))
    return out


def _stream_message(response: StreamResponse, schema: TableSchema, event: Event) -> Any:
    if isinstance(event, CellDelta):
        return response(delta=pb.CellDelta(row_id=event.row_id, output_column_name=event.column,
                                           text=event.text, index=event.index))
    if isinstance(event, CellCompleted):
        return response(cell_completed=pb.CellCompleted(
            row_id=event.row_id, output_column_name=event.column,
            cell=_cell_completion(schema, event.column, event.cell)))
    if isinstance(event, RowCreated):
        return response(row_created=pb.RowCreated(row_index=event.row_index,
                                                  row_id=event.row_id))
    if isinstance(event, RowCompleted):
        return response(row_completed=pb.RowCompleted(
            row_index=event.row_index, row=_row_completion(schema, event.row)))
    if isinstance(event, CellReferences):
        return response(references=pb.CellReferences(
            row_id=event.row_id, output_column_name=event.column,
            references=references_to_pb(event.references)))
    if isinstance(event, Completed):
        return response(completed=pb.RowsCompleted(row_count=event.row_count,
                                                   error_count=event.error_count))
    raise TypeError(f"unknown engine event {event!r}")
