"""Column executors: how one generated cell (or a batch of them) is computed.

Executors are looked up by gen-config type in an :class:`ExecutorRegistry`; another domain can
register its own (``engine.executors.register(EmbedGenConfig, MyEmbedder())``). An
executor returns the cell (DONE, or ERROR for a failure that is the cell's own business) or
raises a :class:`~rowforge.server.errors.RowforgeError`, which the engine turns into an ERROR
cell with the error's message. An executor with a ``run_batch`` method gets all the cells of
its column in one call of AddRows at once (e.g. embeddings, batched per request).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from rowforge.server import tracing
from rowforge.server.config import Settings
from rowforge.server.errors import FailedPrecondition, InvalidArgument, RowforgeError
from rowforge.server.providers import (
    Attachment,
    ChatResult,
    Message,
    ModelRegistry,
    ModelSpec,
    Usage,
    with_retries,
)
from rowforge.server.providers.prompts import CITATION_INSTRUCTION, format_references
from rowforge.server.sandbox import SandboxError
from rowforge.server.tables.embedding_model import check_embedding_model, embedding_spec
from rowforge.server.tables.engine.deltas import DeltaCoalescer
from rowforge.server.tables.engine.events import CellReferences, EventSink
from rowforge.server.tables.engine.history import HistorySource, conversation
from rowforge.server.tables.engine.plan import ColumnPlan
from rowforge.server.tables.engine.ports import (
    FileAccess,
    ModelAccess,
    Retriever,
    SandboxRunner,
)
from rowforge.server.tables.model import (
    EMBEDDING_DTYPE,
    FILE_DTYPES,
    Cell,
    CellStatus,
    CellUsage,
    ColumnSchema,
    EmbedGenConfig,
    LLMGenConfig,
    PythonGenConfig,
    RAGParams,
    References,
    TableSchema,
)

log = logging.getLogger("rowforge.engine")

#: Seconds a provider call may take when the RPC has no deadline.
DEFAULT_MODEL_TIMEOUT_S = 120.0
#: Longest answer of a model writing a RAG search query.
QUERY_MAX_TOKENS = 100
_FILE_KINDS = {"image": "image", "audio": "audio", "file": None}


class EngineServices(Protocol):
    """What executors may use (the engine implements it)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def models(self) -> ModelRegistry: ...
    @property
    def store(self) -> HistorySource: ...
    @property
    def providers(self) -> ModelAccess: ...
    @property
    def files(self) -> FileAccess | None: ...
    @property
    def rag(self) -> Retriever | None: ...
    async def sandbox(self) -> SandboxRunner: ...
    def model_slot(self, model_id: str) -> AbstractAsyncContextManager[Any]: ...
    @property
    def retries_calls(self) -> bool:
        """Calls through ``providers`` are retried there already (a table job's gate):
        executors make one attempt, or a failing call would be retried n x m times."""


@dataclass
class CellRun:
    """Everything one cell's executor needs.

    Attributes:
        services: The engine's components (models, files, sandbox, RAG hook, ...).
        schema: The table.
        plan: The column's plan (templates, dependencies).
        row_id: The row.
        values: The row's current values (inputs and the generated cells done so far).
        sink: Where stream events go (None for unary calls: no deltas are produced).
        deadline: ``loop.time()`` by which the call must end (None: no deadline).
    """

    services: EngineServices
    schema: TableSchema
    plan: ColumnPlan
    row_id: str
    values: Mapping[str, Any]
    sink: EventSink | None = None
    deadline: float | None = None

    @property
    def column(self) -> ColumnSchema:
        return self.plan.column

    @property
    def project_id(self) -> str:
        return self.schema.project_id

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        if self.deadline is None:
            return None
        return self.deadline - asyncio.get_running_loop().time()


@runtime_checkable
class ColumnExecutor(Protocol):
    """Computes one cell."""

    async def run(self, cell: CellRun) -> Cell: ...


@runtime_checkable
class BatchColumnExecutor(ColumnExecutor, Protocol):
    """Computes the cells of one column for many rows at once."""

    async def run_batch(self, cells: Sequence[CellRun]) -> list[Cell]: ...


