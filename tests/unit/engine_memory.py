"""An in-memory implementation of the TableStore interface the row engine uses, plus helpers
to build schemas and engines for the engine's unit tests (the real store is tested with the
integration tests)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from rowforge.server.config import Settings
from rowforge.server.errors import InvalidArgument, NotFound
from rowforge.server.providers import ModelRegistry
from rowforge.server.tables.engine import RowEngine
from rowforge.server.tables.model import (
    Cell,
    CellStatus,
    ColumnSchema,
    GenConfig,
    LLMGenConfig,
    PythonGenConfig,
    Row,
    TableSchema,
)

_ids = itertools.count(1)


class MemoryStore:
    """``insert_rows`` / ``write_cells`` / ``get_rows`` / ``history`` over dicts.

    Attributes:
        rows: Row id -> stored cells, in insertion order.
        log: ``("insert", [ids])`` and ``("write", row_id, {column: status})`` in call order.
        write_delay / insert_delay: Seconds each ``write_cells`` / ``insert_rows`` takes (to
            widen race windows).
    """

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Cell]] = {}
        self.log: list[tuple[Any, ...]] = []
        self.write_delay = 0.0
        self.insert_delay = 0.0

    async def get_table(self, project_id: str, table_type: str, table_id: str) -> TableSchema:
        raise NotFound("no tables here", reason="TABLE_NOT_FOUND")

    async def insert_rows(self, schema: TableSchema, rows: Sequence[Mapping[str, Any]],
                          **_: Any) -> list[Row]:
        if self.insert_delay:
            await asyncio.sleep(self.insert_delay)
        for i, values in enumerate(rows):
            for name in values:
                if schema.column(name) is None:
                    raise InvalidArgument.field(f"data[{i}].{name}", "unknown column")
        out = []
        for values in rows:
            row_id = f"row-{next(_ids):08d}"
            cells = {}
            for col in schema.columns:
                if col.id in values:
                    cells[col.id] = Cell(value=values[col.id])
                elif col.gen_config is not None:
                    cells[col.id] = Cell(value=None, status=CellStatus.PENDING)
                else:
                    cells[col.id] = Cell(value=None)
            self.rows[row_id] = dict(cells)
            out.append(Row(id=row_id, update_time=dt.datetime.now(dt.UTC), cells=cells))
        self.log.append(("insert", [r.id for r in out]))
        return out

    async def write_cells(self, schema: TableSchema, row_id: str,
                          cells: Mapping[str, Cell]) -> None:
        if self.write_delay:
            await asyncio.sleep(self.write_delay)
        self.log.append(("write", row_id, {k: c.status for k, c in cells.items()}))
        if row_id in self.rows:
            self.rows[row_id].update(cells)

    async def get_rows(self, schema: TableSchema, row_ids: Sequence[str], **_: Any) -> list[Row]:
        out = []
        for row_id in row_ids:
            if row_id not in self.rows:
                raise NotFound(f"row {row_id!r} not found", reason="ROW_NOT_FOUND")
            out.append(Row(id=row_id, update_time=dt.datetime.now(dt.UTC),
                           cells=dict(self.rows[row_id])))
        return out

    async def history(self, schema: TableSchema, *, before_row_id: str | None,
                      columns: Sequence[str], limit: int = 1000) -> list[Row]:
        ids = list(self.rows)
        if before_row_id is not None:
            ids = ids[:ids.index(before_row_id)]
        ids = ids[-limit:]
        return [Row(id=i, update_time=dt.datetime.now(dt.UTC),
                    cells={c: self.rows[i][c] for c in columns if c in self.rows[i]})
                for i in ids]

    def statuses(self, row_id: str) -> dict[str, CellStatus]:
        return {name: cell.status for name, cell in self.rows[row_id].items()}


def col(name: str, dtype: str = "str", gen: GenConfig | None = None) -> ColumnSchema:
    return ColumnSchema(id=name, dtype=dtype, gen_config=gen)


def llm(prompt: str, **kw: Any) -> LLMGenConfig:
    return LLMGenConfig(prompt=prompt, **kw)


def python(code: str) -> PythonGenConfig:
    return PythonGenConfig(python_code=code)


def table(*columns: ColumnSchema, table_type: str = "action", table_id: str = "t") -> TableSchema:
    return TableSchema(project_id="p", table_type=table_type,  # type: ignore[arg-type]
                       id=table_id, columns=tuple(columns), storage_id=f"s-{table_id}")


def make_engine(store: MemoryStore | None = None, *, models: Sequence[dict[str, Any]] = (),
                ports: dict[str, Any] | None = None, **settings: Any) -> RowEngine:
    """An engine over ``store`` with the built-in models plus ``models``; ``ports`` are
    the engine's other components (``files``, ``retriever``, ``sandbox``)."""
    return RowEngine(store=store or MemoryStore(),
                     models=ModelRegistry.from_config(list(models)),
                     settings=Settings(**settings), **(ports or {}))
