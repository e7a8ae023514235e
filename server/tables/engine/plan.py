"""A table's generation plan: its DAG plus, per generated column, the parsed templates and
what the executors need. Built once per (table, schema version) and cached by the engine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rowforge.fastcore import Template
from rowforge.server.tables.engine.dag import Dag, build_dag, default_prompt
from rowforge.server.tables.model import (
    CHAT_AI,
    FILE_DTYPES,
    ColumnSchema,
    LLMGenConfig,
    TableSchema,
)


@dataclass(frozen=True)
class ColumnPlan:
    """One generated column, ready to run.

    Attributes:
        column: The column.
        deps: Generated columns it reads (it waits for them).
        prompt / system / search: Parsed templates of an LLM column (prompt falls back to
            ``${User}`` for a chat table's AI column); None otherwise.
        multi_turn: The column sees earlier rows as conversation history.
        file_refs: Referenced file/image/audio columns (sent to the model as attachments).
    """

    column: ColumnSchema
    deps: tuple[str, ...]
    prompt: Template | None = None
    system: Template | None = None
    search: Template | None = None
    multi_turn: bool = False
    file_refs: tuple[ColumnSchema, ...] = ()


@dataclass(frozen=True)
class TablePlan:
    """How the rows of one schema version are generated.

    Attributes:
        schema: The schema it was built from.
        dag: Dependencies between generated columns.
        columns: Generated column id -> its plan.
        sequential: Rows of a call must be generated one after another, each seeing the
            previous ones (chat tables, and tables with a multi-turn column).
    """

    schema: TableSchema
    dag: Dag
    columns: dict[str, ColumnPlan]
    sequential: bool

    @property
    def order(self) -> tuple[str, ...]:
        return self.dag.order


def build_plan(schema: TableSchema, template: Callable[[str], Template] = Template) -> TablePlan:
    """Validate the DAG and parse every template of ``schema``.

    Raises:
        DagError: unknown reference or cycle (see :func:`build_dag`).
    """
    dag = build_dag(schema, template)
    columns: dict[str, ColumnPlan] = {}
    sequential = schema.table_type == "chat"
    for col in schema.columns:
        config: Any = col.gen_config
        if config is None:
            continue
        if not isinstance(config, LLMGenConfig):
            columns[col.id] = ColumnPlan(col, dag.deps[col.id])
            continue
        prompt = template(default_prompt(schema, col))
        system = template(config.system_prompt) if config.system_prompt else None
        search = (template(config.rag_params.search_query)
                  if config.rag_params is not None and config.rag_params.search_query else None)
        multi_turn = config.multi_turn or (schema.table_type == "chat" and col.id == CHAT_AI)
        sequential = sequential or multi_turn
        refs = set(prompt.references) | set(system.references if system else ())
        file_refs = tuple(c for c in schema.columns if c.id in refs and c.dtype in FILE_DTYPES)
        columns[col.id] = ColumnPlan(col, dag.deps[col.id], prompt=prompt, system=system,
                                     search=search, multi_turn=multi_turn, file_refs=file_refs)
    return TablePlan(schema=schema, dag=dag, columns=columns, sequential=sequential)
