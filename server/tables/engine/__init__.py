"""The row engine: column DAG, cell executors, events, history (see :mod:`.executor`).

Public API::

    engine = install_engine(app)                     # app.engine
    results = await engine.add_rows(schema, [{"question": "Hi"}], sink=queue.put_nowait)
    results = await engine.regen_rows(schema, [row_id], strategy="run_after",
                                      output_column="answer")
    engine.executors.register(EmbedGenConfig, MyEmbedder())   # pluggable column kinds
"""

from rowforge.server.tables.engine.cells import (
    BatchColumnExecutor,
    CellRun,
    ColumnExecutor,
    ExecutorRegistry,
    RetryPolicy,
    default_executors,
)
from rowforge.server.tables.engine.dag import Dag, DagError, build_dag, column_references
from rowforge.server.tables.engine.events import (
    CellCompleted,
    CellDelta,
    CellReferences,
    Completed,
    Event,
    EventSink,
    RowCompleted,
    RowCreated,
    RowResult,
)
from rowforge.server.tables.engine.executor import (
    MAX_ROWS_PER_CALL,
    STRATEGIES,
    RowEngine,
    check_row_count,
    regen_targets,
)
from rowforge.server.tables.engine.install import install_engine

__all__ = [
    "MAX_ROWS_PER_CALL",
    "STRATEGIES",
    "BatchColumnExecutor",
    "CellCompleted",
    "CellDelta",
    "CellReferences",
    "CellRun",
    "ColumnExecutor",
    "Completed",
    "Dag",
    "DagError",
    "Event",
    "EventSink",
    "ExecutorRegistry",
    "RetryPolicy",
    "RowCompleted",
    "RowCreated",
    "RowEngine",
    "RowResult",
    "build_dag",
    "check_row_count",
    "column_references",
    "default_executors",
    "install_engine",
    "regen_targets",
]
