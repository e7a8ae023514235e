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
from tests.integration.test_knowledge_service import ACTION, CORPUS, Client, fails, struct

# The knowledge tests' server (with a remote reranker) and per-test project client.
kserver, channel, md, client = shared.kserver, shared.channel, shared.md, shared.client


def rag_column(name: str, *, model: str = "", k: int = 2, citations: bool = False,
               search_query: str = "", reranker: str = "", table_id: str = "kb") -> tpb.Column:
    return tpb.Column(id=name, dtype="str", gen_config=tpb.GenConfig(llm=tpb.LLMGenConfig(
        model=model, prompt="${question}", rag_params=tpb.RAGParams(
            table_id=table_id, k=k, inline_citations=citations, search_query=search_query,
            reranking_model=reranker))))


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
    assert refs.table_id == "kb" and refs.search_query == "Why does the sea rise and fall?"
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
