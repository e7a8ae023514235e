"""The Python client against a real server: files (chunked upload, download, thumbnails),
knowledge (embed_file, hybrid_search, a RAG column), and direct model calls."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

import rowforge.clients.types as t
from rowforge.clients import AsyncRowForge, RowForge
from rowforge.clients import exceptions as ex
from tests.support.server import ServerProcess

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQ"
                       "GAhKmMIQAAAABJRU5ErkJggg==")


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[RowForge]:
    with RowForge(address=server.address) as c:
        yield c


def test_upload_and_download(client: RowForge, tmp_path: Path) -> None:
    source = tmp_path / "big.txt"
    source.write_bytes(b"".join(f"line {i}\n".encode() for i in range(300_000)))  # ~3 MB
    info = client.file.upload_file(source)
    assert info.size == source.stat().st_size
    assert info.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert client.file.get_file(info.uri).name == "big.txt"
    assert client.file.download_file(info.uri) == source.read_bytes()
    target = client.file.download_file(info.uri, tmp_path / "copy.txt")
    assert target.read_bytes() == source.read_bytes()
    assert client.file.download_file(info.uri, offset=5, length=4) == b"0\nli"
    assert info.uri in [f.uri for f in client.file.iter_files()]
    client.file.delete_file(info.uri)
    with pytest.raises(ex.NotFoundError):
        client.file.get_file(info.uri)
    with pytest.raises(ex.NotFoundError):
        client.file.download_file(info.uri, tmp_path / "gone.txt")
    assert not (tmp_path / "gone.txt").exists()


def test_images_and_thumbnails(client: RowForge) -> None:
    info = client.file.upload_file(PNG, name="pixel.png")
    assert info.kind == "image" and info.content_type == "image/png"
    assert client.file.get_thumbnail(info.uri, size=16).startswith(b"\x89PNG")
    with pytest.raises(ex.InvalidArgumentError):
        client.file.upload_file(b"not really a png", name="fake.png")


def test_embed_file_search_and_rag(client: RowForge, tmp_path: Path) -> None:
    doc = tmp_path / "handbook.txt"
    doc.write_text("The server listens on port 50051 by default; clients connect to that port "
                   "unless told otherwise.\n\n"
                   "Bananas are yellow fruit that grow in bunches on large tropical plants in "
                   "warm places.\n\n"
                   "Knowledge tables are searched with vectors and full text, then fused with "
                   "reciprocal rank fusion.\n")
    client.table.create_knowledge_table(t.KnowledgeTableSchemaCreate(id="kb_docs", cols=[]))
    progress: list[tuple[int, int]] = []
    embedded = client.table.embed_file(doc, "kb_docs", chunk_size=100, chunk_overlap=0,
                                       progress=lambda done, total: progress.append((done,
                                                                                      total)))
    assert embedded.row_count >= 2 and len(embedded.row_ids) == embedded.row_count
    assert embedded.uri.startswith("file://")
    hits = client.table.hybrid_search("kb_docs", "which port does the server listen on", k=2)
    assert 1 <= len(hits) <= 2 and "50051" in hits[0]["Text"]["value"]
    assert hits[0].score >= hits[-1].score
    client.table.create_action_table(t.ActionTableSchemaCreate(id="kb_qa", cols=[
        t.ColumnSchemaCreate(id="question"),
        t.ColumnSchemaCreate(id="answer", gen_config=t.LLMGenConfig(
            model="rowforge/chat", prompt="${question}",
            rag_params=t.RAGParams(table_id="kb_docs", k=1))),
    ]))
    out = client.table.add_table_rows("action", t.MultiRowAddRequest(
        table_id="kb_qa", data=[{"question": "default port of the server?"}], stream=False))
    refs = out.rows[0].columns["answer"].references
    assert refs is not None and "50051" in refs.chunks[0].text
    assert refs.search_query == "default port server" and refs.query_model == "rowforge/chat"
    assert refs.query_usage is not None and refs.query_usage.completion_tokens == 3
    with pytest.raises(ex.NotFoundError):
        client.table.hybrid_search("no_such_kb", "x")
    assert client.table.get_table("action", "kb_qa").dangling_references == []
    client.table.delete_table("knowledge", "kb_docs")
    qa = client.table.get_table("action", "kb_qa")
    assert [(d.column_id, d.table_id) for d in qa.dangling_references] == [("answer", "kb_docs")]
    assert qa.col("answer").gen_config.rag_params.generate_query is True


def test_model_calls(client: RowForge) -> None:
    assert "rowforge/chat" in client.model_ids(capabilities=["chat"])
    info = client.model_info(model="rowforge/embed")
    assert [m.id for m in info.data] == ["rowforge/embed"] and info.data[0].embedding_size > 0
    chat = client.generate_chat_completions(t.ChatRequest(
        messages=[t.ChatEntry.user("Hello")], max_tokens=20, stream=False))
    assert chat.text and chat.usage.total_tokens > 0 and chat.finish_reason in ("stop", "length")
    streamed = "".join(c.text for c in client.generate_chat_completions(t.ChatRequest(
        messages=[t.ChatEntry.user("Hello")], max_tokens=20)))
    assert streamed == chat.text  # the built-in model is deterministic

    class City(BaseModel):
        name: str

    parsed = client.generate_chat_completions(t.ChatRequest(
        messages=[t.ChatEntry.user("A city in France")], response_format=City, stream=False))
    assert isinstance(parsed.parsed["name"], str)
    emb = client.generate_embeddings(t.EmbeddingRequest(model="rowforge/embed",
                                                        input=["a", "b"]))
    assert [e.index for e in emb.data] == [0, 1] and len(emb.data[0].embedding) == 384
    ranked = client.rerank("capital of France", ["Bananas", "Paris is the capital"])
    assert ranked.results[0].index == 1


async def test_async_files_and_models(server: ServerProcess) -> None:
    async with AsyncRowForge(address=server.address) as client:
        info = await client.file.upload_file(b"hello async", name="a.txt")
        assert await client.file.download_file(info.uri) == b"hello async"
        chunks = [c async for c in client.file.iter_download(info.uri)]
        assert b"".join(chunks) == b"hello async"
        text = "".join([c.text async for c in client.generate_chat_completions(
            t.ChatRequest(messages=[t.ChatEntry.user("Hi")], max_tokens=10))])
        assert text
        await client.file.delete_file(info.uri)
