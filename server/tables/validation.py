"""Validation of table ids, column ids, dtypes and generation configs.

Every schema change (create, add/drop/rename/reorder columns, gen-config updates) re-validates
the *whole* resulting table with :func:`validate_table`, so no sequence of changes can leave a
column referencing an unknown column, a column on its right, itself, or a missing model.
Errors name the column; syntactic problems are collected and raised together as
INVALID_ARGUMENT, then missing models / knowledge tables raise NOT_FOUND.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from rowforge.fastcore import Template
from rowforge.server.errors import FieldViolation, InvalidArgument, NotFound, Violations
from rowforge.server.providers.registry import model_not_found_message
from rowforge.server.tables.model import (
    CHAT_AI,
    CHAT_USER,
    DTYPES,
    EMBEDDING_DTYPE,
    ID_COLUMN,
    KT_FILE_ID,
    KT_PAGE,
    KT_TEXT,
    KT_TEXT_EMBED,
    KT_TITLE,
    KT_TITLE_EMBED,
    TABLE_TYPES,
    UPDATED_AT_COLUMN,
    ColumnSchema,
    EmbedGenConfig,
    LLMGenConfig,
    PythonGenConfig,
    TableSchema,
)

MAX_ID_LENGTH = 100
#: User columns per table (each takes two SQL columns; SQLite allows 2000).
MAX_COLUMNS = 200
MAX_PROMPT_CHARS = 100_000
MAX_CODE_CHARS = 100_000
MAX_RAG_K = 100
DEFAULT_RAG_K = 3
#: Output dtypes a Python column may have.
PYTHON_DTYPES = frozenset({"str", "int", "float", "bool", "image", "audio", "file"})

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.\-]*")
_RESERVED = {ID_COLUMN.casefold(), UPDATED_AT_COLUMN.casefold()}
ID_RULE = ("use 1 to 100 letters, digits, spaces, '_', '-' or '.', starting with a letter or "
           "digit and not ending with a space")


def id_problem(value: str) -> str | None:
    """Why ``value`` cannot be a table or column id (None when it can)."""
    if not value:
        return "must not be empty"
    if len(value) > MAX_ID_LENGTH:
        return f"must be at most {MAX_ID_LENGTH} characters (got {len(value)})"
    if not _ID_RE.fullmatch(value) or value.endswith(" "):
        return f"{value!r} is not a valid id: {ID_RULE}"
    return None


def check_table_id(value: str, field_name: str = "table_id") -> None:
    """Raise INVALID_ARGUMENT (reason INVALID_TABLE_ID) when ``value`` is not a valid table id."""
    problem = id_problem(value)
    if problem:
        raise InvalidArgument.field(field_name, problem, reason="INVALID_TABLE_ID")


def column_id_problem(value: str) -> str | None:
    problem = id_problem(value)
    if problem:
        return problem
    if value.casefold() in _RESERVED:
        return f"{value!r} is reserved (ID and Updated at are system columns)"
    return None


def check_table_type(value: str, field_name: str = "table_type") -> None:
    if value not in TABLE_TYPES:
        raise InvalidArgument.field(field_name, f"must be one of {', '.join(TABLE_TYPES)}")


def references(text: str) -> list[str]:
    """Column names referenced as ``${name}`` in ``text``."""
    return Template(text).references


def knowledge_columns(embedding_model: str, dimension: int = 0) -> list[ColumnSchema]:
    """The fixed columns of a knowledge table, in JamAI's order (``dimension``: the
    embedding model's vector size)."""
    return [
        ColumnSchema(KT_TITLE, "str", system=True),
        ColumnSchema(KT_TITLE_EMBED, EMBEDDING_DTYPE,
                     EmbedGenConfig(embedding_model, KT_TITLE, dimension), system=True),
        ColumnSchema(KT_TEXT, "str", system=True),
        ColumnSchema(KT_TEXT_EMBED, EMBEDDING_DTYPE,
                     EmbedGenConfig(embedding_model, KT_TEXT, dimension), system=True),
        ColumnSchema(KT_FILE_ID, "str", system=True),
        ColumnSchema(KT_PAGE, "int", system=True),
    ]


KNOWLEDGE_FIXED = frozenset({KT_TITLE, KT_TITLE_EMBED, KT_TEXT, KT_TEXT_EMBED, KT_FILE_ID,
                             KT_PAGE})


def protected_columns(schema: TableSchema) -> frozenset[str]:
    """Columns that cannot be dropped or renamed (fixed columns of the table type)."""
    if schema.table_type == "knowledge":
        return KNOWLEDGE_FIXED
    if schema.table_type == "chat":
        return frozenset({CHAT_USER, CHAT_AI})
    return frozenset()


