"""The row engine over an in-memory store: persistence order, events, failures, bounds,
ordering of multi-turn rows, cancellation, batch executors, regeneration.

LLM cells use the built-in offline model, or litellm over real HTTP against the fake OpenAI
server where provider behaviour (faults, concurrency) matters.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from rowforge.server.errors import InvalidArgument, NotFound
from rowforge.server.providers import Message
from rowforge.server.providers.prompts import QUERY_INSTRUCTION
from rowforge.server.tables.engine import (
    CellCompleted,
    CellDelta,
    CellReferences,
    CellRun,
    Completed,
    RowCompleted,
    RowCreated,
)
from rowforge.server.tables.model import (
    Cell,
    CellStatus,
    Chunk,
    EmbedGenConfig,
    LLMGenConfig,
    RAGParams,
    References,
)
from tests.fakes.openai_server import FakeOpenAI
from tests.support.waiting import eventually
from tests.unit.engine_memory import MemoryStore, col, llm, make_engine, table

KEY_ENV = "ROWFORGE_TEST_ENGINE_KEY"
os.environ[KEY_ENV] = "sk-engine"


def chain():
    """a (input) -> b -> c, and d independent of b."""
    return table(col("a"), col("b", gen=llm("Summarise ${a}")), col("c", gen=llm("Echo ${b}")),
                 col("d", gen=llm("Other ${a}")))


class Recording:
    """A column executor that counts concurrent runs; waits on ``gate`` or sleeps."""

    def __init__(self, *, delay: float = 0.0, gate: asyncio.Event | None = None,
                 value: Any = None) -> None:
        self.delay, self.gate, self.value = delay, gate, value
        self.active = self.max_active = self.started = 0
        self.batches: list[int] = []

    async def run(self, cell: CellRun) -> Cell:
        self.started += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.gate is not None:
                await self.gate.wait()
            else:
                await asyncio.sleep(self.delay)
        finally:
            self.active -= 1
        return Cell(value=self.value if self.value is not None else f"{cell.column.id} done")


class RecordingBatch(Recording):
    async def run_batch(self, cells: Sequence[CellRun]) -> list[Cell]:
        self.batches.append(len(cells))
        return [Cell(value=[float(i), 1.0]) for i in range(len(cells))]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key="sk-engine") as server:
        yield server


def fake_models(fake: FakeOpenAI) -> list[dict[str, Any]]:
    base = {"api_base": fake.base_url, "api_key_env": KEY_ENV}
    return [{"id": "fake/gpt", "route": "openai/fake-gpt", "capabilities": ["chat", "image"],
             **base},
            {"id": "fake/unknown", "route": "openai/unknown-model", "capabilities": ["chat"],
             **base}]


# -- persistence and events ----------------------------------------------------------------

async def test_inputs_are_written_before_generation_and_each_cell_as_it_completes():
    store = MemoryStore()
    engine = make_engine(store)
    results = await engine.add_rows(chain(), [{"a": "apples"}, {"a": "pears"}])
    assert store.log[0][0] == "insert"
    writes = [entry for entry in store.log[1:]]
    assert all(entry[0] == "write" and len(entry[2]) == 1 for entry in writes)
    assert len(writes) == 2 * 3
    for result in results:
        stored = store.rows[result.row_id]
        for name in ("b", "c", "d"):
            assert result.cells[name].status == CellStatus.DONE
            assert stored[name].status == CellStatus.DONE
            assert stored[name].value == result.cells[name].value
            assert result.cells[name].usage.completion_tokens > 0
        assert "apples" in store.rows[results[0].row_id]["b"].value
        # c read b's value: the built-in model restates its prompt
        assert stored["b"].value.split()[0] in stored["c"].value


async def test_stream_events_are_ordered_per_row_and_cell():
    events: list[Any] = []
    engine = make_engine()
    results = await engine.add_rows(chain(), [{"a": "one"}, {"a": "two"}, {"a": "three"}],
                                    sink=events.append)
    assert isinstance(events[-1], Completed)
    assert sum(isinstance(e, Completed) for e in events) == 1
    assert events[-1].row_count == 3 and events[-1].error_count == 0
    for index, result in enumerate(results):
        mine = [e for e in events if getattr(e, "row_id", None) == result.row_id
                or (isinstance(e, RowCompleted) and e.row.row_id == result.row_id)]
        assert isinstance(mine[0], RowCreated) and mine[0].row_index == index
        assert isinstance(mine[-1], RowCompleted) and mine[-1].row_index == index
        assert mine[-1].row.cells == result.cells
        for name in ("b", "c", "d"):
            cell_events = [e for e in mine if getattr(e, "column", None) == name]
            deltas = [e for e in cell_events if isinstance(e, CellDelta)]
            assert isinstance(cell_events[-1], CellCompleted)
            assert [d.index for d in deltas] == list(range(len(deltas)))
            assert "".join(d.text for d in deltas) == cell_events[-1].cell.value
            # coalesced: the first token alone, then the rest together
            assert len(deltas) <= 2


async def test_unary_calls_produce_no_events_and_given_generated_values_are_kept():
    store = MemoryStore()
    engine = make_engine(store)
    [result] = await engine.add_rows(chain(), [{"a": "x", "b": "given by the caller"}])
    assert result.cells["b"].value == "given by the caller"
    assert "given by the caller" in result.cells["c"].value
    assert ("write", result.row_id, {"b": CellStatus.DONE}) not in store.log


@pytest.mark.parametrize("count", [0, 101])
async def test_row_count_limits(count):
    store = MemoryStore()
    with pytest.raises(InvalidArgument) as err:
        await make_engine(store).add_rows(chain(), [{"a": "x"}] * count)
    assert err.value.field_violations[0].field == "data"
    assert store.rows == {}


async def test_invalid_input_writes_nothing_and_emits_nothing():
    store = MemoryStore()
    events: list[Any] = []
    with pytest.raises(InvalidArgument, match="unknown column"):
        await make_engine(store).add_rows(chain(), [{"a": "x"}, {"zzz": 1}], sink=events.append)
    assert store.rows == {} and events == []


# -- failures ------------------------------------------------------------------------------

async def test_a_failed_cell_fails_only_its_dependants():
    schema = table(col("a"), col("bad", gen=llm("${a}", model="nope/none")),
                   col("good", gen=llm("${a}")), col("after", gen=llm("${bad} ${good}")))
    store = MemoryStore()
    events: list[Any] = []
    [result] = await make_engine(store).add_rows(schema, [{"a": "hi"}], sink=events.append)
    cells = store.rows[result.row_id]
    assert cells["bad"].status == CellStatus.ERROR
    assert "'nope/none' does not exist" in cells["bad"].error
    assert cells["good"].status == CellStatus.DONE
    assert cells["after"].status == CellStatus.ERROR
    assert cells["after"].error == "upstream column 'bad' failed"
    assert events[-1] == Completed(1, 2)


async def test_a_value_that_does_not_fit_the_dtype_fails_the_cell():
    engine = make_engine()
    engine.executors.register(LLMGenConfig, Recording(value="not a number"))
    schema = table(col("a"), col("n", "int", gen=llm("${a}")))
    [result] = await engine.add_rows(schema, [{"a": "x"}])
    assert result.cells["n"].status == CellStatus.ERROR
    assert "does not fit dtype int" in result.cells["n"].error


async def test_transient_provider_errors_are_retried(fake):
    fake.fail_next(2, 429, retry_after=0.01)
    schema = table(col("a"), col("b", gen=llm("${a}", model="fake/gpt")))
    engine = make_engine(models=fake_models(fake))
    [result] = await engine.add_rows(schema, [{"a": "hello there"}], sink=lambda e: None)
    assert result.cells["b"].status == CellStatus.DONE, result.cells["b"].error
    assert len(fake.requests_to("/v1/chat/completions")) == 3


async def test_persistent_provider_errors_fail_the_cell_after_a_few_attempts(fake):
    fake.fail_next(10, 500)
    schema = table(col("a"), col("b", gen=llm("${a}", model="fake/gpt")),
                   col("c", gen=llm("${a}")))
    engine = make_engine(models=fake_models(fake))
    [result] = await engine.add_rows(schema, [{"a": "hello"}])
    assert result.cells["b"].status == CellStatus.ERROR
    assert "fake/gpt" in result.cells["b"].error
    assert result.cells["c"].status == CellStatus.DONE
    assert len(fake.requests_to("/v1/chat/completions")) == 3


async def test_unknown_model_at_the_provider_is_not_retried(fake):
    schema = table(col("a"), col("b", gen=llm("${a}", model="fake/unknown")))
    engine = make_engine(models=fake_models(fake))
    [result] = await engine.add_rows(schema, [{"a": "hello"}])
    assert result.cells["b"].status == CellStatus.ERROR
    assert "fake/unknown" in result.cells["b"].error
    assert len(fake.requests_to("/v1/chat/completions")) == 1


async def test_retries_never_wait_past_the_deadline(fake):
    fake.fail_next(5, 429, retry_after=30)
    schema = table(col("a"), col("b", gen=llm("${a}", model="fake/gpt")))
    engine = make_engine(models=fake_models(fake))
    loop = asyncio.get_running_loop()
    start = loop.time()
    [result] = await engine.add_rows(schema, [{"a": "hello"}], deadline=start + 2)
    assert loop.time() - start < 2
    assert result.cells["b"].status == CellStatus.ERROR
    assert "rate limiting" in result.cells["b"].error


# -- bounds and ordering -------------------------------------------------------------------

async def test_cells_are_bounded_per_table():
    engine = make_engine(table_concurrency=3)
    slow = Recording(delay=0.01)
    engine.executors.register(LLMGenConfig, slow)
    results = await engine.add_rows(chain(), [{"a": str(i)} for i in range(12)])
    assert slow.started == 36
    assert slow.max_active == 3
    assert all(c.status == CellStatus.DONE for r in results for c in r.cells.values())


async def test_model_calls_are_bounded_per_model(fake):
    fake.token_delay = 0.01
    schema = table(col("a"), col("b", gen=llm("${a}", model="fake/gpt")))
    engine = make_engine(models=fake_models(fake), model_concurrency=2)
    results = await engine.add_rows(schema, [{"a": f"row {i}"} for i in range(6)],
                                    sink=lambda e: None)
    assert all(r.cells["b"].status == CellStatus.DONE for r in results)
    assert fake.max_in_flight == 2


async def test_independent_columns_of_a_row_run_concurrently():
    engine = make_engine()
    slow = Recording(delay=0.05)
    engine.executors.register(LLMGenConfig, slow)
    schema = table(col("a"), *(col(f"g{i}", gen=llm("${a}")) for i in range(4)))
    await engine.add_rows(schema, [{"a": "x"}])
    assert slow.max_active == 4


async def test_multi_turn_rows_are_generated_in_order_seeing_earlier_rows():
    store = MemoryStore()
    schema = table(col("q"), col("a", gen=llm("${q}", multi_turn=True)))
    results = await make_engine(store).add_rows(
        schema, [{"q": "My name is Alice"}, {"q": "What's my name?"}], concurrent=True)
    assert results[1].cells["a"].value == "Your name is Alice."
    writes = [entry[1] for entry in store.log if entry[0] == "write"]
    assert writes == [results[0].row_id, results[1].row_id]


async def test_concurrent_false_runs_rows_one_after_another():
    engine = make_engine()
    slow = Recording(delay=0.01)
    engine.executors.register(LLMGenConfig, slow)
    schema = table(col("a"), col("b", gen=llm("${a}")))
    await engine.add_rows(schema, [{"a": str(i)} for i in range(5)], concurrent=False)
    assert slow.max_active == 1


# -- cancellation --------------------------------------------------------------------------

@pytest.mark.parametrize("concurrent", [True, False])
async def test_cancellation_marks_every_unfinished_cell_skipped(concurrent):
    store = MemoryStore()
    engine = make_engine(store)
    gate = asyncio.Event()  # never set: cells hang until cancelled
    hanging = Recording(gate=gate)
    engine.executors.register(LLMGenConfig, hanging)
    task = asyncio.create_task(engine.add_rows(chain(), [{"a": str(i)} for i in range(4)],
                                               concurrent=concurrent))
    # b and d of each running row have started
    await eventually(lambda: hanging.started >= (4 * 2 if concurrent else 2))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(store.rows) == 4
    for cells in store.rows.values():
        for name in ("b", "c", "d"):
            assert cells[name].status == CellStatus.SKIPPED
            assert cells[name].error == "generation cancelled"


async def test_cancelled_during_insert_still_leaves_no_pending_cells():
    store = MemoryStore()
    store.insert_delay = 0.05
    engine = make_engine(store)
    task = asyncio.create_task(engine.add_rows(chain(), [{"a": "x"}]))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    [cells] = store.rows.values()
    assert {cells[n].status for n in ("b", "c", "d")} == {CellStatus.SKIPPED}


async def test_a_cancelled_stream_closes_the_provider_request(fake):
    fake.token_delay = 0.05
    schema = table(col("a"), col("b", gen=llm("${a}", model="fake/gpt")))
    store = MemoryStore()
    engine = make_engine(store, models=fake_models(fake))
    deltas: list[Any] = []
    task = asyncio.create_task(engine.add_rows(
        schema, [{"a": "a long question with many words in it to stream slowly"}],
        sink=deltas.append))
    await eventually(lambda: any(isinstance(e, CellDelta) for e in deltas))
    assert fake.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if fake.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert fake.in_flight == 0
    [cells] = store.rows.values()
    assert cells["b"].status == CellStatus.SKIPPED


# -- RAG hook, batch executors, embeddings --------------------------------------------------

class FakeRag:
    def __init__(self) -> None:
        self.calls: list[tuple[str, RAGParams, str]] = []
        self.written: list[Any] = []

    async def retrieve(self, project_id: str, params: RAGParams, query: str,
                       row: dict[str, Any], *, write_query: Any = None) -> References:
        self.calls.append((project_id, params, query))
        if write_query is not None:
            self.written.append(await write_query([Message("system", QUERY_INSTRUCTION),
                                                   Message("user", query)]))
        return References(table_id=params.table_id, search_query=query, chunks=(
            Chunk(row_id="k1", title="Paris", text="Paris is the capital of France."),))


async def test_rag_references_come_first_and_are_stored():
    store = MemoryStore()
    rag = FakeRag()
    engine = make_engine(store, ports={"retriever": rag})
    schema = table(col("q"), col("a", gen=llm("${q}", rag_params=RAGParams(
        table_id="kb", k=1, inline_citations=True))))
    events: list[Any] = []
    [result] = await engine.add_rows(schema, [{"q": "Capital of France?"}], sink=events.append)
    kinds = [type(e) for e in events if getattr(e, "column", None) == "a"]
    assert kinds[0] is CellReferences and kinds[1] is CellDelta and kinds[-1] is CellCompleted
    assert rag.calls == [("p", schema.columns[1].gen_config.rag_params, "Capital of France?")]
    cell = store.rows[result.row_id]["a"]
    assert cell.references.chunks[0].row_id == "k1"
    assert cell.value == "According to the references: Paris is the capital of France [@0]."
    # The hook may have the column's model write the query (here the built-in one).
    [written] = rag.written
    assert written.text == "capital france" and written.model == "rowforge/chat"
    assert written.usage.completion_tokens == 2


async def test_a_fixed_search_query_gets_no_query_writer():
    rag = FakeRag()
    engine = make_engine(ports={"retriever": rag})
    schema = table(col("q"), col("a", gen=llm("${q}", rag_params=RAGParams(
        table_id="kb", search_query="about ${q}"))))
    await engine.add_rows(schema, [{"q": "x"}])
    assert rag.calls[0][2] == "about x" and rag.written == []


async def test_rag_without_the_hook_fails_the_cell_clearly():
    schema = table(col("q"), col("a", gen=llm("${q}", rag_params=RAGParams(table_id="kb"))))
    [result] = await make_engine().add_rows(schema, [{"q": "x"}])
    assert result.cells["a"].status == CellStatus.ERROR
    assert result.cells["a"].error.startswith("RAG not available")


def knowledge():
    return table(col("Title"), col("Text"),
                 col("Title Embed", "embedding", gen=EmbedGenConfig("rowforge/embed", "Title")),
                 table_type="knowledge")


async def test_batch_executors_get_all_rows_of_a_call_at_once():
    engine = make_engine()
    batch = RecordingBatch()
    engine.executors.register(EmbedGenConfig, batch)
    results = await engine.add_rows(knowledge(), [{"Title": f"t{i}"} for i in range(5)])
    assert batch.batches == [5]
    assert [r.cells["Title Embed"].value[0] for r in results] == [0.0, 1.0, 2.0, 3.0, 4.0]


async def test_the_default_embedding_executor_embeds_the_source_column():
    store = MemoryStore()
    results = await make_engine(store).add_rows(
        knowledge(), [{"Title": "alpha"}, {"Title": "beta"}, {"Text": "no title"}])
    vectors = [r.cells["Title Embed"].value for r in results]
    assert len(vectors[0]) == 384 and vectors[0] != vectors[1]
    assert vectors[2] is None and results[2].cells["Title Embed"].status == CellStatus.DONE


async def test_embedding_cells_never_get_vectors_of_another_length():
    def kb(dimension: int) -> Any:
        return table(col("Title"), col("Title Embed", "embedding", gen=EmbedGenConfig(
            "rowforge/embed", "Title", dimension)), table_type="knowledge")

    # The model is configured for 384 numbers, the column holds 8: no call, a clear error.
    [result] = await make_engine().add_rows(kb(8), [{"Title": "alpha"}])
    cell = result.cells["Title Embed"]
    assert cell.status == CellStatus.ERROR and cell.value is None
    assert "embedding_size = 8" in cell.error
    # An executor returning vectors of the wrong length fails the cells too.
    engine = make_engine()
    engine.executors.register(EmbedGenConfig, RecordingBatch())
    rows = [{"Title": "alpha"}, {"Title": "beta"}]
    for result in await engine.add_rows(kb(3), rows):
        assert result.cells["Title Embed"].status == CellStatus.ERROR
        assert "expected 3 numbers" in result.cells["Title Embed"].error
    results = await engine.add_rows(kb(2), rows)
    assert [r.cells["Title Embed"].value for r in results] == [[0.0, 1.0], [1.0, 1.0]]


# -- regeneration --------------------------------------------------------------------------

async def test_regen_selected_column_keeps_the_others():
    store = MemoryStore()
    engine = make_engine(store)
    [first] = await engine.add_rows(chain(), [{"a": "apples"}])
    store.rows[first.row_id]["a"] = Cell(value="bananas")
    store.log.clear()
    events: list[Any] = []
    [again] = await engine.regen_rows(chain(), [first.row_id], strategy="run_selected",
                                      output_column="b", sink=events.append)
    assert "bananas" in store.rows[first.row_id]["b"].value
    assert store.rows[first.row_id]["d"] == first.cells["d"]
    assert [e for e in store.log if e[0] == "write"] == [
        ("write", first.row_id, {"b": CellStatus.DONE})]
    assert again.cells["b"].status == CellStatus.DONE
    # not selected for regeneration: reported SKIPPED with the stored value
    assert again.cells["c"].status == CellStatus.SKIPPED
    assert again.cells["c"].value == first.cells["c"].value
    assert events[0] == RowCreated(0, first.row_id)


async def test_regen_after_uses_stored_upstream_values_and_their_failures():
    store = MemoryStore()
    engine = make_engine(store)
    [row] = await engine.add_rows(chain(), [{"a": "x"}])
    store.rows[row.row_id]["b"] = Cell(value=None, status=CellStatus.ERROR, error="boom")
    [again] = await engine.regen_rows(chain(), [row.row_id], strategy="run_after",
                                      output_column="c")
    assert again.cells["c"].error == "upstream column 'b' failed"
    assert again.cells["d"].status == CellStatus.DONE


async def test_regen_errors():
    store = MemoryStore()
    engine = make_engine(store)
    [row] = await engine.add_rows(chain(), [{"a": "x"}])
    with pytest.raises(NotFound):
        await engine.regen_rows(chain(), [row.row_id, "missing"])
    with pytest.raises(InvalidArgument, match="listed twice"):
        await engine.regen_rows(chain(), [row.row_id, row.row_id])
    with pytest.raises(InvalidArgument, match="at most 100"):
        await engine.regen_rows(chain(), [row.row_id] * 101)
    with pytest.raises(InvalidArgument, match="input column"):
        await engine.regen_rows(chain(), [row.row_id], strategy="run_after", output_column="a")