class ExecutorRegistry:
    """Gen-config type -> executor."""

    def __init__(self) -> None:
        self._by_type: dict[type, ColumnExecutor] = {}

    def register(self, config_type: type, executor: ColumnExecutor) -> None:
        """Use ``executor`` for columns whose gen config is a ``config_type``."""
        self._by_type[config_type] = executor

    def get(self, config: object) -> ColumnExecutor | None:
        for cls in type(config).__mro__:
            found = self._by_type.get(cls)
            if found is not None:
                return found
        return None


def default_executors() -> ExecutorRegistry:
    """LLM, Python and embedding executors."""
    registry = ExecutorRegistry()
    registry.register(LLMGenConfig, LLMExecutor())
    registry.register(PythonGenConfig, PythonExecutor())
    registry.register(EmbedGenConfig, EmbedExecutor())
    return registry


# -- retries -------------------------------------------------------------------------------

@dataclass(frozen=True)
class RetryPolicy:
    """Retries of transient provider errors (429, 5xx, timeouts) before a cell fails."""

    max_attempts: int = 3
    base_delay: float = 0.25
    max_delay: float = 8.0

    async def call(self, cell: CellRun, fn: Callable[[], Awaitable[Any]]) -> Any:
        """``fn()`` with retries; a wait that would pass the deadline is not taken (the last
        error is raised instead). No retries when the services retry calls themselves."""
        if cell.services.retries_calls:
            return await fn()

        def check_deadline(attempt: int, error: BaseException, delay: float) -> None:
            left = cell.remaining()
            if left is not None and delay >= left:
                raise error
            log.info("retrying %s.%s after %s (attempt %d, waiting %.2fs)", cell.schema.id,
                     cell.column.id, getattr(error, "reason", type(error).__name__), attempt,
                     delay)

        return await with_retries(fn, max_attempts=self.max_attempts, base_delay=self.base_delay,
                                  max_delay=self.max_delay, on_retry=check_deadline)


class _StreamBroken(Exception):
    """A provider failed after text was already streamed: retrying would repeat it."""

    def __init__(self, error: RowforgeError) -> None:
        super().__init__(error.message)
        self.error = error


# -- LLM -----------------------------------------------------------------------------------

