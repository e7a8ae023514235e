"""The generation RPCs of TableService: AddRows, StreamAddRows, RegenRows, StreamRegenRows.

:class:`RowGenerationMixin` is inherited by the TableService servicer (``services/table.py``);
it validates the request shape, converts protobuf <-> domain and runs the row engine
. Streams carry the engine's events as the ``event`` oneof; a client that
cancels (or whose deadline passes) cancels the generation behind the stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc

from rowforge.server.auth import current_project
from rowforge.server.errors import InvalidArgument
from rowforge.server.idempotency import IdempotencyKeys, request_hash
from rowforge.server.services.table_convert import (
    file_columns,
    fill_cell_completion,
    legacy_values,
    references_to_pb,
    rows_from_pb,
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
)
from rowforge.server.tables.model import EMBEDDING_DTYPE, Cell, TableSchema
from rowforge.server.tables.store import TableStore
from rowforge.v1 import table_service_pb2 as pb

# REGEN_STRATEGY_UNSPECIFIED is refused: a regeneration is a choice, not a default.
STRATEGIES = {
    pb.REGEN_STRATEGY_RUN_ALL: "run_all",
    pb.REGEN_STRATEGY_RUN_BEFORE: "run_before",
    pb.REGEN_STRATEGY_RUN_SELECTED: "run_selected",
    pb.REGEN_STRATEGY_RUN_AFTER: "run_after",
}

StreamResponse = type[pb.StreamAddRowsResponse] | type[pb.StreamRegenRowsResponse]

#: The most events one coalesced message carries, and the size (bytes) past which a group is
#: split over several messages: far below the 4 MiB a gRPC client accepts by default.
GROUP_EVENTS = 1000
GROUP_BYTES = 1 << 20


class RowGenerationMixin:
    """AddRows / StreamAddRows / RegenRows / StreamRegenRows over the row engine.

    The servicer using it sets ``store``, ``engine`` and ``idempotency``.
    """

    store: TableStore
    engine: RowEngine
    idempotency: IdempotencyKeys

    # -- AddRows ---------------------------------------------------------------------------

    async def AddRows(self, request: pb.AddRowsRequest,
                      context: grpc.aio.ServicerContext) -> pb.AddRowsResponse:
        schema, data, concurrent = await self._add_args(request)

        async def add() -> pb.AddRowsResponse:
            results = await self.engine.add_rows(schema, data, concurrent=concurrent,
                                                 deadline=_deadline(context))
            return _row_completions(schema, results, pb.AddRowsResponse(),
                                    legacy=legacy_values(request))

        return await self.idempotency.run(
            current_project(), "AddRows", request.idempotency_key,
            request_hash(request.SerializeToString(deterministic=True)), add,
            pb.AddRowsResponse.FromString)

    async def StreamAddRows(self, request: pb.StreamAddRowsRequest,
                            context: grpc.aio.ServicerContext
                            ) -> AsyncIterator[pb.StreamAddRowsResponse]:
        schema, data, concurrent = await self._add_args(request)
        deadline = _deadline(context)

        def run(sink: EventSink) -> Awaitable[Any]:
            return self.engine.add_rows(schema, data, concurrent=concurrent, sink=sink,
                                        deadline=deadline)

        encoder = StreamEncoder(pb.StreamAddRowsResponse, schema, legacy=legacy_values(request))
        async for group in _events(run, coalesce=request.coalesce_events):
            for message in encoder.encode_group(group):
                yield message

    async def _add_args(self, request: pb.AddRowsRequest | pb.StreamAddRowsRequest
                        ) -> tuple[TableSchema, list[dict[str, Any]], bool]:
        if request.rows:
            check_row_count(len(request.rows), "rows")
        else:
            check_row_count(len(request.data), "data")
        data = rows_from_pb(request)
        kind = table_type_from_pb(request.table_type)
        if not request.table_id:
            raise InvalidArgument.field("table_id", "is required")
        schema = await self.store.get_table(current_project(), kind, request.table_id)
        concurrent = request.concurrent if request.HasField("concurrent") else True
        return schema, data, concurrent

    # -- RegenRows -------------------------------------------------------------------------

    async def RegenRows(self, request: pb.RegenRowsRequest,
                        context: grpc.aio.ServicerContext) -> pb.RegenRowsResponse:
        schema, args = await self._regen_args(request)
        results = await self.engine.regen_rows(schema, deadline=_deadline(context), **args)
        return _row_completions(schema, results, pb.RegenRowsResponse(),
                                legacy=legacy_values(request))

    async def StreamRegenRows(self, request: pb.StreamRegenRowsRequest,
                              context: grpc.aio.ServicerContext
                              ) -> AsyncIterator[pb.StreamRegenRowsResponse]:
        schema, args = await self._regen_args(request)
        deadline = _deadline(context)

        def run(sink: EventSink) -> Awaitable[Any]:
            return self.engine.regen_rows(schema, sink=sink, deadline=deadline, **args)

        encoder = StreamEncoder(pb.StreamRegenRowsResponse, schema,
                                legacy=legacy_values(request))
        async for group in _events(run, coalesce=request.coalesce_events):
            for message in encoder.encode_group(group):
                yield message

    async def _regen_args(self, request: pb.RegenRowsRequest | pb.StreamRegenRowsRequest
                          ) -> tuple[TableSchema, dict[str, Any]]:
        check_row_count(len(request.row_ids), "row_ids")
        strategy = STRATEGIES.get(request.regen_strategy)
        if strategy is None:
            raise InvalidArgument.field(
                "regen_strategy",
                "is required: REGEN_STRATEGY_RUN_ALL, _RUN_BEFORE, _RUN_SELECTED or _RUN_AFTER"
                if request.regen_strategy == pb.REGEN_STRATEGY_UNSPECIFIED
                else f"unknown strategy {request.regen_strategy}", reason="INVALID_REGEN_STRATEGY")
        kind = table_type_from_pb(request.table_type)
        if not request.table_id:
            raise InvalidArgument.field("table_id", "is required")
        schema = await self.store.get_table(current_project(), kind, request.table_id)
        concurrent = request.concurrent if request.HasField("concurrent") else True
        return schema, {"row_ids": list(request.row_ids), "strategy": strategy,
                        "output_column": request.output_column_id, "concurrent": concurrent}


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The call's deadline as ``loop.time()`` (None without one)."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return asyncio.get_running_loop().time() + remaining


async def _events(run: Callable[[EventSink], Awaitable[Any]], *, coalesce: bool = False
                  ) -> AsyncIterator[list[Event]]:
    """Run the engine in a task and yield its events as they come, one at a time, or with
    ``coalesce`` every event waiting at that moment (up to :data:`GROUP_EVENTS`) at once.

    Grouping never delays an event: while the previous message is being sent, the engine's
    next events queue up, and they leave together as soon as the stream can take them.

    Leaving early (client cancelled, deadline, error) cancels the task and waits for it, so
    the engine's shielded clean-up (cells marked SKIPPED) is done before the RPC ends.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue()
    end = object()
    limit = GROUP_EVENTS if coalesce else 1

    async def produce() -> None:
        try:
            await run(queue.put_nowait)
        finally:
            queue.put_nowait(end)

    task = asyncio.create_task(produce(), name="rowforge-generation")
    try:
        ended = False
        while not ended and (item := await queue.get()) is not end:
            group = [item]
            while len(group) < limit and not queue.empty():
                item = queue.get_nowait()
                if item is end:
                    ended = True
                    break
                group.append(item)
            yield group
        await task  # raises the engine's error, if any
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: it is reported through the RPC, not the loop


