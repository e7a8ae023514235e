"""The domain model of generative tables: plain dataclasses, no protobuf, no SQL.

Shared by the schema store, the row store, the engine and the services. A table is an ordered
list of columns; a generated column (LLM, Python, embedding) may reference only columns to its
left.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Any, Literal

TableType = Literal["action", "knowledge", "chat"]
TABLE_TYPES: tuple[TableType, ...] = ("action", "knowledge", "chat")

#: Column data types users can declare.
DTYPES = ("str", "int", "float", "bool", "file", "image", "audio")
#: dtypes whose values are FileService URIs.
FILE_DTYPES = frozenset({"file", "image", "audio"})
#: dtype of embedding columns of knowledge tables (system columns).
EMBEDDING_DTYPE = "embedding"

ID_COLUMN = "ID"
UPDATED_AT_COLUMN = "Updated at"
RESERVED_COLUMNS = frozenset({ID_COLUMN, UPDATED_AT_COLUMN})

# Fixed columns of knowledge tables.
KT_TITLE, KT_TEXT, KT_FILE_ID, KT_PAGE = "Title", "Text", "File ID", "Page"
KT_TITLE_EMBED, KT_TEXT_EMBED = "Title Embed", "Text Embed"
#: Languages with a stemmer for a knowledge table's BM25 index (``<code>_stem``).
STEM_LANGUAGES = ("ar", "da", "de", "el", "en", "es", "fi", "fr", "hu", "it", "nl", "no", "pt",
                  "ro", "ru", "sv", "ta", "tr")
#: Text analyzers of a knowledge table's BM25 index (see ``knowledge/lexical_index.py``):
#: ``simple`` (Unicode words lowercased, CJK characters), ``<lang>_stem`` (plus a stemmer),
#: ``ngram`` (character 1- and 2-grams).
TEXT_ANALYZERS = ("simple", "ngram", *(f"{code}_stem" for code in STEM_LANGUAGES))
DEFAULT_TEXT_ANALYZER = "en_stem"
# Fixed columns of chat tables.
CHAT_USER, CHAT_AI = "User", "AI"


@dataclass(frozen=True)
class RAGParams:
    """Retrieval settings of an LLM column."""

    table_id: str
    k: int = 3
    reranking_model: str = ""
    search_query: str = ""
    inline_citations: bool = False
    #: Without ``search_query``: the column's model writes the query from the prompt (the
    #: seeds' flow); False searches with the prompt itself.
    generate_query: bool = True


@dataclass(frozen=True)
class LLMGenConfig:
    """An LLM column. ``model`` empty means the default chat model."""

    model: str = ""
    system_prompt: str = ""
    prompt: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    multi_turn: bool = False
    rag_params: RAGParams | None = None


@dataclass(frozen=True)
class PythonGenConfig:
    """A Python column: code reading ``row`` and assigning ``row[<this column>]``."""

    python_code: str


@dataclass(frozen=True)
class EmbedGenConfig:
    """An embedding column of a knowledge table: embeds ``source_column``.

    ``dimension`` is the length of the column's vectors, recorded when the table is created
    (the model's ``embedding_size`` then); 0 for tables made before it was recorded, until
    the next start-up fills it in (see :mod:`rowforge.server.knowledge.dimensions`). Vectors
    of another length are refused, and a model now configured for another size leaves the
    table unusable for new embeddings instead of mixing sizes in one index.
    """

    embedding_model: str
    source_column: str
    dimension: int = 0


GenConfig = LLMGenConfig | PythonGenConfig | EmbedGenConfig


@dataclass(frozen=True)
class ColumnSchema:
    """One column. ``gen_config`` None means an input column."""

    id: str
    dtype: str = "str"
    gen_config: GenConfig | None = None
    #: Managed by the service (knowledge/chat fixed columns, embeddings).
    system: bool = False
    #: Name of the SQL column holding the values (set by the store; never a user string).
    storage_name: str = field(default="", compare=False)

    @property
    def is_generated(self) -> bool:
        return self.gen_config is not None


@dataclass(frozen=True)
class TableSchema:
    """A table's schema and identity. ``columns`` excludes ID and Updated at."""

    project_id: str
    table_type: TableType
    id: str
    columns: tuple[ColumnSchema, ...]
    embedding_model: str = ""
    create_time: dt.datetime | None = None
    update_time: dt.datetime | None = None
    #: Bumped on every schema change (optimistic concurrency, caches).
    version: int = 1
    #: Internal id naming the SQL table of the rows (set by the store; survives renames).
    storage_id: str = field(default="", compare=False)
    #: Text analyzer of a knowledge table's BM25 index (:data:`TEXT_ANALYZERS`; "" for
    #: other tables).
    text_analyzer: str = ""

    def column(self, column_id: str) -> ColumnSchema | None:
        for col in self.columns:
            if col.id == column_id:
                return col
        return None

    @property
    def column_ids(self) -> list[str]:
        return [c.id for c in self.columns]

    @property
    def generated_columns(self) -> list[ColumnSchema]:
        return [c for c in self.columns if c.gen_config is not None]


class CellStatus(enum.StrEnum):
    """Generation state of a cell (input cells are DONE once written)."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    ERROR = "error"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class CellUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Chunk:
    """A knowledge-table reference given to a RAG column."""

    row_id: str
    title: str
    text: str
    page: int | None = None
    file_id: str = ""
    score: float = 0.0


@dataclass(frozen=True)
class References:
    """What a RAG cell retrieved, and with which query (``query_model`` wrote it from the
    prompt, at ``query_usage``; empty when the query was not generated)."""

    table_id: str
    search_query: str
    chunks: tuple[Chunk, ...] = ()
    query_model: str = ""
    query_usage: CellUsage | None = None


@dataclass(frozen=True)
class DanglingReference:
    """A RAG column whose knowledge table does not exist (it was deleted): its cells fail
    until a knowledge table ``table_id`` exists again or the column's ``rag_params`` change."""

    column_id: str
    table_id: str


@dataclass
class Cell:
    """A stored cell: value plus state."""

    value: Any = None
    status: CellStatus = CellStatus.DONE
    error: str = ""
    usage: CellUsage | None = None
    references: References | None = None
    #: The table job that wrote this cell ("" for interactive writes): a job resumed after
    #: a crash skips the cells it already wrote.
    job: str = ""


@dataclass
class Row:
    """A stored row. ``cells`` has one entry per (selected) column."""

    id: str
    update_time: dt.datetime
    cells: dict[str, Cell] = field(default_factory=dict)

    def values(self) -> dict[str, Any]:
        return {k: c.value for k, c in self.cells.items()}
