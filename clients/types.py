"""Request and response types of the Python client (Pydantic models).

The names follow the JamAI SDK (``import rowforge.clients.types as t`` then
``t.ActionTableSchemaCreate``, ``t.ColumnSchemaCreate``, ``t.LLMGenConfig``,
``t.MultiRowAddRequest``, ``t.ChatRequest``, ``t.ChatEntry.user(...)`` ...), so its examples
run unchanged. Row reads are plain dicts with *wrapped* values (``row["col"]["value"]``), as in
the seed; ``get_value`` unwraps them.
"""

from __future__ import annotations

import datetime as dt
import warnings
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Generic, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator
from typing_extensions import TypeVar

__all__ = [
    "ActionTableSchemaCreate",
    "AddActionColumnSchema",
    "AddChatColumnSchema",
    "AddKnowledgeColumnSchema",
    "CellCompletion",
    "CellStatus",
    "ChatCompletionChoice",
    "ChatCompletionChunk",
    "ChatCompletionResponse",
    "ChatEntry",
    "ChatRequest",
    "ChatTableSchemaCreate",
    "Chunk",
    "ColumnDropRequest",
    "ColumnRenameRequest",
    "ColumnReorderRequest",
    "ColumnSchema",
    "ColumnSchemaCreate",
    "DanglingReference",
    "EmbedFileResponse",
    "EmbedGenConfig",
    "EmbeddingData",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "FileInfo",
    "FileUploadResponse",
    "GenConfig",
    "GenConfigUpdateRequest",
    "ImportResponse",
    "KnowledgeTableSchemaCreate",
    "LLMGenConfig",
    "ModelInfo",
    "ModelInfoResponse",
    "MultiRowAddRequest",
    "MultiRowCompletionResponse",
    "MultiRowDeleteRequest",
    "MultiRowRegenRequest",
    "MultiRowUpdateRequest",
    "OkResponse",
    "Page",
    "PythonGenConfig",
    "RAGParams",
    "References",
    "RegenStrategy",
    "RerankResponse",
    "RerankResult",
    "RowAddRequest",
    "RowCompletion",
    "RowDeleteRequest",
    "RowRegenRequest",
    "RowStreamChunk",
    "RowUpdateRequest",
    "SearchResults",
    "SearchRow",
    "TableImportRequest",
    "TableMeta",
    "TableMetaResponse",
    "TableSchemaCreate",
    "TableType",
    "Usage",
    "get_value",
]

T = TypeVar("T")
#: Whether a request streams, as a type: ``MultiRowAddRequest(..., stream=False)`` is a
#: ``MultiRowAddRequest[Literal[False]]`` to a type checker, so ``add_table_rows`` is typed to
#: return the whole response for it and a stream otherwise (``stream`` defaults to True). At run
#: time the field is a plain ``bool``.
StreamT = TypeVar("StreamT", bound=bool, default=Literal[True])


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Response(BaseModel):
    # Responses tolerate fields a newer server may add.
    model_config = ConfigDict(extra="allow")


# -- enums ---------------------------------------------------------------------------------

class TableType(StrEnum):
    """The three kinds of generative table."""

    ACTION = "action"
    KNOWLEDGE = "knowledge"
    CHAT = "chat"


class RegenStrategy(StrEnum):
    """Which generated columns ``regen_table_rows`` regenerates."""

    RUN_ALL = "run_all"
    RUN_BEFORE = "run_before"
    RUN_SELECTED = "run_selected"
    RUN_AFTER = "run_after"


class CellStatus(StrEnum):
    """State of a generated cell ("" for input cells)."""

    UNSPECIFIED = ""
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    ERROR = "error"
    SKIPPED = "skipped"


# -- table schemas -------------------------------------------------------------------------

class RAGParams(_Model):
    """Retrieval settings of an LLM column: search ``table_id`` and inject the top ``k``."""

    table_id: str
    k: int = Field(default=3, ge=1, le=1024)
    reranking_model: str | None = None
    search_query: str = ""
    inline_citations: bool = False
    #: Without ``search_query``, the column's model writes the search query from the prompt
    #: (the seeds' RAG flow); False searches with the prompt itself.
    generate_query: bool = True