@dataclass
class ValidationContext:
    """What validation needs to know outside the schema.

    Attributes:
        models: The model registry; None skips model checks (unit tests).
        knowledge_tables: Ids of the project's knowledge tables (RAG targets).
        tolerated_rag_targets: ``(column storage name, knowledge table id)`` pairs accepted
            although the table does not exist: RAG columns that used it before the change
            being validated (a dangling reference is not the new change's mistake).
    """

    models: Any = None
    knowledge_tables: Collection[str] = field(default_factory=frozenset)
    tolerated_rag_targets: Collection[tuple[str, str]] = field(default_factory=frozenset)


def _default_field(column_id: str) -> str:
    return f"cols[{column_id}]"


class _Checker:
    def __init__(self, schema: TableSchema, ctx: ValidationContext,
                 field_for: Callable[[str], str]) -> None:
        self.schema = schema
        self.ctx = ctx
        self.field_for = field_for
        self.v = Violations()
        self.not_found: list[NotFound] = []

    def bad(self, col: ColumnSchema, path: str, description: str) -> None:
        name = self.field_for(col.id) + (f".{path}" if path else "")
        self.v.add(name, f"column {col.id!r}: {description}")

    def run(self) -> None:
        schema = self.schema
        user_cols = [c for c in schema.columns if not c.system]
        if len(user_cols) > MAX_COLUMNS:
            self.v.add("cols", f"at most {MAX_COLUMNS} columns per table (got {len(user_cols)})")
        seen: dict[str, str] = {}
        for i, col in enumerate(schema.columns):
            self.check_identity(col, seen)
            self.check_gen_config(col, schema.columns[:i])
        self.check_table_type()
        self.v.raise_if_any()
        if self.not_found:
            raise self.not_found[0]

    def check_identity(self, col: ColumnSchema, seen: dict[str, str]) -> None:
        problem = None if col.system else column_id_problem(col.id)
        if problem:
            self.bad(col, "id", problem)
        key = col.id.casefold()
        if key in seen:
            self.bad(col, "id", f"duplicates column {seen[key]!r} (ids are compared "
                                "case-insensitively)")
        seen.setdefault(key, col.id)
        allowed = (*DTYPES, EMBEDDING_DTYPE) if col.system else DTYPES
        if col.dtype not in allowed:
            self.bad(col, "dtype", f"unknown dtype {col.dtype!r}; use one of {', '.join(DTYPES)}")

    def check_gen_config(self, col: ColumnSchema, left: tuple[ColumnSchema, ...]) -> None:
        config = col.gen_config
        if isinstance(config, LLMGenConfig):
            self.check_llm(col, config, left)
        elif isinstance(config, PythonGenConfig):
            self.check_python(col, config)
        elif isinstance(config, EmbedGenConfig):
            self.check_embed(col, config, left)

    def check_refs(self, col: ColumnSchema, path: str, text: str,
                   left: tuple[ColumnSchema, ...]) -> None:
        if len(text) > MAX_PROMPT_CHARS:
            self.bad(col, path, f"at most {MAX_PROMPT_CHARS} characters")
            return
        left_ids = {c.id: c for c in left}
        all_ids = set(self.schema.column_ids)
        for ref in references(text):
            if ref == col.id:
                self.bad(col, path, f"references itself (${{{ref}}})")
            elif ref in left_ids:
                if left_ids[ref].dtype == EMBEDDING_DTYPE:
                    self.bad(col, path, f"cannot reference embedding column {ref!r}")
            elif ref in all_ids:
                self.bad(col, path, f"references column {ref!r}, which is not to its left "
                                    "(a column may only reference columns on its left)")
            else:
                valid = ", ".join(repr(c.id) for c in left) or "none"
                self.bad(col, path, f"references unknown column {ref!r} "
                                    f"(columns on its left: {valid})")

    def check_model(self, col: ColumnSchema, path: str, model_id: str, capability: str) -> None:
        models = self.ctx.models
        if models is None or not model_id:
            return
        if model_id not in models:
            self.not_found.append(NotFound(
                f"column {col.id!r}: {model_not_found_message(model_id)}",
                reason="MODEL_NOT_FOUND", metadata={"model": model_id, "column": col.id},
                field_violations=[FieldViolation(f"{self.field_for(col.id)}.{path}",
                                                 model_not_found_message(model_id))],
                resource_type="model", resource_name=model_id))
            return
        spec = models.get(model_id)
        if capability not in spec.capabilities:
            self.bad(col, path, f"model {model_id!r} cannot {capability} (it supports: "
                                f"{', '.join(sorted(spec.capabilities))})")

    def check_llm(self, col: ColumnSchema, config: LLMGenConfig,
                  left: tuple[ColumnSchema, ...]) -> None:
        if col.dtype != "str":
            self.bad(col, "dtype", f"an LLM column must have dtype str, not {col.dtype!r}")
        self.check_model(col, "gen_config.llm.model", config.model, "chat")
        if config.temperature is not None and not 0.0 <= config.temperature <= 2.0:
            self.bad(col, "gen_config.llm.temperature", "must be between 0 and 2")
        if config.max_tokens is not None and config.max_tokens < 1:
            self.bad(col, "gen_config.llm.max_tokens", "must be at least 1")
        if config.top_p is not None and not 0.0 < config.top_p <= 1.0:
            self.bad(col, "gen_config.llm.top_p", "must be in (0, 1]")
        self.check_refs(col, "gen_config.llm.system_prompt", config.system_prompt, left)
        self.check_refs(col, "gen_config.llm.prompt", config.prompt, left)
        rag = config.rag_params
        if rag is None:
            return
        path = "gen_config.llm.rag_params"
        if not rag.table_id:
            self.bad(col, f"{path}.table_id", "the knowledge table id is required")
        elif (rag.table_id not in self.ctx.knowledge_tables
              and (col.storage_name, rag.table_id) not in self.ctx.tolerated_rag_targets):
            self.not_found.append(NotFound(
                f"column {col.id!r}: knowledge table {rag.table_id!r} does not exist",
                reason="KNOWLEDGE_TABLE_NOT_FOUND",
                metadata={"tableId": rag.table_id, "column": col.id},
                field_violations=[FieldViolation(f"{self.field_for(col.id)}.{path}.table_id",
                                                 f"unknown knowledge table {rag.table_id!r}")],
                resource_type="knowledge table", resource_name=rag.table_id))
        if not 1 <= rag.k <= MAX_RAG_K:
            self.bad(col, f"{path}.k", f"must be between 1 and {MAX_RAG_K}")
        self.check_model(col, f"{path}.reranking_model", rag.reranking_model, "rerank")
        self.check_refs(col, f"{path}.search_query", rag.search_query, left)

    def check_python(self, col: ColumnSchema, config: PythonGenConfig) -> None:
        if col.dtype not in PYTHON_DTYPES:
            self.bad(col, "dtype", f"a Python column's dtype must be one of "
                                   f"{', '.join(sorted(PYTHON_DTYPES))}")
        code = config.python_code
        path = "gen_config.python.python_code"
        if not code.strip():
            self.bad(col, path, "must not be empty")
            return
        if len(code) > MAX_CODE_CHARS:
            self.bad(col, path, f"at most {MAX_CODE_CHARS} characters")
            return
        try:
            compile(code, f"<column {col.id}>", "exec", dont_inherit=True)
        except SyntaxError as exc:
            self.bad(col, path, f"line {exc.lineno}: {exc.msg}")
        except (ValueError, RecursionError, MemoryError) as exc:
            self.bad(col, path, f"does not compile: {exc or type(exc).__name__}")

    def check_embed(self, col: ColumnSchema, config: EmbedGenConfig,
                    left: tuple[ColumnSchema, ...]) -> None:
        if col.dtype != EMBEDDING_DTYPE or not col.system:
            self.bad(col, "gen_config.embed", "embedding columns are created by knowledge "
                                              "tables only")
        source = next((c for c in left if c.id == config.source_column), None)
        if source is None or source.dtype != "str":
            self.bad(col, "gen_config.embed.source_column",
                     f"must be a str column on its left (got {config.source_column!r})")
        self.check_model(col, "gen_config.embed.embedding_model", config.embedding_model,
                         "embed")

    def check_table_type(self) -> None:
        schema = self.schema
        if schema.table_type == "chat":
            user, ai = schema.column(CHAT_USER), schema.column(CHAT_AI)
            if user is None or user.dtype != "str" or user.gen_config is not None:
                self.v.add("cols", f"a chat table needs a {CHAT_USER!r} input column of "
                                   "dtype str")
            if ai is None or ai.dtype != "str" or not isinstance(ai.gen_config, LLMGenConfig):
                self.v.add("cols", f"a chat table needs an {CHAT_AI!r} LLM column of dtype str")
            if (user is not None and ai is not None
                    and schema.columns.index(user) > schema.columns.index(ai)):
                self.v.add("cols", f"the {CHAT_USER!r} column must come before {CHAT_AI!r}")
        elif schema.table_type == "knowledge":
            missing = KNOWLEDGE_FIXED - set(schema.column_ids)
            if missing:
                self.v.add("cols", f"a knowledge table keeps its fixed columns (missing: "
                                   f"{', '.join(sorted(missing))})")


def validate_table(schema: TableSchema, ctx: ValidationContext,
                   field_for: Callable[[str], str] = _default_field) -> None:
    """Validate a whole table schema.

    Args:
        schema: The table as it would be after the change.
        ctx: Models and the project's knowledge tables.
        field_for: Maps a column id to the request field path naming it in violations.

    Raises:
        InvalidArgument: every syntactic problem at once, each naming its column.
        NotFound: a referenced model or knowledge table does not exist.
    """
    check_table_type(schema.table_type)
    _Checker(schema, ctx, field_for).run()