def _reported(schema: TableSchema, column: str, cell: Cell) -> Cell:
    """The cell as responses report it."""
    col = schema.column(column)
    if col is not None and col.dtype == EMBEDDING_DTYPE and cell.value is not None:
        # Vectors stay in the table; streaming thousands of floats per cell helps nobody.
        return Cell(value=None, status=cell.status, error=cell.error, usage=cell.usage)
    return cell


def _row_completions(schema: TableSchema, results: list[RowResult],
                     response: pb.AddRowsResponse | pb.RegenRowsResponse, *,
                     legacy: bool) -> Any:
    """``response`` with one ``RowCompletion`` per result (filled in place)."""
    files = file_columns(schema)
    for result in results:
        row = response.rows.add()
        row.row_id = result.row_id
        for name, cell in result.cells.items():
            fill_cell_completion(row.columns[name], _reported(schema, name, cell),
                                 legacy=legacy, file=name in files)
    return response


class StreamEncoder:
    """Engine events of one stream as its response messages.

    A cell's ``CellCompletion`` is built once, for its ``cell_completed`` event, and reused
    for the ``row_completed`` event that repeats it.
    """

    def __init__(self, response: StreamResponse, schema: TableSchema, *,
                 legacy: bool = True) -> None:
        self.response = response
        self.schema = schema
        self.legacy = legacy  # also fill the deprecated google.protobuf.Value fields
        self.files = file_columns(schema)
        self._done: dict[tuple[str, str], tuple[Cell, pb.CellCompletion]] = {}
        self._encoders: dict[type, Callable[[Any, Any], None]] = {
            RowCreated: self._row_created, CellDelta: self._delta,
            CellCompleted: self._cell_completed, RowCompleted: self._row_completed,
            CellReferences: self._references, Completed: self._completed}

    def encode(self, event: Event) -> Any:
        """The response message carrying ``event``."""
        out = self.response()
        self.fill(event, out)
        return out

    def encode_group(self, events: list[Event]) -> Iterator[Any]:
        """The response messages carrying ``events``: one per event for a group of one, else
        ``batch`` messages of up to :data:`GROUP_BYTES` each."""
        if len(events) == 1:
            yield self.encode(events[0])
            return
        out, size = self.response(), 0
        for event in events:
            if size >= GROUP_BYTES:
                yield out
                out, size = self.response(), 0
            item = out.batch.events.add()
            self.fill(event, item)
            size += item.ByteSize()
        yield out

    def fill(self, event: Event, out: Any) -> None:
        """Set ``out`` (an empty response message) to carry ``event``."""
        encoder = self._encoders.get(type(event))
        if encoder is None:
            raise TypeError(f"unknown engine event {event!r}")
        encoder(event, out)

    # Messages are filled in place: cheaper than building nested messages to copy in.
    def _row_created(self, event: RowCreated, out: Any) -> None:
        created = out.row_created
        created.row_index = event.row_index
        created.row_id = event.row_id

    def _delta(self, event: CellDelta, out: Any) -> None:
        delta = out.delta
        delta.row_id = event.row_id
        delta.output_column_name = event.column
        delta.text = event.text
        delta.index = event.index

    def _cell_completed(self, event: CellCompleted, out: Any) -> None:
        completed = out.cell_completed
        completed.row_id = event.row_id
        completed.output_column_name = event.column
        fill_cell_completion(completed.cell, _reported(self.schema, event.column, event.cell),
                             legacy=self.legacy, file=event.column in self.files)
        self._done[(event.row_id, event.column)] = (event.cell, completed.cell)

    def _row_completed(self, event: RowCompleted, out: Any) -> None:
        result = event.row
        completed = out.row_completed
        completed.row_index = event.row_index
        row = completed.row
        row.row_id = result.row_id
        for name, cell in result.cells.items():
            done = self._done.pop((result.row_id, name), None)
            if done is not None and done[0] is cell:
                row.columns[name].CopyFrom(done[1])
            else:
                fill_cell_completion(row.columns[name], _reported(self.schema, name, cell),
                                     legacy=self.legacy, file=name in self.files)

    def _references(self, event: CellReferences, out: Any) -> None:
        out.references.CopyFrom(pb.CellReferences(
            row_id=event.row_id, output_column_name=event.column,
            references=references_to_pb(event.references)))

    def _completed(self, event: Completed, out: Any) -> None:
        completed = out.completed
        completed.row_count = event.row_count
        completed.error_count = event.error_count