class LLMExecutor:
    """An LLM column: render the prompts, add references, history and attachments, call the
    model (streaming deltas when someone listens), with retries of transient errors."""

    def __init__(self, retry: RetryPolicy = RetryPolicy()) -> None:
        self.retry = retry

    async def run(self, cell: CellRun) -> Cell:
        config = cell.column.gen_config
        assert isinstance(config, LLMGenConfig)
        plan = cell.plan
        models = cell.services.models
        spec = models.require(config.model, "chat") if config.model else models.default("chat")
        values = cell.values
        assert plan.prompt is not None
        prompt = plan.prompt.render(values)
        system = plan.system.render(values) if plan.system is not None else ""
        references: References | None = None
        if config.rag_params is not None:
            references, prompt = await self._retrieve(cell, spec, config.rag_params, prompt)
        attachments = await self._attachments(cell) if plan.file_refs else ()
        current = Message("user", prompt, attachments)
        system_message = Message("system", system) if system else None
        if plan.multi_turn:
            messages = await conversation(
                cell.services.store, cell.schema, row_id=cell.row_id, column=cell.column.id,
                prompt=plan.prompt, spec=spec, max_tokens=config.max_tokens,
                system=system_message, current=current)
        else:
            messages = [system_message, current] if system_message else [current]
        async with cell.services.model_slot(spec.id):
            text, usage = await self._complete(cell, spec, config, messages)
        return Cell(value=text, status=CellStatus.DONE, references=references,
                    usage=CellUsage(usage.prompt_tokens, usage.completion_tokens))

    async def _complete(self, cell: CellRun, spec: ModelSpec, config: LLMGenConfig,
                        messages: list[Message]) -> tuple[str, Usage]:
        def options() -> dict[str, Any]:
            left = cell.remaining()
            timeout = DEFAULT_MODEL_TIMEOUT_S if left is None else max(0.05, left)
            return {"temperature": config.temperature, "max_tokens": config.max_tokens,
                    "top_p": config.top_p, "timeout": min(timeout, DEFAULT_MODEL_TIMEOUT_S)}

        async def whole() -> tuple[str, Usage]:
            result = await cell.services.providers.chat(spec, messages, **options())
            return result.text, result.usage

        if cell.sink is None:  # nobody listens to deltas: the whole answer at once
            return await self.retry.call(cell, whole)

        deltas = DeltaCoalescer(cell.sink, cell.row_id, cell.column.id)

        async def streamed() -> tuple[str, Usage]:
            try:
                result = await cell.services.providers.chat(spec, messages, on_text=deltas.push,
                                                            **options())
            except RowforgeError as exc:
                if deltas.emitted:
                    raise _StreamBroken(exc) from exc
                deltas.discard()  # nothing reached the client: a retry starts clean
                raise
            return result.text, result.usage

        try:
            return await self.retry.call(cell, streamed)
        except _StreamBroken as broken:
            raise broken.error from None
        finally:
            deltas.close()

    async def _retrieve(self, cell: CellRun, spec: ModelSpec, params: RAGParams,
                        prompt: str) -> tuple[References, str]:
        hook = cell.services.rag
        if hook is None:
            raise FailedPrecondition(
                "RAG not available: this server has no knowledge search for rag_params "
                f"(knowledge table {params.table_id!r})", reason="RAG_UNAVAILABLE")
        plan = cell.plan
        if plan.search is not None:
            references = await hook.retrieve(cell.project_id, params,
                                             plan.search.render(cell.values), dict(cell.values))
        else:
            async def write_query(messages: Sequence[Message]) -> ChatResult:
                return await self._write_query(cell, spec, messages)

            references = await hook.retrieve(cell.project_id, params, prompt,
                                             dict(cell.values), write_query=write_query)
        if cell.sink is not None:
            cell.sink(CellReferences(cell.row_id, cell.column.id, references))
        augment = getattr(hook, "augment_prompt", None)
        if augment is not None:
            return references, augment(prompt, references, params)
        return references, augment_prompt(prompt, references, params)

    async def _write_query(self, cell: CellRun, spec: ModelSpec,
                           messages: Sequence[Message]) -> ChatResult:
        """The column's model answers the RAG hook's query-writing messages (one short,
        unstreamed call with the cell's retries, model slot and deadline)."""
        def options() -> dict[str, Any]:
            left = cell.remaining()
            timeout = DEFAULT_MODEL_TIMEOUT_S if left is None else max(0.05, left)
            return {"max_tokens": QUERY_MAX_TOKENS,
                    "timeout": min(timeout, DEFAULT_MODEL_TIMEOUT_S)}

        async with cell.services.model_slot(spec.id):
            result: ChatResult = await self.retry.call(
                cell, lambda: cell.services.providers.chat(spec, list(messages), **options()))
        return dataclasses.replace(result, model=spec.id)

    async def _attachments(self, cell: CellRun) -> tuple[Attachment, ...]:
        refs = [c for c in cell.plan.file_refs if cell.values.get(c.id)]
        if not refs:
            return ()
        files = _file_store(cell)
        out = []
        for col in refs:
            uri = cell.values[col.id]
            info = await files.get(cell.project_id, uri)
            if info.kind not in ("image", "audio"):
                continue  # documents stay a URI in the prompt text
            data = await files.read_bytes(cell.project_id, uri)
            out.append(Attachment(content_type=info.content_type, data=data, name=info.name))
        return tuple(out)


def augment_prompt(prompt: str, references: References, params: RAGParams) -> str:
    """The prompt with its references block (and the citation instruction when asked)."""
    texts = [f"Title: {c.title}\n{c.text}" if c.title else c.text for c in references.chunks]
    parts = [format_references(texts)] if texts else []
    if params.inline_citations and texts:
        parts.append(CITATION_INSTRUCTION)
    parts.append(prompt)
    return "\n\n".join(parts)


def _file_store(cell: CellRun) -> Any:
    files = cell.services.files
    if files is None:
        raise FailedPrecondition("file storage is not available on this server",
                                 reason="FILES_UNAVAILABLE")
    return files


# -- Python --------------------------------------------------------------------------------

