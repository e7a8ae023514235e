"""The column DAG of a row: which generated column waits for which.

A generated column depends on the columns it references: an LLM column on the ``${col}``
references of its prompt, system prompt and RAG search query (and a chat table's AI column on
``User`` when it has no prompt); a Python column on every column to its left (the seed passes
"all upstream columns" in ``row``); an embedding column on its source column. Only the
dependencies between *generated* columns order the work: input values are there before
generation starts.

:func:`column_references` lists a column's references, :func:`build_dag` validates them (known
columns, no cycles) and computes the topological layers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from rowforge.fastcore import Template
from rowforge.server.errors import FailedPrecondition
from rowforge.server.tables.model import (
    CHAT_AI,
    CHAT_USER,
    ColumnSchema,
    EmbedGenConfig,
    LLMGenConfig,
    PythonGenConfig,
    TableSchema,
)

#: Parses a template (the engine passes its cache).
TemplateFactory = Callable[[str], Template]


class DagError(FailedPrecondition):
    """The table's columns cannot be ordered (unknown reference or a cycle); names the column."""

    def __init__(self, message: str, *, reason: str, column: str) -> None:
        super().__init__(message, reason=reason, metadata={"column": column},
                         resource_type="column", resource_name=column)
        self.column = column


def default_prompt(schema: TableSchema, column: ColumnSchema) -> str:
    """The prompt an LLM column sends when its own is empty: a chat table's AI column answers
    the User message."""
    config = column.gen_config
    if (isinstance(config, LLMGenConfig) and not config.prompt and schema.table_type == "chat"
            and column.id == CHAT_AI and schema.column(CHAT_USER) is not None):
        return "${" + CHAT_USER + "}"
    return config.prompt if isinstance(config, LLMGenConfig) else ""


def column_references(schema: TableSchema, column: ColumnSchema,
                      template: TemplateFactory = Template) -> list[str]:
    """Columns ``column`` reads, in order of first appearance (empty for input columns)."""
    config = column.gen_config
    refs: list[str] = []
    if isinstance(config, LLMGenConfig):
        texts = [config.system_prompt, default_prompt(schema, column)]
        if config.rag_params is not None:
            texts.append(config.rag_params.search_query)
        for text in texts:
            if text:
                refs.extend(template(text).references)
    elif isinstance(config, PythonGenConfig):
        for other in schema.columns:
            if other.id == column.id:
                break
            refs.append(other.id)
    elif isinstance(config, EmbedGenConfig):
        refs.append(config.source_column)
    return list(dict.fromkeys(refs))


@dataclass(frozen=True)
class Dag:
    """Dependencies between generated columns.

    Attributes:
        order: Generated columns in a topological order (table order when it is one).
        deps: Column -> the generated columns it reads directly.
        layers: Columns grouped so that each depends only on earlier layers.
    """

    order: tuple[str, ...]
    deps: Mapping[str, tuple[str, ...]]
    layers: tuple[tuple[str, ...], ...]

    def dependants(self, column: str) -> list[str]:
        """Every generated column that reads ``column``, directly or not, in ``order``."""
        hit = {column}
        out = []
        for name in self.order:
            if name != column and any(d in hit for d in self.deps[name]):
                hit.add(name)
                out.append(name)
        return out

    def closure(self, columns: Iterable[str]) -> list[str]:
        """``columns`` plus every generated column they read, directly or not, in ``order``."""
        wanted = set(columns)
        for name in reversed(self.order):
            if name in wanted:
                wanted.update(self.deps[name])
        return [n for n in self.order if n in wanted]


def build_dag(schema: TableSchema, template: TemplateFactory = Template) -> Dag:
    """The DAG of ``schema``'s generated columns.

    Raises:
        DagError: a column references an unknown column (``UNKNOWN_REFERENCE``) or the
            references form a cycle (``COLUMN_CYCLE``); the message names the column.
    """
    known = set(schema.column_ids)
    generated = [c.id for c in schema.columns if c.gen_config is not None]
    is_generated = set(generated)
    deps: dict[str, tuple[str, ...]] = {}
    for col in schema.columns:
        if col.gen_config is None:
            continue
        refs = column_references(schema, col, template)
        for ref in refs:
            if ref not in known:
                raise DagError(f"column {col.id!r} references unknown column {ref!r}",
                               reason="UNKNOWN_REFERENCE", column=col.id)
            if ref == col.id:
                raise DagError(f"column {col.id!r} references itself",
                               reason="COLUMN_CYCLE", column=col.id)
        deps[col.id] = tuple(r for r in refs if r in is_generated)
    layers = topological_layers(generated, deps)
    return Dag(order=tuple(n for layer in layers for n in layer), deps=deps,
               layers=tuple(tuple(layer) for layer in layers))


def topological_layers(nodes: Sequence[str],
                       deps: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Kahn's algorithm: layers of ``nodes`` (each layer in ``nodes`` order).

    Raises:
        DagError: ``COLUMN_CYCLE`` naming a column on the cycle.
    """
    node_set = set(nodes)
    remaining = {n: {d for d in deps.get(n, ()) if d in node_set} for n in nodes}
    placed: set[str] = set()
    layers: list[list[str]] = []
    while remaining:
        layer = [n for n in nodes if n in remaining and remaining[n] <= placed]
        if not layer:
            cycle = _find_cycle(remaining)
            raise DagError(f"columns {' -> '.join(repr(c) for c in cycle)} reference each other "
                           "in a cycle", reason="COLUMN_CYCLE", column=cycle[0])
        for n in layer:
            del remaining[n]
        placed.update(layer)
        layers.append(layer)
    return layers


def _find_cycle(graph: Mapping[str, set[str]]) -> list[str]:
    """One cycle among the nodes left by Kahn's algorithm (each has an unplaced dependency)."""
    start = next(iter(graph))
    path = [start]
    seen = {start: 0}
    node = start
    while True:
        node = next(d for d in sorted(graph[node]) if d in graph)
        if node in seen:
            return [*path[seen[node]:], node]
        seen[node] = len(path)
        path.append(node)