class LLMGenConfig(_Model):
    """An LLM column: ``system_prompt`` and a ``prompt`` with ``${column}`` references."""

    object: Literal["gen_config.llm"] = "gen_config.llm"
    model: str = ""
    system_prompt: str = ""
    prompt: str = ""
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=1)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    multi_turn: bool = False
    rag_params: RAGParams | None = None


class PythonGenConfig(_Model):
    """A Python column: code reading ``row`` and assigning ``row["<column>"]``."""

    object: Literal["gen_config.python"] = "gen_config.python"
    python_code: str


class EmbedGenConfig(_Model):
    """An embedding column of a knowledge table."""

    object: Literal["gen_config.embed"] = "gen_config.embed"
    embedding_model: str
    source_column: str
    #: Length of the column's vectors (set by the server; 0 when unknown).
    dimension: int = 0


def _gen_config_kind(value: Any) -> str:
    if isinstance(value, BaseModel):
        return str(getattr(value, "object", "gen_config.llm"))
    if isinstance(value, dict):
        if "object" in value:
            return str(value["object"])
        if "python_code" in value:
            return "gen_config.python"
        if "source_column" in value:
            return "gen_config.embed"
    return "gen_config.llm"


GenConfig = Annotated[
    Annotated[LLMGenConfig, Tag("gen_config.llm")]
    | Annotated[PythonGenConfig, Tag("gen_config.python")]
    | Annotated[EmbedGenConfig, Tag("gen_config.embed")],
    Discriminator(_gen_config_kind),
]


class ColumnSchemaCreate(_Model):
    """A column to create: an input column (no ``gen_config``) or a generated one."""

    id: str = Field(min_length=1)
    dtype: str = "str"
    gen_config: GenConfig | None = None


class ColumnSchema(_Response):
    """A column of an existing table; ``system`` marks columns the service manages."""

    id: str
    dtype: str = "str"
    gen_config: GenConfig | None = None
    system: bool = False


class TableSchemaCreate(_Model):
    """A table to create: its id and columns in order."""

    id: str = Field(min_length=1)
    cols: list[ColumnSchemaCreate] = Field(default_factory=list)


class ActionTableSchemaCreate(TableSchemaCreate):
    """An action table: chains of LLM and Python columns over input columns."""


class KnowledgeTableSchemaCreate(TableSchemaCreate):
    """A knowledge table: Title, Text, File ID, Page and embeddings are added by the server."""

    embedding_model: str = ""
    #: Text analyzer of the table's BM25 index ("" = "en_stem"; "simple", "<lang>_stem",
    #: "ngram").
    text_analyzer: str = ""


class ChatTableSchemaCreate(TableSchemaCreate):
    """A chat table: a ``User`` input column and an ``AI`` LLM column (history is automatic)."""


class DanglingReference(_Response):
    """A RAG column (``column_id``) whose knowledge table ``table_id`` was deleted."""

    column_id: str
    table_id: str


class TableMetaResponse(_Response):
    """A table's schema (``cols`` starts with the system columns ``ID`` and ``Updated at``)."""

    id: str
    table_type: TableType | None = None
    cols: list[ColumnSchema] = Field(default_factory=list)
    num_rows: int = 0
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    embedding_model: str = ""
    #: Text analyzer of a knowledge table's BM25 index.
    text_analyzer: str = ""
    #: RAG columns whose knowledge table no longer exists (their cells fail until it does).
    dangling_references: list[DanglingReference] = Field(default_factory=list)

    def col(self, column_id: str) -> ColumnSchema:
        """The column named ``column_id``.

        Raises:
            KeyError: no such column.
        """
        for c in self.cols:
            if c.id == column_id:
                return c
        raise KeyError(column_id)


TableMeta = TableMetaResponse


class Page(_Response, Generic[T]):
    """One page of a list: ``items`` plus ``total`` matches, ``offset``, ``limit`` and the
    token of the next page ("" at the end)."""

    items: list[T] = Field(default_factory=list)
    offset: int = 0
    limit: int = 100
    total: int = 0
    next_page_token: str = ""


class AddActionColumnSchema(TableSchemaCreate):
    """Columns to append to action table ``id`` (JamAI's ``add_action_columns`` request)."""


class AddKnowledgeColumnSchema(TableSchemaCreate):
    """Columns to append to knowledge table ``id``."""


class AddChatColumnSchema(TableSchemaCreate):
    """Columns to append to chat table ``id``."""


