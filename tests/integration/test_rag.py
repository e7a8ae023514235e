"""RAG in LLM columns over a real server: references retrieved from a knowledge table, sent
first in the stream, injected into the prompt (title, page, content), cited inline when asked,
stored with the cell; refusals when the column is created."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from rowforge.server.providers.prompts import CITATION_INSTRUCTION, parse_citations
from rowforge.v1 import table_service_pb2 as tpb
from tests.integration import test_knowledge_service as shared
from tests.integration.test_knowledge_service import ACTION, CORPUS, Client, struct
from tests.support.status import fails

# The knowledge tests' server (with a remote reranker) and per-test project client.
kserver, channel, md, client = shared.kserver, shared.channel, shared.md, shared.client


def rag_column(name: str, *, model: str = "", k: int = 2, citations: bool = False,
               search_query: str = "", reranker: str = "", table_id: str = "kb",
               generate_query: bool | None = None) -> tpb.Column:
    params = tpb.RAGParams(table_id=table_id, k=k, inline_citations=citations,
                           search_query=search_query, reranking_model=reranker)
    if generate_query is not None:
        params.generate_query = generate_query
    return tpb.Column(id=name, dtype="str", gen_config=tpb.GenConfig(llm=tpb.LLMGenConfig(
        model=model, prompt="${question}", rag_params=params)))


async def knowledge_base(client: Client) -> dict[str, str]:
    """The labelled corpus; returns row id -> title."""
    await client.create()
    ids = await client.add([{"Title": t, "Text": x} for t, x in CORPUS])
    # EmbedFile rows carry pages: one more document, two pages.
    from tests.unit.test_parsing import make_pdf

    uri = await client.upload("moon.pdf", make_pdf(
        ["Front matter about nothing.", "The moon's gravity pulls the oceans into tides."],
        title="Moon guide"))
    await client.embed_file(uri)
    return {row_id: title for row_id, (title, _) in zip(ids, CORPUS, strict=True)}


async def stream(client: Client, table_id: str, rows: list[dict[str, Any]]
                 ) -> list[tpb.StreamAddRowsResponse]:
    return [e async for e in client.tables.StreamAddRows(tpb.StreamAddRowsRequest(
        table_type=ACTION, table_id=table_id, data=[struct(r) for r in rows]),
        metadata=client.md)]


async def test_references_come_first_are_cited_and_stored(client: Client) -> None:
    titles = await knowledge_base(client)
    await client.create("qa", table_type=ACTION, cols=[
        tpb.Column(id="question"), rag_column("answer", citations=True),
        rag_column("plain")])
    events = await stream(client, "qa", [{"question": "Why does the sea rise and fall?"}])
    kinds = [(e.WhichOneof("event"), getattr(e, e.WhichOneof("event")).output_column_name
              if e.WhichOneof("event") in ("references", "delta", "cell_completed") else "")
             for e in events]
    for column in ("answer", "plain"):
        mine = [kind for kind, col in kinds if col == column]
        assert mine[0] == "references" and mine.count("references") == 1
        assert "delta" in mine and mine[-1] == "cell_completed"
    refs = next(e.references for e in events if e.WhichOneof("event") == "references"
                and e.references.output_column_name == "answer").references
    # The column's model (the built-in one: key terms) wrote the query from the prompt.
    assert refs.table_id == "kb" and refs.search_query == "sea rise fall"
    assert refs.query_model == "rowforge/chat"
    assert refs.query_usage.prompt_tokens > 0 and refs.query_usage.completion_tokens == 3
    assert len(refs.chunks) == 2
    top = refs.chunks[0]
    assert top.title in ("Tides", "Moon guide") and "moon" in top.text.lower()
    assert all(c.row_id and c.score > 0 for c in refs.chunks)
    paged = [c for c in refs.chunks if c.title == "Moon guide"]
    assert not paged or (paged[0].page == 2 and paged[0].file_id.startswith("file://"))
    row_id = events[0].row_created.row_id
    text = "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta"
                   and e.delta.output_column_name == "answer")
    assert parse_citations(text) == [0, 1] and "[@0]" in text
    plain = "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta"
                    and e.delta.output_column_name == "plain")
    assert parse_citations(plain) == [] and plain.startswith("According to the references")

    stored = (await client.tables.GetRow(tpb.GetRowRequest(
        table_type=ACTION, table_id="qa", row_id=row_id), metadata=client.md)).row
    cell = stored.cells["answer"]
    assert cell.value.string_value == text
    assert [c.row_id for c in cell.references.chunks] == [c.row_id for c in refs.chunks]
    assert cell.references.search_query == refs.search_query
    assert cell.references.query_usage == refs.query_usage
    assert cell.usage.completion_tokens > 3  # the answer's own usage, without the query's
    assert set(titles) >= {c.row_id for c in refs.chunks if c.title in titles.values()}


async def test_prompt_reaching_a_provider_lists_title_page_and_content(
        client: Client, fake_openai: Any) -> None:
    await knowledge_base(client)
    await client.create("qa", table_type=ACTION, cols=[
        tpb.Column(id="question"),
        rag_column("answer", model="fake/gpt", k=3, citations=True,
                   search_query="${question} tides oceans")])
    fake_openai.reset()
    reply = await client.tables.AddRows(tpb.AddRowsRequest(
        table_type=ACTION, table_id="qa", data=[struct({"question": "What pulls the sea?"})]),
        metadata=client.md)
    cell = reply.rows[0].columns["answer"]
    assert cell.status == tpb.CELL_STATUS_DONE, cell.error
    assert cell.references.search_query == "What pulls the sea? tides oceans"
    assert len(cell.references.chunks) == 3
    chats = fake_openai.requests_to("/v1/chat/completions")
    prompt = chats[-1].json["messages"][-1]["content"]
    prompt = prompt if isinstance(prompt, str) else prompt[0]["text"]
    assert "<references>" in prompt and CITATION_INSTRUCTION in prompt
    assert prompt.rstrip().endswith("What pulls the sea?")
    assert "Title: Moon guide, page 2\nThe moon's gravity pulls the oceans into tides." in prompt
    first = cell.references.chunks[0]
    assert f"[@0] Title: {first.title}" in prompt
    assert parse_citations(cell.text)  # the fake answers like the built-in model


async def test_reranked_references_and_an_empty_knowledge_table(client: Client) -> None:
    await knowledge_base(client)
    await client.create("empty")
    await client.create("qa", table_type=ACTION, cols=[
        tpb.Column(id="question"),
        rag_column("ranked", k=1, reranker="rowforge/rerank"),
        rag_column("nothing", table_id="empty")])
    reply = await client.tables.AddRows(tpb.AddRowsRequest(
        table_type=ACTION, table_id="qa",
        data=[struct({"question": "how long should bread dough rise before baking"})]),
        metadata=client.md)
    ranked = reply.rows[0].columns["ranked"]
    assert [c.title for c in ranked.references.chunks] == ["Bread baking"]
    nothing = reply.rows[0].columns["nothing"]
    assert nothing.status == tpb.CELL_STATUS_DONE and list(nothing.references.chunks) == []
    assert "references" not in nothing.text.lower()


@pytest.mark.parametrize(("params", "code", "reason"), [
    ({"table_id": "missing"}, grpc.StatusCode.NOT_FOUND, "KNOWLEDGE_TABLE_NOT_FOUND"),
    ({"table_id": "kb", "reranker": "no/such"}, grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND"),
    ({"table_id": "kb", "reranker": "rowforge/chat"}, grpc.StatusCode.INVALID_ARGUMENT, ""),
])
async def test_rag_columns_naming_missing_tables_or_rerankers_are_refused(
        client: Client, params: dict[str, Any], code: grpc.StatusCode, reason: str) -> None:
    await client.create()
    got, _, fields = await fails(client.tables.CreateTable(tpb.CreateTableRequest(
        table_type=ACTION, table_id="qa",
        cols=[tpb.Column(id="question"), rag_column("answer", **params)]),
        metadata=client.md), code)
    if reason:
        assert got == reason
    assert any(f.startswith("cols[1].gen_config.llm.rag_params") for f in fields)
    await fails(client.tables.GetTable(tpb.GetTableRequest(table_type=ACTION, table_id="qa"),
                                       metadata=client.md), grpc.StatusCode.NOT_FOUND)


# -- the query: written by the column's model, or the prompt itself ------------------------

def chat_texts(request: Any) -> list[tuple[str, str]]:
    out = []
    for m in request.json["messages"]:
        content = m["content"]
        out.append((m["role"], content if isinstance(content, str) else content[0]["text"]))
    return out


async def test_the_columns_model_writes_the_query_that_reaches_the_search(
        client: Client, fake_openai: Any) -> None:
    await client.tables.CreateTable(tpb.CreateTableRequest(
        table_type=shared.KNOWLEDGE, table_id="kb", embedding_model="fake/embed"),
        metadata=client.md)
    await client.add([{"Title": t, "Text": x} for t, x in CORPUS])
    await client.create("qa", table_type=ACTION, cols=[
        tpb.Column(id="question"), rag_column("answer", model="fake/gpt", k=2)])
    fake_openai.reset()
    question = "Please explain why the ocean rises twice a day?"
    reply = await client.tables.AddRows(tpb.AddRowsRequest(
        table_type=ACTION, table_id="qa", data=[struct({"question": question})]),
        metadata=client.md)
    cell = reply.rows[0].columns["answer"]
    assert cell.status == tpb.CELL_STATUS_DONE, cell.error
    writing, answering = fake_openai.requests_to("/v1/chat/completions")
    (role, instruction), (_, request) = chat_texts(writing)
    assert role == "system" and "search quer" in instruction and question in request
    # The fake answers like the built-in model: the request's key terms.
    query = "ocean rises twice day"
    assert cell.references.search_query == query
    assert cell.references.query_model == "fake/gpt"
    assert cell.references.query_usage.completion_tokens == 4
    # That query, not the prompt, is what the vector side embedded ...
    embedded = [r.json["input"] for r in fake_openai.requests_to("/v1/embeddings")]
    assert embedded in ([[query]], [query])
    # ... and it found the tides document, which the answer quotes.
    assert cell.references.chunks[0].title == "Tides"
    prompt = chat_texts(answering)[-1][1]
    assert "<references>" in prompt and prompt.rstrip().endswith(question)
    assert "moon's gravity" in cell.text


async def test_generate_query_off_searches_with_the_prompt_and_calls_no_model(
        client: Client, fake_openai: Any) -> None:
    await knowledge_base(client)
    await client.create("qa", table_type=ACTION, cols=[
        tpb.Column(id="question"),
        rag_column("answer", model="fake/gpt", generate_query=False)])
    table = await client.tables.GetTable(tpb.GetTableRequest(table_type=ACTION, table_id="qa"),
                                         metadata=client.md)
    params = table.table.cols[-1].gen_config.llm.rag_params
    assert params.HasField("generate_query") and not params.generate_query
    fake_openai.reset()
    reply = await client.tables.AddRows(tpb.AddRowsRequest(
        table_type=ACTION, table_id="qa",
        data=[struct({"question": "<q>Why does the sea rise and fall?</q>"})]),
        metadata=client.md)
    refs = reply.rows[0].columns["answer"].references
    assert refs.search_query == "Why does the sea rise and fall?"
    assert refs.query_model == "" and not refs.HasField("query_usage")
    assert len(fake_openai.requests_to("/v1/chat/completions")) == 1  # the answer only


async def test_a_failing_query_writer_fails_only_its_cell(
        client: Client, fake_openai: Any) -> None:
    await knowledge_base(client)
    await client.create("qa", table_type=ACTION, cols=[
        tpb.Column(id="question"), rag_column("answer", model="fake/gpt"),
        tpb.Column(id="echo", dtype="str", gen_config=tpb.GenConfig(llm=tpb.LLMGenConfig(
            model="fake/gpt", prompt="Repeat: ${question}")))])
    fake_openai.reset()
    fake_openai.add_rule("You write search queries", 500)  # every query-writing call
    reply = await client.tables.AddRows(tpb.AddRowsRequest(
        table_type=ACTION, table_id="qa", data=[struct({"question": "What pulls the sea?"})]),
        metadata=client.md)
    answer, echo = reply.rows[0].columns["answer"], reply.rows[0].columns["echo"]
    assert answer.status == tpb.CELL_STATUS_ERROR and "fake/gpt" in answer.error
    assert echo.status == tpb.CELL_STATUS_DONE
    writes = [r for r in fake_openai.requests_to("/v1/chat/completions")
              if "You write search queries" in str(r.json)]
    assert len(writes) == 3  # retried like any transient provider error, then given up
    fake_openai.reset()


# -- deleting a knowledge table that RAG columns use -----------------------------------------

async def test_a_used_knowledge_table_can_be_deleted_and_its_rag_columns_dangle(
        client: Client, fake_openai: Any) -> None:
    await knowledge_base(client)
    await client.create("qa", table_type=ACTION, cols=[
        tpb.Column(id="question"), rag_column("answer", model="fake/gpt"), rag_column("plain"),
        tpb.Column(id="echo", dtype="str", gen_config=tpb.GenConfig(llm=tpb.LLMGenConfig(
            prompt="Repeat: ${question}")))])
    await client.tables.DeleteTable(tpb.DeleteTableRequest(
        table_type=shared.KNOWLEDGE, table_id="kb"), metadata=client.md)

    table = (await client.tables.GetTable(tpb.GetTableRequest(
        table_type=ACTION, table_id="qa"), metadata=client.md)).table
    assert [(d.column_id, d.table_id) for d in table.dangling_references] == [
        ("answer", "kb"), ("plain", "kb")]
    fake_openai.reset()
    reply = await client.tables.AddRows(tpb.AddRowsRequest(
        table_type=ACTION, table_id="qa", data=[struct({"question": "What pulls the sea?"})]),
        metadata=client.md)
    cells = reply.rows[0].columns
    for name in ("answer", "plain"):
        assert cells[name].status == tpb.CELL_STATUS_ERROR
        assert "knowledge table 'kb' does not exist" in cells[name].error
    assert cells["echo"].status == tpb.CELL_STATUS_DONE
    assert fake_openai.requests_to("/v1/chat/completions") == []  # failed before any call

    # The table's other columns still change; a column starting to use a missing table is
    # still refused.
    await client.tables.AddColumns(tpb.AddColumnsRequest(
        table_type=ACTION, table_id="qa", cols=[tpb.Column(id="note")]), metadata=client.md)
    await client.tables.UpdateGenConfig(tpb.UpdateGenConfigRequest(
        table_type=ACTION, table_id="qa", column_map={"answer": tpb.GenConfig(
            llm=tpb.LLMGenConfig(prompt="Answer: ${question}",
                                 rag_params=tpb.RAGParams(table_id="kb", k=1)))}),
        metadata=client.md)
    reason, _, fields = await fails(client.tables.UpdateGenConfig(tpb.UpdateGenConfigRequest(
        table_type=ACTION, table_id="qa", column_map={"echo": tpb.GenConfig(
            llm=tpb.LLMGenConfig(prompt="${question}",
                                 rag_params=tpb.RAGParams(table_id="kb", k=1)))}),
        metadata=client.md), grpc.StatusCode.NOT_FOUND)
    assert reason == "KNOWLEDGE_TABLE_NOT_FOUND" and "column_map[echo].gen_config.llm." \
        "rag_params.table_id" in fields

    # A knowledge table of that id again: the columns work again.
    await knowledge_base(client)
    table = (await client.tables.GetTable(tpb.GetTableRequest(
        table_type=ACTION, table_id="qa"), metadata=client.md)).table
    assert list(table.dangling_references) == []
    reply = await client.tables.AddRows(tpb.AddRowsRequest(
        table_type=ACTION, table_id="qa", data=[struct({"question": "What pulls the sea?"})]),
        metadata=client.md)
    for name in ("answer", "plain"):
        cell = reply.rows[0].columns[name]
        assert cell.status == tpb.CELL_STATUS_DONE and cell.references.chunks, cell.error
