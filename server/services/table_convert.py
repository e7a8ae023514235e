"""Protobuf <-> domain conversion for TableService (schemas, gen configs, rows, cells).

Shared by the table servicer and the row-generation mixin; nothing else in the tables domain
sees protobuf. ``*_from_pb`` functions raise INVALID_ARGUMENT naming the request field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from rowforge import codec
from rowforge.cell_values import row_values_from_pb, set_cell_value
from rowforge.server.errors import InvalidArgument
from rowforge.server.tables.model import (
    DTYPES,
    FILE_DTYPES,
    ID_COLUMN,
    UPDATED_AT_COLUMN,
    Cell,
    CellStatus,
    CellUsage,
    ColumnSchema,
    DanglingReference,
    EmbedGenConfig,
    GenConfig,
    LLMGenConfig,
    PythonGenConfig,
    RAGParams,
    References,
    Row,
    TableSchema,
)
from rowforge.server.tables.validation import DEFAULT_RAG_K
from rowforge.v1 import common_pb2
from rowforge.v1 import table_service_pb2 as pb

TABLE_TYPE_NAMES = {
    common_pb2.TABLE_TYPE_ACTION: "action",
    common_pb2.TABLE_TYPE_KNOWLEDGE: "knowledge",
    common_pb2.TABLE_TYPE_CHAT: "chat",
}
TABLE_TYPE_ENUMS = {name: value for value, name in TABLE_TYPE_NAMES.items()}

STATUS_TO_PB = {
    CellStatus.PENDING: pb.CELL_STATUS_PENDING,
    CellStatus.RUNNING: pb.CELL_STATUS_RUNNING,
    CellStatus.DONE: pb.CELL_STATUS_DONE,
    CellStatus.ERROR: pb.CELL_STATUS_ERROR,
    CellStatus.SKIPPED: pb.CELL_STATUS_SKIPPED,
}
STATUS_FROM_PB = {value: status for status, value in STATUS_TO_PB.items()}


# -- table types ---------------------------------------------------------------------------

def table_type_from_pb(value: common_pb2.TableType.ValueType,
                       field: str = "table_type") -> str:
    """The domain table type; INVALID_ARGUMENT for UNSPECIFIED or unknown values."""
    name = TABLE_TYPE_NAMES.get(value)
    if name is None:
        raise InvalidArgument.field(field, "must be TABLE_TYPE_ACTION, TABLE_TYPE_KNOWLEDGE or "
                                           "TABLE_TYPE_CHAT", reason="INVALID_TABLE_TYPE")
    return name


def table_type_to_pb(name: str) -> common_pb2.TableType.ValueType:
    return TABLE_TYPE_ENUMS[name]


# -- values --------------------------------------------------------------------------------

def _refuse_rows_and_data(request: Any) -> None:
    if request.rows and request.data:
        raise InvalidArgument.field("rows", "send rows (typed values) or data (Struct), not "
                                            "both", reason="ROWS_AND_DATA")


def rows_from_pb(request: Any) -> list[dict[str, Any]]:
    """The rows of an AddRows/StreamAddRows request: typed ``rows``, or the deprecated Struct
    ``data`` of older clients (never both: INVALID_ARGUMENT)."""
    _refuse_rows_and_data(request)
    if request.rows:
        return [row_values_from_pb(row) for row in request.rows]
    return [codec.struct_from_pb(row) for row in request.data]


def updates_from_pb(request: Any) -> dict[str, dict[str, Any]]:
    """UpdateRows' row id -> values: typed ``rows`` or the deprecated Struct ``data``."""
    _refuse_rows_and_data(request)
    if request.rows:
        return {row_id: row_values_from_pb(values) for row_id, values in request.rows.items()}
    return {row_id: codec.struct_from_pb(values) for row_id, values in request.data.items()}


def legacy_values(request: Any) -> bool:
    """Whether responses also fill the deprecated ``google.protobuf.Value`` fields (default
    true: clients written before typed values read only those)."""
    return request.legacy_values if request.HasField("legacy_values") else True


