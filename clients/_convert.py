"""Protobuf <-> client types. Pure functions; no I/O."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2
from pydantic import BaseModel

from rowforge import codec
from rowforge.cell_values import CellValueError, cell_value_from_pb, row_values_to_pb
from rowforge.clients import types as t
from rowforge.clients.exceptions import InvalidArgumentError
from rowforge.v1 import common_pb2, file_service_pb2, model_service_pb2
from rowforge.v1 import table_service_pb2 as tpb

ID_COLUMN = "ID"
UPDATED_AT_COLUMN = "Updated at"

_TABLE_TYPES = {
    t.TableType.ACTION: common_pb2.TABLE_TYPE_ACTION,
    t.TableType.KNOWLEDGE: common_pb2.TABLE_TYPE_KNOWLEDGE,
    t.TableType.CHAT: common_pb2.TABLE_TYPE_CHAT,
}
_TABLE_TYPE_NAMES = {v: k for k, v in _TABLE_TYPES.items()}
_REGEN = {
    t.RegenStrategy.RUN_ALL: tpb.REGEN_STRATEGY_RUN_ALL,
    t.RegenStrategy.RUN_BEFORE: tpb.REGEN_STRATEGY_RUN_BEFORE,
    t.RegenStrategy.RUN_SELECTED: tpb.REGEN_STRATEGY_RUN_SELECTED,
    t.RegenStrategy.RUN_AFTER: tpb.REGEN_STRATEGY_RUN_AFTER,
}
_CELL_STATUS = {
    tpb.CELL_STATUS_UNSPECIFIED: t.CellStatus.UNSPECIFIED,
    tpb.CELL_STATUS_PENDING: t.CellStatus.PENDING,
    tpb.CELL_STATUS_RUNNING: t.CellStatus.RUNNING,
    tpb.CELL_STATUS_DONE: t.CellStatus.DONE,
    tpb.CELL_STATUS_ERROR: t.CellStatus.ERROR,
    tpb.CELL_STATUS_SKIPPED: t.CellStatus.SKIPPED,
}
CAPABILITIES = {
    "chat": common_pb2.CAPABILITY_CHAT,
    "embed": common_pb2.CAPABILITY_EMBED,
    "rerank": common_pb2.CAPABILITY_RERANK,
    "image": common_pb2.CAPABILITY_IMAGE,
    "audio": common_pb2.CAPABILITY_AUDIO,
}
_CAPABILITY_NAMES = {v: k for k, v in CAPABILITIES.items()}
_FINISH = {
    model_service_pb2.FINISH_REASON_STOP: "stop",
    model_service_pb2.FINISH_REASON_LENGTH: "length",
    model_service_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter",
}


def bad_argument(field: str, description: str) -> InvalidArgumentError:
    """A caller mistake found before anything is sent (same shape as the server's)."""
    return InvalidArgumentError(f"{field}: {description}", reason="INVALID_ARGUMENT",
                                field_violations=[(field, description)])


# -- scalars -----------------------------------------------------------------------------------

def table_type_pb(value: Any) -> common_pb2.TableType.ValueType:
    """'action' / 'knowledge' / 'chat', a :class:`TableType` or the proto enum value."""
    if isinstance(value, int) and value in _TABLE_TYPE_NAMES:
        return common_pb2.TableType.ValueType(value)
    try:
        return _TABLE_TYPES[t.TableType(str(value).lower())]
    except ValueError:
        raise bad_argument("table_type", f"must be 'action', 'knowledge' or 'chat', "
                                         f"got {value!r}") from None


def table_type_name(value: common_pb2.TableType.ValueType) -> t.TableType | None:
    return _TABLE_TYPE_NAMES.get(value)


def regen_strategy_pb(value: Any) -> tpb.RegenStrategy.ValueType:
    try:
        return _REGEN[t.RegenStrategy(str(value).lower())]
    except ValueError:
        raise bad_argument("regen_strategy", "must be run_all, run_before, run_selected or "
                                             f"run_after, got {value!r}") from None


def capability_pb(name: str) -> common_pb2.Capability.ValueType:
    try:
        return CAPABILITIES[name.lower()]
    except KeyError:
        raise bad_argument("capabilities", f"unknown capability {name!r}; use one of "
                                           f"{', '.join(CAPABILITIES)}") from None


def finish_reason(value: model_service_pb2.FinishReason.ValueType) -> str:
    return _FINISH.get(value, "")


def datetime_of(ts: timestamp_pb2.Timestamp, present: bool = True) -> dt.datetime | None:
    return codec.datetime_from_pb(ts, present)


def value_pb(value: Any) -> struct_pb2.Value:
    """A Python value as ``google.protobuf.Value`` (bytes are refused: upload files instead)."""
    return codec.value_to_pb(_cell_input(value, "data"))


def struct_pb(values: Mapping[str, Any] | None) -> struct_pb2.Struct:
    return codec.struct_to_pb({str(k): _cell_input(v, f"data.{k}")
                               for k, v in (values or {}).items()})


value_py = codec.value_from_pb
struct_py = codec.struct_from_pb


def typed(value: Any, dtype: str | None) -> Any:
    """Numbers travel as doubles in the deprecated ``value`` fields (servers without typed
    values); give ``int`` columns their ints back."""
    if dtype == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def cell_py(cell: tpb.Cell | tpb.CellCompletion, dtype: str | None) -> Any:
    """A cell's value: the typed one (ints exact), or the legacy ``value`` of an older server."""
    if cell.HasField("typed_value"):
        return cell_value_from_pb(cell.typed_value)
    return typed(value_py(cell.value), dtype)


def _cell_input(value: Any, field: str) -> Any:
    """A Python value as a cell can hold it: models dumped, dates as ISO text; bytes refused."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise bad_argument(field, "bytes cannot be sent as a cell value: upload the file with "
                                  "client.file.upload_file() and send its uri")
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _cell_input(v, f"{field}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_cell_input(v, f"{field}[{i}]") for i, v in enumerate(value)]
    raise bad_argument(field, f"unsupported value of type {type(value).__name__}")


def row_values_pb(values: Mapping[str, Any], field: str = "data") -> common_pb2.RowValues:
    """A row to send (column -> value) as typed values; an int outside int64 is refused here
    (InvalidArgumentError, as the server would), never rounded."""
    plain = {str(k): _cell_input(v, f"{field}.{k}") for k, v in values.items()}
    try:
        return row_values_to_pb(plain)
    except CellValueError as exc:
        raise bad_argument(f"{field}.{exc.column}", exc.message) from None


# -- schemas -----------------------------------------------------------------------------------

def gen_config_pb(config: Any) -> tpb.GenConfig:
    out = tpb.GenConfig()
    if isinstance(config, t.LLMGenConfig):
        llm = out.llm
        llm.model, llm.system_prompt, llm.prompt = config.model, config.system_prompt, config.prompt
        llm.multi_turn = config.multi_turn
        if config.temperature is not None:
            llm.temperature = config.temperature
        if config.max_tokens is not None:
            llm.max_tokens = config.max_tokens
        if config.top_p is not None:
            llm.top_p = config.top_p
        if config.rag_params is not None:
            r = config.rag_params
            llm.rag_params.CopyFrom(tpb.RAGParams(
                table_id=r.table_id, k=r.k, reranking_model=r.reranking_model or "",
                search_query=r.search_query, inline_citations=r.inline_citations,
                generate_query=r.generate_query))
    elif isinstance(config, t.PythonGenConfig):
        out.python.python_code = config.python_code
    elif isinstance(config, t.EmbedGenConfig):
        out.embed.embedding_model = config.embedding_model
        out.embed.source_column = config.source_column
    return out


def gen_config_py(config: tpb.GenConfig) -> Any:
    kind = config.WhichOneof("config")
    if kind == "llm":
        llm = config.llm
        rag = None
        if llm.HasField("rag_params"):
            r = llm.rag_params
            rag = t.RAGParams(table_id=r.table_id, k=r.k or 3,
                              reranking_model=r.reranking_model or None,
                              search_query=r.search_query, inline_citations=r.inline_citations,
                              generate_query=(r.generate_query
                                              if r.HasField("generate_query") else True))
        return t.LLMGenConfig(
            model=llm.model, system_prompt=llm.system_prompt, prompt=llm.prompt,
            temperature=llm.temperature if llm.HasField("temperature") else None,
            max_tokens=llm.max_tokens if llm.HasField("max_tokens") else None,
            top_p=llm.top_p if llm.HasField("top_p") else None,
            multi_turn=llm.multi_turn, rag_params=rag)
    if kind == "python":
        return t.PythonGenConfig(python_code=config.python.python_code)
    if kind == "embed":
        return t.EmbedGenConfig(embedding_model=config.embed.embedding_model,
                                source_column=config.embed.source_column,
                                dimension=config.embed.dimension)
    return None


def column_pb(col: t.ColumnSchemaCreate | t.ColumnSchema) -> tpb.Column:
    out = tpb.Column(id=col.id, dtype=col.dtype)
    if col.gen_config is not None:
        out.gen_config.CopyFrom(gen_config_pb(col.gen_config))
    return out


def table_py(table: tpb.Table) -> t.TableMetaResponse:
    return t.TableMetaResponse(
        id=table.id, table_type=table_type_name(table.table_type),
        cols=[t.ColumnSchema(id=c.id, dtype=c.dtype, system=c.system,
                             gen_config=gen_config_py(c.gen_config)
                             if c.HasField("gen_config") else None)
              for c in table.cols],
        num_rows=table.num_rows,
        created_at=datetime_of(table.create_time, table.HasField("create_time")),
        updated_at=datetime_of(table.update_time, table.HasField("update_time")),
        embedding_model=table.embedding_model,
        text_analyzer=table.text_analyzer,
        dangling_references=[t.DanglingReference(column_id=d.column_id, table_id=d.table_id)
                             for d in table.dangling_references])


def dtypes_of(table: tpb.Table) -> dict[str, str]:
    return {c.id: c.dtype for c in table.cols}


# -- rows and cells ------------------------------------------------------------------------

def usage_py(usage: common_pb2.Usage) -> t.Usage:
    return t.Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                   total_tokens=usage.total_tokens)


def references_py(refs: tpb.References) -> t.References:
    return t.References(table_id=refs.table_id, search_query=refs.search_query, chunks=[
        t.Chunk(row_id=c.row_id, title=c.title, text=c.text, page=c.page or None,
                file_id=c.file_id, score=c.score) for c in refs.chunks],
        query_model=refs.query_model,
        query_usage=usage_py(refs.query_usage) if refs.HasField("query_usage") else None)


def cell_completion_py(cell: tpb.CellCompletion, dtype: str | None = None) -> t.CellCompletion:
    return t.CellCompletion(
        text=cell.text, value=cell_py(cell, dtype),
        status=_CELL_STATUS.get(cell.status, t.CellStatus.UNSPECIFIED), error=cell.error,
        usage=usage_py(cell.usage) if cell.HasField("usage") else None,
        references=references_py(cell.references) if cell.HasField("references") else None)


def row_completion_py(row: tpb.RowCompletion,
                      dtypes: Mapping[str, str] | None = None) -> t.RowCompletion:
    dtypes = dtypes or {}
    return t.RowCompletion(row_id=row.row_id, columns={
        name: cell_completion_py(cell, dtypes.get(name)) for name, cell in row.columns.items()})


def iso_utc(value: dt.datetime) -> str:
    """The one timestamp text of the client, CLI and CSV export: ISO 8601 in UTC with ``Z``
    (``2026-01-02T03:04:05.123456Z``), as pydantic writes datetimes in JSON."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    return value.replace(tzinfo=None).isoformat() + "Z"


def wrapped_row(row: tpb.Row, dtypes: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The seed's row dict: ``ID`` and ``Updated at`` plain, every column wrapped as
    ``{"value": ...}`` (plus ``status`` / ``error`` / ``usage`` / ``references`` when set)."""
    dtypes = dtypes or {}
    out: dict[str, Any] = {
        ID_COLUMN: row.id,
        UPDATED_AT_COLUMN: iso_utc(datetime_of(row.update_time, row.HasField("update_time"))
                                   or dt.datetime.fromtimestamp(0, dt.UTC)),
    }
    # Schema order when the column types are known (the map's order is arbitrary).
    names = [n for n in dtypes if n in row.cells] + [n for n in row.cells if n not in dtypes]
    for name in names:
        cell = row.cells[name]
        wrapped: dict[str, Any] = {"value": cell_py(cell, dtypes.get(name))}
        if cell.status != tpb.CELL_STATUS_UNSPECIFIED:
            wrapped["status"] = _CELL_STATUS[cell.status].value
        if cell.error:
            wrapped["error"] = cell.error
        if cell.HasField("usage"):
            wrapped["usage"] = usage_py(cell.usage).model_dump()
        if cell.HasField("references"):
            wrapped["references"] = references_py(cell.references).model_dump()
        out[name] = wrapped
    return out


def unwrap_row(values: Mapping[str, Any]) -> dict[str, Any]:
    """Accept rows read back (wrapped) as input: ``{"col": {"value": v}}`` -> ``{"col": v}``;
    the system columns are dropped."""
    return {k: t.get_value(v) for k, v in values.items()
            if k not in (ID_COLUMN, UPDATED_AT_COLUMN)}


class StreamText:
    """Tracks which cells streamed deltas, so a cell that streamed none (a Python column)
    still hands its whole text to ``chunk.text`` once, on completion."""

    def __init__(self) -> None:
        self._streamed: set[tuple[str, str]] = set()

    def chunk(self, event: Any, dtypes: Mapping[str, str] | None = None) -> t.RowStreamChunk:
        """A stream event (``StreamAddRowsResponse`` / ``StreamRegenRowsResponse``) as a chunk."""
        kind = event.WhichOneof("event")
        dtypes = dtypes or {}
        if kind == "row_created":
            e = event.row_created
            return t.RowStreamChunk(event=kind, row_id=e.row_id, row_index=e.row_index)
        if kind == "references":
            e = event.references
            return t.RowStreamChunk(event=kind, row_id=e.row_id,
                                    output_column_name=e.output_column_name,
                                    references=references_py(e.references))
        if kind == "delta":
            e = event.delta
            self._streamed.add((e.row_id, e.output_column_name))
            return t.RowStreamChunk(event=kind, row_id=e.row_id,
                                    output_column_name=e.output_column_name, text=e.text,
                                    index=e.index)
        if kind == "cell_completed":
            e = event.cell_completed
            cell = cell_completion_py(e.cell, dtypes.get(e.output_column_name))
            key = (e.row_id, e.output_column_name)
            text = "" if key in self._streamed else cell.text
            self._streamed.discard(key)  # a regenerated cell may stream again later
            return t.RowStreamChunk(event=kind, row_id=e.row_id,
                                    output_column_name=e.output_column_name, text=text,
                                    cell=cell)
        if kind == "row_completed":
            e = event.row_completed
            return t.RowStreamChunk(event=kind, row_id=e.row.row_id, row_index=e.row_index,
                                    row=row_completion_py(e.row, dtypes))
        if kind == "completed":
            return t.RowStreamChunk(event="completed", row_count=event.completed.row_count,
                                    error_count=event.completed.error_count)
        raise ValueError(f"unknown stream event {kind!r}")


# -- files and models --------------------------------------------------------------------------

def file_py(f: file_service_pb2.FileInfo) -> t.FileInfo:
    return t.FileInfo(uri=f.uri, id=f.id, name=f.name, content_type=f.content_type, size=f.size,
                      sha256=f.sha256, kind=f.kind,
                      created_at=datetime_of(f.create_time, f.HasField("create_time")))


def model_py(m: model_service_pb2.Model) -> t.ModelInfo:
    return t.ModelInfo(id=m.id, name=m.name,
                       capabilities=[_CAPABILITY_NAMES[c] for c in m.capabilities
                                     if c in _CAPABILITY_NAMES],
                       context_length=m.context_length, languages=list(m.languages),
                       owned_by=m.owned_by, embedding_size=m.embedding_size, rpm=m.rpm, tpm=m.tpm)


def response_format_pb(fmt: Any) -> model_service_pb2.ResponseFormat | None:
    """OpenAI-style ``response_format`` (or a Pydantic model class) as the proto message."""
    if fmt is None:
        return None
    if isinstance(fmt, type) and issubclass(fmt, BaseModel):
        return model_service_pb2.ResponseFormat(
            type=model_service_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, name=fmt.__name__,
            schema=struct_pb(fmt.model_json_schema()))
    kind = fmt.get("type", "text")
    if kind == "text":
        return model_service_pb2.ResponseFormat(type=model_service_pb2.RESPONSE_FORMAT_TYPE_TEXT)
    if kind == "json_object":
        return model_service_pb2.ResponseFormat(
            type=model_service_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT)
    if kind == "json_schema":
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema")
        if not isinstance(schema, Mapping):
            raise bad_argument("response_format.json_schema.schema", "must be a JSON schema "
                                                                     "object")
        return model_service_pb2.ResponseFormat(
            type=model_service_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
            name=str(spec.get("name") or "response"), schema=struct_pb(schema),
            strict=bool(spec.get("strict", False)))
    raise bad_argument("response_format.type", "must be text, json_object or json_schema")


def parsed_py(completed: model_service_pb2.ChatCompleted) -> Any:
    return value_py(completed.parsed) if completed.HasField("parsed") else None