class ColumnDropRequest(_Model):
    """Columns to drop from a table."""

    table_id: str
    column_names: list[str] = Field(min_length=1)


class ColumnRenameRequest(_Model):
    """Columns to rename: ``{old_id: new_id}`` (``${...}`` references are rewritten)."""

    table_id: str
    column_map: dict[str, str] = Field(min_length=1)


class ColumnReorderRequest(_Model):
    """Every non-system column of a table, in the new order."""

    table_id: str
    column_names: list[str] = Field(min_length=1)


class GenConfigUpdateRequest(_Model):
    """New generation configs: ``{column_id: config}``; ``None`` makes it an input column."""

    table_id: str
    column_map: dict[str, GenConfig | None] = Field(min_length=1)


class TableImportRequest(_Model):
    """A CSV/TSV file to import into a table (the first line holds column ids)."""

    file_path: str
    table_id: str
    delimiter: Literal[",", "\t"] = ","
    generate: bool = True


class ImportResponse(_Response):
    """The outcome of ``import_table_data``."""

    row_count: int = 0
    error_count: int = 0
    #: The rows written, in file order.
    row_ids: list[str] = []
    #: The table job generating them (``import_rows(..., generate_in_job=True)``; follow it
    #: with ``client.batch.watch_job``), else "".
    job_id: str = ""


class OkResponse(_Response):
    """A call that returns no resource: ``ok`` plus how many things it touched, if known."""

    ok: bool = True
    count: int | None = None


# -- rows: requests ------------------------------------------------------------------------

class MultiRowAddRequest(_Model, Generic[StreamT]):
    """Rows to add (1 to 100): each a ``{column: value}`` dict of input columns."""

    table_id: str
    data: list[dict[str, Any]]
    if TYPE_CHECKING:
        stream: StreamT = True  # type: ignore[assignment]
    else:
        stream: bool = True
    concurrent: bool = True
    #: Makes the add safe to retry (``stream=False``): generated when None, so the client
    #: retries an AddRows that hit UNAVAILABLE without adding the rows twice.
    idempotency_key: str | None = None


class MultiRowUpdateRequest(_Model):
    """Cells to set: ``{row_id: {column: value}}`` (generated columns are not rerun)."""

    table_id: str
    data: dict[str, dict[str, Any]]


class MultiRowDeleteRequest(_Model):
    """Rows to delete by id and/or a ``where`` filter."""

    table_id: str
    row_ids: list[str] | None = None
    where: str | None = None


class MultiRowRegenRequest(_Model, Generic[StreamT]):
    """Rows whose generated columns to regenerate."""

    table_id: str
    row_ids: list[str]
    regen_strategy: RegenStrategy = RegenStrategy.RUN_ALL
    output_column_id: str | None = None
    if TYPE_CHECKING:
        stream: StreamT = True  # type: ignore[assignment]
    else:
        stream: bool = True
    concurrent: bool = True


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"t.{old} is deprecated; use t.{new}", DeprecationWarning, stacklevel=4)


class RowAddRequest(_Model, Generic[StreamT]):
    """Deprecated: one row; use :class:`MultiRowAddRequest`."""

    table_id: str
    data: dict[str, Any]
    if TYPE_CHECKING:
        stream: StreamT = True  # type: ignore[assignment]
    else:
        stream: bool = True
    concurrent: bool = True

    @model_validator(mode="after")
    def _warn(self) -> RowAddRequest[StreamT]:
        _deprecated("RowAddRequest", "MultiRowAddRequest")
        return self

    def to_multi(self) -> MultiRowAddRequest[StreamT]:
        return MultiRowAddRequest(table_id=self.table_id, data=[self.data], stream=self.stream,
                                  concurrent=self.concurrent)


class RowUpdateRequest(_Model):
    """Deprecated: one row; use :class:`MultiRowUpdateRequest`."""

    table_id: str
    row_id: str
    data: dict[str, Any]

    @model_validator(mode="after")
    def _warn(self) -> RowUpdateRequest:
        _deprecated("RowUpdateRequest", "MultiRowUpdateRequest")
        return self

    def to_multi(self) -> MultiRowUpdateRequest:
        return MultiRowUpdateRequest(table_id=self.table_id, data={self.row_id: self.data})


