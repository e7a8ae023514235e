"""The row engine: column DAG, cell executors, events, history (see :mod:`.row_engine`).

Public API::

    engine = RowEngine(store=tables, models=models, settings=settings, files=files,
                       retriever=rag, sandbox=LazySandbox(make_pool))   # built by server/app.py
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
from rowforge.server.tables.engine.ports import (
    CallGate,
    FileAccess,
    ModelAccess,
    Retriever,
    SandboxRunner,
    SandboxSource,
)
from rowforge.server.tables.engine.row_engine import (
    MAX_ROWS_PER_CALL,
    STRATEGIES,
    JobRowResult,
    RowEngine,
    check_row_count,
    regen_targets,
)
from rowforge.server.tables.engine.sandbox_source import LazySandbox

__all__ = [
    "MAX_ROWS_PER_CALL",
    "STRATEGIES",
    "BatchColumnExecutor",
    "CallGate",
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
    "FileAccess",
    "JobRowResult",
    "LazySandbox",
    "ModelAccess",
    "Retriever",
    "RetryPolicy",
    "RowCompleted",
    "RowCreated",
    "RowEngine",
    "RowResult",
    "SandboxRunner",
    "SandboxSource",
    "build_dag",
    "check_row_count",
    "column_references",
    "default_executors",
    "regen_targets",
]
