"""Domain events of a generation call (no protobuf; the service converts them).

Per row, a stream carries: :class:`RowCreated` first; then per generated cell optionally
:class:`CellReferences` (before the cell's first delta), :class:`CellDelta` messages (``index``
0, 1, 2 ... per cell) and one :class:`CellCompleted` once the cell is stored; then
:class:`RowCompleted`. The call ends with exactly one :class:`Completed`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from rowforge.server.tables.model import Cell, CellStatus, References


@dataclass(frozen=True)
class RowResult:
    """The outcome of one row: its id and its generated columns' cells (table order)."""

    row_id: str
    cells: dict[str, Cell] = field(default_factory=dict)

    @property
    def error_count(self) -> int:
        return sum(1 for c in self.cells.values() if c.status == CellStatus.ERROR)


@dataclass(frozen=True)
class RowCreated:
    """The row's inputs are stored (for a regeneration: the row exists); generation follows."""

    row_index: int
    row_id: str


@dataclass(frozen=True)
class CellReferences:
    """RAG references of a cell, sent before its first delta."""

    row_id: str
    column: str
    references: References


@dataclass(frozen=True)
class CellDelta:
    """Generated text of a cell (one or more tokens); ``index`` counts the cell's deltas."""

    row_id: str
    column: str
    text: str
    index: int


@dataclass(frozen=True)
class CellCompleted:
    """A cell is final (DONE, ERROR or SKIPPED) and stored."""

    row_id: str
    column: str
    cell: Cell


@dataclass(frozen=True)
class RowCompleted:
    """Every cell of the row is final."""

    row_index: int
    row: RowResult


@dataclass(frozen=True)
class Completed:
    """Terminal event: rows handled and cells that ended in ERROR."""

    row_count: int
    error_count: int


Event = RowCreated | CellReferences | CellDelta | CellCompleted | RowCompleted | Completed
#: Receives events; must not block (e.g. ``asyncio.Queue.put_nowait``).
EventSink = Callable[[Event], None]