class RowDeleteRequest(_Model):
    """Deprecated: use :class:`MultiRowDeleteRequest`."""

    table_id: str
    row_ids: list[str] | None = None
    where: str | None = None

    @model_validator(mode="after")
    def _warn(self) -> RowDeleteRequest:
        _deprecated("RowDeleteRequest", "MultiRowDeleteRequest")
        return self

    def to_multi(self) -> MultiRowDeleteRequest:
        return MultiRowDeleteRequest(table_id=self.table_id, row_ids=self.row_ids,
                                     where=self.where)


class RowRegenRequest(_Model, Generic[StreamT]):
    """Deprecated: one row; use :class:`MultiRowRegenRequest`."""

    table_id: str
    row_id: str
    regen_strategy: RegenStrategy = RegenStrategy.RUN_ALL
    output_column_id: str | None = None
    if TYPE_CHECKING:
        stream: StreamT = True  # type: ignore[assignment]
    else:
        stream: bool = True

    @model_validator(mode="after")
    def _warn(self) -> RowRegenRequest[StreamT]:
        _deprecated("RowRegenRequest", "MultiRowRegenRequest")
        return self

    def to_multi(self) -> MultiRowRegenRequest[StreamT]:
        return MultiRowRegenRequest(table_id=self.table_id, row_ids=[self.row_id],
                                    regen_strategy=self.regen_strategy,
                                    output_column_id=self.output_column_id, stream=self.stream)


# -- rows: responses -----------------------------------------------------------------------