class PythonExecutor:
    """A Python column: the code runs in the sandbox with ``row`` holding every column to its
    left (bytes for file/image/audio columns); bytes assigned to a file/image/audio column are
    stored as a file and the cell holds its URI."""

    async def run(self, cell: CellRun) -> Cell:
        config = cell.column.gen_config
        assert isinstance(config, PythonGenConfig)
        pool = await cell.services.sandbox()
        row = await self._row(cell)
        timeout = cell.services.settings.sandbox_timeout_s
        left = cell.remaining()
        if left is not None:
            timeout = max(0.05, min(timeout, left))
        try:
            with tracing.leaf("sandbox.run", column=cell.column.id):
                value = await pool.run(config.python_code, row, cell.column.id,
                                       timeout_s=timeout)
        except SandboxError as exc:
            return Cell(value=None, status=CellStatus.ERROR, error=exc.message)
        return Cell(value=await self._output(cell, value))

    async def _row(self, cell: CellRun) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for col in cell.schema.columns:
            if col.id == cell.column.id:
                break
            if col.dtype == EMBEDDING_DTYPE:
                continue  # vectors are not what Python columns work on
            value = cell.values.get(col.id)
            if col.dtype in FILE_DTYPES and isinstance(value, str) and value:
                value = await _file_store(cell).read_bytes(cell.project_id, value)
            row[col.id] = value
        return row

    async def _output(self, cell: CellRun, value: Any) -> Any:
        col = cell.column
        name = f"Python column {col.id!r}"
        if value is None:
            return None
        if col.dtype in FILE_DTYPES:
            files = _file_store(cell)
            if isinstance(value, (bytes, bytearray)):
                try:
                    info = await files.store_bytes(cell.project_id, bytes(value), name=col.id,
                                                   expected_kind=_FILE_KINDS[col.dtype])
                except InvalidArgument as exc:
                    raise InvalidArgument(f"{name} assigned bytes that cannot be stored as "
                                          f"{col.dtype}: {exc.message}",
                                          reason=exc.reason) from None
                return info.uri
            if isinstance(value, str):
                return (await files.validate_uri(cell.project_id, value, col.dtype)).uri
            raise InvalidArgument(f"{name} ({col.dtype}) must assign bytes or a file URI, not "
                                  f"{type(value).__name__}", reason="BAD_PYTHON_OUTPUT")
        if isinstance(value, (bytes, bytearray)):
            raise InvalidArgument(f"{name} assigned bytes to a {col.dtype} column; use dtype "
                                  "file, image or audio for binary output",
                                  reason="BAD_PYTHON_OUTPUT")
        if col.dtype == "str" and not isinstance(value, str):
            if isinstance(value, (list, dict)):
                return json.dumps(value, ensure_ascii=False)
            return str(value)
        return value


# -- embeddings ----------------------------------------------------------------------------

class EmbedExecutor:
    """An embedding column (knowledge tables): the source texts of a whole call embedded in
    one request per model. An empty source gives an empty (NULL) vector."""

    def __init__(self, retry: RetryPolicy = RetryPolicy()) -> None:
        self.retry = retry

    async def run(self, cell: CellRun) -> Cell:
        return (await self.run_batch([cell]))[0]

    async def run_batch(self, cells: Sequence[CellRun]) -> list[Cell]:
        out: list[Cell] = [Cell(value=None) for _ in cells]
        todo = [(i, c) for i, c in enumerate(cells) if _source_text(c)]
        if not todo:
            return out
        first = todo[0][1]
        config = first.column.gen_config
        assert isinstance(config, EmbedGenConfig)
        spec = embedding_spec(first.services.models, config)
        # A model now configured for another vector size must not write into this column.
        check_embedding_model(first.schema, first.column, spec)
        texts = [_source_text(c) for _, c in todo]
        async with first.services.model_slot(spec.id):
            result = await self.retry.call(
                first, lambda: first.services.providers.embed(spec, texts))
        for (i, _), vector in zip(todo, result.vectors, strict=True):
            out[i] = Cell(value=vector.tolist())
        return out


def _source_text(cell: CellRun) -> str:
    config = cell.column.gen_config
    assert isinstance(config, EmbedGenConfig)
    value = cell.values.get(config.source_column)
    return value if isinstance(value, str) else ("" if value is None else str(value))