def file_columns(schema: TableSchema) -> frozenset[str]:
    """Columns whose values are file references (``CellValue.file_uri``)."""
    return frozenset(c.id for c in schema.columns if c.dtype in FILE_DTYPES)


def value_text(value: Any) -> str:
    """A cell value as text (the seed SDK's ``.text``): "" for NULL."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


# -- gen configs ---------------------------------------------------------------------------

def gen_config_from_pb(config: pb.GenConfig) -> GenConfig | None:
    """The domain gen config, or None when nothing is set (an input column)."""
    kind = config.WhichOneof("config")
    if kind == "llm":
        llm = config.llm
        rag = None
        if llm.HasField("rag_params"):
            r = llm.rag_params
            rag = RAGParams(table_id=r.table_id, k=r.k or DEFAULT_RAG_K,
                            reranking_model=r.reranking_model, search_query=r.search_query,
                            inline_citations=r.inline_citations,
                            generate_query=(r.generate_query if r.HasField("generate_query")
                                            else True))
        return LLMGenConfig(
            model=llm.model, system_prompt=llm.system_prompt, prompt=llm.prompt,
            temperature=llm.temperature if llm.HasField("temperature") else None,
            max_tokens=llm.max_tokens if llm.HasField("max_tokens") else None,
            top_p=llm.top_p if llm.HasField("top_p") else None,
            multi_turn=llm.multi_turn, rag_params=rag)
    if kind == "python":
        return PythonGenConfig(python_code=config.python.python_code)
    if kind == "embed":
        return EmbedGenConfig(embedding_model=config.embed.embedding_model,
                              source_column=config.embed.source_column)
    return None


def gen_config_to_pb(config: GenConfig | None) -> pb.GenConfig:
    out = pb.GenConfig()
    if isinstance(config, LLMGenConfig):
        llm = out.llm
        llm.model = config.model
        llm.system_prompt = config.system_prompt
        llm.prompt = config.prompt
        llm.multi_turn = config.multi_turn
        if config.temperature is not None:
            llm.temperature = config.temperature
        if config.max_tokens is not None:
            llm.max_tokens = config.max_tokens
        if config.top_p is not None:
            llm.top_p = config.top_p
        if config.rag_params is not None:
            r = config.rag_params
            llm.rag_params.CopyFrom(pb.RAGParams(
                table_id=r.table_id, k=r.k, reranking_model=r.reranking_model,
                search_query=r.search_query, inline_citations=r.inline_citations,
                generate_query=r.generate_query))
    elif isinstance(config, PythonGenConfig):
        out.python.python_code = config.python_code
    elif isinstance(config, EmbedGenConfig):
        out.embed.embedding_model = config.embedding_model
        out.embed.source_column = config.source_column
        out.embed.dimension = config.dimension
    return out


# -- columns and tables --------------------------------------------------------------------

DATA_TYPES = {
    pb.DATA_TYPE_STR: "str", pb.DATA_TYPE_INT: "int", pb.DATA_TYPE_FLOAT: "float",
    pb.DATA_TYPE_BOOL: "bool", pb.DATA_TYPE_FILE: "file", pb.DATA_TYPE_IMAGE: "image",
    pb.DATA_TYPE_AUDIO: "audio", pb.DATA_TYPE_DATETIME: "datetime",
    pb.DATA_TYPE_EMBEDDING: "embedding",
}
DATA_TYPE_ENUMS = {name: value for value, name in DATA_TYPES.items()}


def column_dtype(col: pb.Column, field: str = "cols[0]") -> str:
    """The column's dtype from ``data_type`` or ``dtype`` (both: they must agree; neither:
    str)."""
    named = DATA_TYPES.get(col.data_type) if col.data_type else None
    if col.data_type and named is None:
        raise InvalidArgument.field(f"{field}.data_type", f"unknown data type {col.data_type}",
                                    reason="INVALID_DTYPE")
    if named is not None and col.dtype and col.dtype != named:
        raise InvalidArgument.field(
            f"{field}.data_type", f"column {col.id!r}: data_type {pb.DataType.Name(col.data_type)}"
                                  f" and dtype {col.dtype!r} disagree; send one",
            reason="INVALID_DTYPE")
    return named or col.dtype or "str"


def column_from_pb(col: pb.Column, field: str = "cols[0]") -> ColumnSchema:
    """A user column from a request (``system`` is ignored: only the server sets it; no type
    means str)."""
    config = gen_config_from_pb(col.gen_config) if col.HasField("gen_config") else None
    return ColumnSchema(id=col.id, dtype=column_dtype(col, field), gen_config=config)


def columns_from_pb(cols: Iterable[pb.Column], field: str = "cols") -> list[ColumnSchema]:
    out = []
    for i, col in enumerate(cols):
        dtype = column_dtype(col, f"{field}[{i}]")
        if dtype not in DTYPES:
            raise InvalidArgument.field(
                f"{field}[{i}].dtype", f"column {col.id!r}: unknown dtype {dtype!r}; use one "
                                       f"of {', '.join(DTYPES)}", reason="INVALID_DTYPE")
        out.append(column_from_pb(col, f"{field}[{i}]"))
    return out


def column_to_pb(col: ColumnSchema) -> pb.Column:
    out = pb.Column(id=col.id, dtype=col.dtype, system=col.system,
                    data_type=DATA_TYPE_ENUMS.get(col.dtype, pb.DATA_TYPE_UNSPECIFIED))
    if col.gen_config is not None:
        out.gen_config.CopyFrom(gen_config_to_pb(col.gen_config))
    return out


def schema_to_pb(schema: TableSchema, num_rows: int | None = None,
                 dangling: Sequence[DanglingReference] = ()) -> pb.Table:
    """A ``Table`` message; ``cols`` starts with the system columns ID and Updated at."""
    out = pb.Table(id=schema.id, table_type=table_type_to_pb(schema.table_type),
                   embedding_model=schema.embedding_model, num_rows=num_rows or 0,
                   text_analyzer=schema.text_analyzer,
                   dangling_references=[pb.DanglingReference(column_id=d.column_id,
                                                             table_id=d.table_id)
                                        for d in dangling])
    out.cols.append(pb.Column(id=ID_COLUMN, dtype="str", system=True,
                              data_type=pb.DATA_TYPE_STR))
    out.cols.append(pb.Column(id=UPDATED_AT_COLUMN, dtype="datetime", system=True,
                              data_type=pb.DATA_TYPE_DATETIME))
    out.cols.extend(column_to_pb(c) for c in schema.columns)
    if schema.create_time is not None:
        out.create_time.CopyFrom(codec.timestamp_to_pb(schema.create_time))
    if schema.update_time is not None:
        out.update_time.CopyFrom(codec.timestamp_to_pb(schema.update_time))
    return out


# -- cells and rows ------------------------------------------------------------------------

def usage_to_pb(usage: CellUsage | None) -> common_pb2.Usage:
    if usage is None:
        return common_pb2.Usage()
    return common_pb2.Usage(prompt_tokens=usage.prompt_tokens,
                            completion_tokens=usage.completion_tokens,
                            total_tokens=usage.total_tokens)


def references_to_pb(refs: References | None) -> pb.References:
    if refs is None:
        return pb.References()
    out = pb.References(table_id=refs.table_id, search_query=refs.search_query, chunks=[
        pb.Chunk(row_id=c.row_id, title=c.title, text=c.text, page=c.page or 0,
                 file_id=c.file_id, score=c.score) for c in refs.chunks],
        query_model=refs.query_model)
    if refs.query_usage is not None:
        out.query_usage.CopyFrom(usage_to_pb(refs.query_usage))
    return out


def cell_to_pb(cell: Cell, *, input_column: bool = False, legacy: bool = True,
               file: bool = False) -> pb.Cell:
    """A stored cell; input cells report CELL_STATUS_UNSPECIFIED (they are not generated).
    ``legacy`` also fills the deprecated ``value``; ``file``: the value is a file URI."""
    out = pb.Cell()
    fill_cell(out, cell, input_column=input_column, legacy=legacy, file=file)
    return out


def fill_cell(out: pb.Cell, cell: Cell, *, input_column: bool = False, legacy: bool = True,
              file: bool = False) -> None:
    """Set an empty ``Cell`` in place to ``cell`` (see :func:`cell_to_pb`): several times
    cheaper than building a message and copying it into its parent."""
    status = cell.status
    if not (input_column and status == CellStatus.DONE):
        out.status = STATUS_TO_PB[status]
    if cell.error:
        out.error = cell.error
    set_cell_value(out.typed_value, cell.value, file=file)
    if legacy:
        codec.set_value(out.value, cell.value, str)
    _fill_usage_and_references(out, cell)


def _fill_usage_and_references(out: pb.Cell | pb.CellCompletion, cell: Cell) -> None:
    usage = cell.usage
    if usage is not None:
        pb_usage = out.usage
        pb_usage.prompt_tokens = usage.prompt_tokens
        pb_usage.completion_tokens = usage.completion_tokens
        pb_usage.total_tokens = usage.total_tokens
    if cell.references is not None:
        out.references.CopyFrom(references_to_pb(cell.references))


def fill_cell_completion(out: pb.CellCompletion, cell: Cell, *, legacy: bool = True,
                         file: bool = False) -> None:
    """Set an empty ``CellCompletion`` (e.g. a field of a response) to ``cell``; ``legacy``
    also fills the deprecated ``value``, ``file``: the value is a file URI.

    Filling a message in place is several times cheaper than building sub-messages and
    copying them in (which is what passing them to a constructor does); streams send one of
    these per generated cell.
    """
    value = cell.value
    out.text = value_text(value)
    set_cell_value(out.typed_value, value, file=file)
    if legacy:
        codec.set_value(out.value, value, str)
    out.status = STATUS_TO_PB[cell.status]
    if cell.error:
        out.error = cell.error
    _fill_usage_and_references(out, cell)


def row_to_pb(row: Row, schema: TableSchema | None = None,
              inputs: frozenset[str] | None = None, *, legacy: bool = True,
              files: frozenset[str] | None = None) -> pb.Row:
    """A ``Row``; with ``schema`` (or its precomputed ``inputs`` and ``files``), input cells
    report an unspecified status and file columns' values are file URIs. ``legacy`` also
    fills the deprecated ``value`` of each cell."""
    if inputs is None:
        inputs = input_columns(schema) if schema is not None else frozenset()
    if files is None:
        files = file_columns(schema) if schema is not None else frozenset()
    out = pb.Row()
    fill_row(out, row, inputs, files, legacy=legacy)
    return out


def fill_row(out: pb.Row, row: Row, inputs: frozenset[str], files: frozenset[str], *,
             legacy: bool = True) -> None:
    """Set an empty ``Row`` in place (see :func:`row_to_pb`), e.g. ``response.items.add()``:
    a page of rows is converted without a message built and copied per row and cell."""
    out.id = row.id
    if row.update_time is not None:
        codec.fill_timestamp(out.update_time, row.update_time)
    cells = out.cells
    for name, cell in row.cells.items():
        fill_cell(cells[name], cell, input_column=name in inputs, legacy=legacy,
                  file=name in files)


def rows_to_pb(rows: Iterable[Row], schema: TableSchema, *, legacy: bool = True) -> list[pb.Row]:
    inputs, files = input_columns(schema), file_columns(schema)
    return [row_to_pb(r, inputs=inputs, legacy=legacy, files=files) for r in rows]


def fill_rows(out: Any, rows: Iterable[Row], schema: TableSchema, *,
              legacy: bool = True) -> None:
    """Append ``rows`` to a repeated ``Row`` field (``out``), each filled in place."""
    inputs, files = input_columns(schema), file_columns(schema)
    for row in rows:
        fill_row(out.add(), row, inputs, files, legacy=legacy)


def input_columns(schema: TableSchema) -> frozenset[str]:
    return frozenset(c.id for c in schema.columns if c.gen_config is None)