class Usage(_Response):
    """Token usage of one model call (or a sum)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class Chunk(_Response):
    """A reference retrieved for a RAG cell."""

    row_id: str = ""
    title: str = ""
    text: str = ""
    page: int | None = None
    file_id: str = ""
    score: float = 0.0


class References(_Response):
    """The references of a RAG cell, in the order given to the model (``[@0]`` first)."""

    table_id: str = ""
    search_query: str = ""
    chunks: list[Chunk] = Field(default_factory=list)
    #: The model that wrote ``search_query`` from the prompt ("" when it was not written).
    query_model: str = ""
    #: Token usage of writing the query (not part of the cell's ``usage``).
    query_usage: Usage | None = None


class CellCompletion(_Response):
    """A generated cell: ``text`` (the value as text) and the typed ``value``."""

    text: str = ""
    value: Any = None
    status: CellStatus = CellStatus.UNSPECIFIED
    error: str = ""
    usage: Usage | None = None
    references: References | None = None


class RowCompletion(_Response):
    """The outcome of one added or regenerated row."""

    row_id: str
    columns: dict[str, CellCompletion] = Field(default_factory=dict)


class MultiRowCompletionResponse(_Response):
    """What ``add_table_rows`` / ``regen_table_rows`` return with ``stream=False``."""

    rows: list[RowCompletion] = Field(default_factory=list)


class RowStreamChunk(_Response):
    """One event of a streamed ``add_table_rows`` / ``regen_table_rows``.

    ``event`` is ``row_created``, ``references``, ``delta``, ``cell_completed``,
    ``row_completed`` or ``completed`` (the last one). ``text`` is the text of a cell not yet
    streamed: the tokens of a ``delta``, or the whole value of a ``cell_completed`` whose cell
    streamed no delta (a Python column, say), else "". So the seed's loop
    ``if chunk.output_column_name == "output": print(chunk.text, end="")`` prints each cell
    exactly once.
    """

    event: Literal["row_created", "references", "delta", "cell_completed", "row_completed",
                   "completed"]
    row_id: str = ""
    output_column_name: str = ""
    text: str = ""
    index: int | None = None
    row_index: int | None = None
    cell: CellCompletion | None = None
    references: References | None = None
    row: RowCompletion | None = None
    row_count: int | None = None
    error_count: int | None = None


class SearchRow(dict[str, Any]):
    """A hybrid-search hit: the row as a wrapped dict, plus its scores as attributes."""

    score: float = 0.0
    vector_rank: int = 0
    lexical_rank: int = 0


class SearchResults(list[SearchRow]):
    """Hybrid-search hits, best first; ``reranked`` / ``rerank_error`` tell how they were
    ordered."""

    reranked: bool = False
    rerank_error: str = ""


class EmbedFileResponse(_Response):
    """The outcome of ``embed_file``."""

    uri: str
    row_ids: list[str] = Field(default_factory=list)
    row_count: int = 0
    chunk_count: int = 0
    page_count: int = 0


# -- files ---------------------------------------------------------------------------------

class FileInfo(_Response):
    """A stored file; ``uri`` is what rows and requests use."""

    uri: str
    id: str = ""
    name: str = ""
    content_type: str = ""
    size: int = 0
    sha256: str = ""
    kind: str = ""
    created_at: dt.datetime | None = None


FileUploadResponse = FileInfo


# -- models --------------------------------------------------------------------------------

class ChatEntry(_Model):
    """One message; build with ``ChatEntry.system(...)`` / ``.user(...)`` / ``.assistant(...)``.

    ``attachments`` are FileService URIs or http(s) URLs of images/audio.
    """

    role: Literal["system", "user", "assistant"]
    content: str = ""
    attachments: list[str] = Field(default_factory=list)

    @classmethod
    def system(cls, content: str) -> ChatEntry:
        return cls(role="system", content=content)

    @classmethod
    def user(cls, content: str, attachments: list[str] | None = None) -> ChatEntry:
        return cls(role="user", content=content, attachments=attachments or [])

    @classmethod
    def assistant(cls, content: str) -> ChatEntry:
        return cls(role="assistant", content=content)


class ChatRequest(_Model, Generic[StreamT]):
    """A chat completion request (``model`` "" picks the server's default chat model).

    ``response_format`` takes the OpenAI shapes: ``{"type": "json_object"}`` or
    ``{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}``, or a Pydantic
    model class.
    """

    model: str = ""
    messages: list[ChatEntry] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=1)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: list[str] | None = None
    if TYPE_CHECKING:
        stream: StreamT = True  # type: ignore[assignment]
    else:
        stream: bool = True
    response_format: dict[str, Any] | type[BaseModel] | None = None


class ChatCompletionChoice(_Response):
    """An OpenAI-style choice."""

    index: int = 0
    message: ChatEntry
    finish_reason: str = ""


class ChatCompletionResponse(_Response):
    """A whole chat completion: ``text``, ``usage``, ``finish_reason`` (and ``parsed`` JSON
    when a JSON response format was asked for)."""

    id: str = ""
    model: str = ""
    text: str = ""
    finish_reason: str = ""
    usage: Usage = Field(default_factory=Usage)
    parsed: Any = None

    @property
    def choices(self) -> list[ChatCompletionChoice]:
        return [ChatCompletionChoice(message=ChatEntry.assistant(self.text),
                                     finish_reason=self.finish_reason)]

    @property
    def content(self) -> str:
        return self.text


class ChatCompletionChunk(_Response):
    """One chunk of a streamed chat completion: ``text`` tokens; the last chunk has ``text``
    "", the ``finish_reason`` and the ``usage``."""

    id: str = ""
    model: str = ""
    text: str = ""
    index: int = 0
    finish_reason: str | None = None
    usage: Usage | None = None
    parsed: Any = None


class EmbeddingRequest(_Model):
    """Texts to embed (``model`` "" picks the server's default embedding model)."""

    model: str = ""
    input: str | list[str]
    type: Literal["document", "query"] = "document"


class EmbeddingData(_Response):
    """One embedding."""

    index: int = 0
    embedding: list[float] = Field(default_factory=list)


class EmbeddingResponse(_Response):
    """Embeddings, one per input in order."""

    data: list[EmbeddingData] = Field(default_factory=list)
    model: str = ""
    usage: Usage = Field(default_factory=Usage)


class RerankResult(_Response):
    """A document's relevance (``index`` into the request's documents)."""

    index: int
    relevance_score: float


class RerankResponse(_Response):
    """Reranked documents, best first."""

    results: list[RerankResult] = Field(default_factory=list)
    model: str = ""


class ModelInfo(_Response):
    """A model the server offers."""

    id: str
    name: str = ""
    capabilities: list[str] = Field(default_factory=list)
    context_length: int = 0
    languages: list[str] = Field(default_factory=list)
    owned_by: str = ""
    embedding_size: int = 0
    rpm: int = 0
    tpm: int = 0


class ModelInfoResponse(_Response):
    """``model_info()``'s answer: ``data`` is the list of models."""

    object: str = "models.info"
    data: list[ModelInfo] = Field(default_factory=list)


def get_value(field: Any) -> Any:
    """Unwrap a cell of a row dict (``{"value": ...}``); other values pass through."""
    if isinstance(field, dict) and "value" in field:
        return field["value"]
    return field
