"""KnowledgeService and knowledge tables over a real server: rows embedded on AddRows and
re-embedded on UpdateRows, gone from search on DeleteRows; search quality on a labelled
corpus; filtered search against a brute-force oracle; reranking and its failure; EmbedFile;
every bad input with its status and details, and nothing written by a refused file."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import json_format, struct_pb2

from rowforge.v1 import (
    common_pb2,
    file_service_pb2,
    file_service_pb2_grpc,
    knowledge_service_pb2_grpc,
    model_service_pb2,
    model_service_pb2_grpc,
    table_service_pb2_grpc,
)
from rowforge.v1 import knowledge_service_pb2 as kpb
from rowforge.v1 import table_service_pb2 as tpb
from tests.conftest import FAKE_KEY_ENV, fake_models
from tests.support.server import ServerProcess
from tests.support.status import fails

ACTION, KNOWLEDGE = common_pb2.TABLE_TYPE_ACTION, common_pb2.TABLE_TYPE_KNOWLEDGE
Metadata = tuple[tuple[str, str], ...]

CORPUS = [
    ("Photosynthesis", "Green plants use sunlight to turn water and carbon dioxide into sugar "
                       "and oxygen inside their leaves."),
    ("Volcanoes", "A volcano erupts when molten rock, called magma, rises through the crust and "
                  "bursts out as lava and ash."),
    ("Vaccines", "Vaccines train the immune system to recognise a virus so the body can fight "
                 "the infection later."),
    ("Tides", "Ocean tides rise and fall twice a day because the moon's gravity pulls on the "
              "seas."),
    ("Inflation", "Inflation means prices keep rising, so each unit of money buys fewer goods "
                  "over time."),
    ("Bread baking", "To bake bread, knead flour, water, yeast and salt into a dough, let it "
                     "rise, then bake it in a hot oven."),
    ("Black holes", "A black hole is a region of space where gravity is so strong that not "
                    "even light can escape."),
    ("Bees", "Honey bees collect nectar from flowers and pollinate crops while they forage."),
    ("Marathon training", "Runners preparing for a marathon build weekly mileage slowly and add "
                          "one long run each week."),
    ("Recycling", "Recycling sorts used paper, glass and plastic so factories can turn the "
                  "waste into new products."),
    ("Earthquakes", "Earthquakes happen when tectonic plates slip along a fault and release "
                    "energy as seismic waves."),
    ("Coffee", "Coffee beans are roasted, ground and brewed with hot water to make a drink "
               "rich in caffeine."),
]
# Paraphrases: other words than the document's, sharing only some stems.
PARAPHRASES = [
    ("how do plants make food from light", "Photosynthesis"),
    ("what happens when a volcano erupts with lava", "Volcanoes"),
    ("how does a vaccination protect against viruses", "Vaccines"),
    ("why the sea level rises and falls with the moon", "Tides"),
    ("why do prices rise and money lose value", "Inflation"),
    ("steps for baking a loaf with yeast", "Bread baking"),
    ("can light escape the gravity of a black hole", "Black holes"),
    ("insects that pollinate flowers and make honey", "Bees"),
    ("how to train for running a marathon", "Marathon training"),
    ("turning plastic and glass waste into new things", "Recycling"),
    ("what causes tectonic earthquakes and seismic shaking", "Earthquakes"),
    ("brewing roasted beans for a caffeinated drink", "Coffee"),
]


# -- fixtures and helpers (also used by the other knowledge test modules) --------------------

def knowledge_env(fake: Any) -> dict[str, str]:
    """Server env with the fake models plus a remote reranker on the fake server."""
    models = [*fake_models(fake),
              {"id": "fake/rerank", "route": "cohere/rerank-english-v3.0",
               "api_base": fake.base_url.removesuffix("/v1"), "api_key_env": FAKE_KEY_ENV,
               "capabilities": ["rerank"]}]
    return {"ROWFORGE_MODELS": json.dumps(models), FAKE_KEY_ENV: "sk-fake"}


@pytest.fixture(scope="module")
def kserver(tmp_path_factory: pytest.TempPathFactory, fake_openai: Any) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("knowledge"), env=knowledge_env(fake_openai))
    with proc.start():
        yield proc


@pytest.fixture
async def channel(kserver: ServerProcess) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(kserver.address) as ch:
        yield ch


@pytest.fixture
def md() -> Metadata:
    """A fresh project per test (auth is off: x-project-id selects it)."""
    return (("x-project-id", f"kt-{uuid.uuid4().hex[:12]}"),)


class Client:
    """The stubs a knowledge test uses, bound to one project."""

    def __init__(self, channel: grpc.aio.Channel, md: Metadata) -> None:
        self.md = md
        self.tables = table_service_pb2_grpc.TableServiceStub(channel)
        self.knowledge = knowledge_service_pb2_grpc.KnowledgeServiceStub(channel)
        self.files = file_service_pb2_grpc.FileServiceStub(channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(channel)

    async def create(self, table_id: str = "kb", cols: list[tpb.Column] | None = None,
                     table_type: int = KNOWLEDGE) -> tpb.Table:
        return (await self.tables.CreateTable(tpb.CreateTableRequest(
            table_type=table_type, table_id=table_id, cols=cols or []), metadata=self.md)).table

    async def add(self, rows: list[dict[str, Any]], table_id: str = "kb") -> list[str]:
        reply = await self.tables.AddRows(tpb.AddRowsRequest(
            table_type=KNOWLEDGE, table_id=table_id, data=[struct(r) for r in rows]),
            metadata=self.md)
        for row in reply.rows:
            for name, cell in row.columns.items():
                assert cell.status == tpb.CELL_STATUS_DONE, (name, cell.error)
        return [r.row_id for r in reply.rows]

    async def search(self, query: str, table_id: str = "kb", **kw: Any) -> kpb.HybridSearchResponse:
        return await self.knowledge.HybridSearch(kpb.HybridSearchRequest(
            table_id=table_id, query=query, **kw), metadata=self.md)

    async def rows(self, table_id: str = "kb", **kw: Any) -> list[dict[str, Any]]:
        reply = await self.tables.ListRows(tpb.ListRowsRequest(
            table_type=KNOWLEDGE, table_id=table_id, limit=100, **kw), metadata=self.md)
        return [{"ID": r.id, **{k: json_format.MessageToDict(c.value) if c.HasField("value")
                                else None for k, c in r.cells.items()}} for r in reply.items]

    async def embed(self, texts: list[str]) -> np.ndarray:
        reply = await self.models.Embed(model_service_pb2.EmbedRequest(
            model="rowforge/embed", input=texts), metadata=self.md)
        return np.array([list(e.embedding) for e in reply.data], dtype=np.float32)

    async def upload(self, name: str, data: bytes, md: Metadata | None = None) -> str:
        async def parts() -> AsyncIterator[file_service_pb2.UploadFileRequest]:
            yield file_service_pb2.UploadFileRequest(
                metadata=file_service_pb2.FileMetadata(name=name))
            if data:
                yield file_service_pb2.UploadFileRequest(chunk=data)

        return (await self.files.UploadFile(parts(), metadata=md or self.md)).file.uri

    async def embed_file(self, uri: str, table_id: str = "kb",
                         **kw: Any) -> list[kpb.EmbedFileResponse]:
        return [e async for e in self.knowledge.EmbedFile(kpb.EmbedFileRequest(
            table_id=table_id, file_uri=uri, **kw), metadata=self.md)]


@pytest.fixture
def client(channel: grpc.aio.Channel, md: Metadata) -> Client:
    return Client(channel, md)


def struct(values: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


def titles(reply: kpb.HybridSearchResponse) -> list[str]:
    return [r.row.cells["Title"].value.string_value for r in reply.items]


# -- rows: embed, re-embed, delete ----------------------------------------------------------

async def test_rows_are_embedded_searchable_reembedded_and_removed(client: Client) -> None:
    await client.create()
    ids = await client.add([{"Title": t, "Text": x} for t, x in CORPUS[:4]])
    rows = {r["ID"]: r for r in await client.rows(columns=["Title", "Title Embed", "Text Embed"])}
    expected = await client.embed([CORPUS[0][0], CORPUS[0][1]])
    assert np.allclose(rows[ids[0]]["Title Embed"], expected[0], atol=1e-6)
    assert np.allclose(rows[ids[0]]["Text Embed"], expected[1], atol=1e-6)

    reply = await client.search("plants turning sunlight into sugar")
    assert reply.items[0].row.id == ids[0]
    assert reply.items[0].vector_rank == 1 and reply.items[0].lexical_rank == 1
    assert "Text Embed" not in reply.items[0].row.cells  # vectors only when asked for

    new_text = "Croissants and baguettes are baked fresh every morning in Paris bakeries."
    await client.tables.UpdateRows(tpb.UpdateRowsRequest(
        table_type=KNOWLEDGE, table_id="kb", data={ids[0]: struct({"Text": new_text})}),
        metadata=client.md)
    rows = {r["ID"]: r for r in await client.rows(columns=["Text Embed", "Title Embed"])}
    assert np.allclose(rows[ids[0]]["Text Embed"], (await client.embed([new_text]))[0],
                       atol=1e-6)
    assert np.allclose(rows[ids[0]]["Title Embed"], expected[0], atol=1e-6)  # title kept
    reply = await client.search("fresh croissants from the bakery")
    assert reply.items[0].row.id == ids[0] and reply.items[0].lexical_rank == 1
    old = await client.search("carbon dioxide oxygen leaves")
    assert all(item.lexical_rank == 0 for item in old.items if item.row.id == ids[0])

    await client.tables.DeleteRows(tpb.DeleteRowsRequest(
        table_type=KNOWLEDGE, table_id="kb", row_ids=[ids[0], ids[1]]), metadata=client.md)
    for query in ("fresh croissants from the bakery", "volcano lava magma", "Photosynthesis"):
        found = {item.row.id for item in (await client.search(query, k=10)).items}
        assert found == set(ids[2:]) or (found <= set(ids[2:]) and found)


async def test_paraphrased_queries_find_the_right_document_first(client: Client) -> None:
    await client.create()
    await client.add([{"Title": t, "Text": x} for t, x in CORPUS])
    for query, expected in PARAPHRASES:
        reply = await client.search(query, k=3)
        assert titles(reply)[0] == expected, (query, titles(reply))


async def test_filtered_search_matches_a_brute_force_oracle(client: Client) -> None:
    await client.create(cols=[tpb.Column(id="group", dtype="int")])
    rng = np.random.default_rng(3)
    words = " ".join(t for t, _ in CORPUS).lower().split()
    rows = []
    for i in range(60):
        picked = rng.choice(len(CORPUS), 2, replace=False)
        rows.append({"Title": f"Note {i} on {CORPUS[picked[0]][0]}",
                     "Text": f"{CORPUS[picked[1]][1]} {' '.join(rng.choice(words, 4))}",
                     "group": int(i % 4)})
    await client.add(rows[:30])
    await client.add(rows[30:])
    query = "volcano lava and earthquakes"
    where = '"group" = 2'
    reply = await client.search(query, k=5, where=where)
    stored = await client.rows(columns=["Title", "Text", "group", "Title Embed", "Text Embed"],
                               where=where)
    assert len(stored) == 15
    q = (await client.embed([query]))[0]

    def distance(row: dict[str, Any]) -> float:
        return min(float(1 - np.asarray(row[c], np.float32) @ q)
                   for c in ("Title Embed", "Text Embed"))

    oracle = [r["ID"] for r in sorted(stored, key=distance)]
    # k=5 fuses 20 candidates per side: all 15 rows of the filter, in the oracle's order.
    by_vector = sorted((i for i in reply.items if i.vector_rank), key=lambda i: i.vector_rank)
    assert [i.row.id for i in by_vector] == oracle[:len(by_vector)]
    assert [i.vector_rank for i in by_vector] == [oracle.index(i.row.id) + 1 for i in by_vector]
    assert len(reply.items) == 5
    allowed = {r["ID"] for r in stored}
    for item in reply.items:
        assert item.row.id in allowed
        assert item.row.cells["group"].value.number_value == 2
        expected = sum(1 / (60 + r) for r in (item.vector_rank, item.lexical_rank) if r)
        assert item.score == pytest.approx(expected)
        if item.lexical_rank:
            text = (item.row.cells["Title"].value.string_value + " "
                    + item.row.cells["Text"].value.string_value).lower()
            assert any(w in text for w in ("volcano", "lava", "earthquakes"))


async def test_reranking_and_a_failing_reranker(client: Client) -> None:
    await client.create()
    await client.add([{"Title": t, "Text": x} for t, x in CORPUS])
    ranked = await client.search("how long should bread rise before baking", k=3,
                                 reranking_model="rowforge/rerank")
    assert ranked.reranked and ranked.rerank_error == ""
    assert titles(ranked)[0] == "Bread baking"
    remote = await client.search("honey bees and flowers", k=2, reranking_model="fake/rerank")
    assert remote.reranked and titles(remote)[0] == "Bees"
    # The fake provider answers 500 to a query carrying this marker: the fused order stands.
    query = "honey bees and flowers [[fault:500]]"
    fused = await client.search(query, k=3)
    failed = await client.search(query, k=3, reranking_model="fake/rerank")
    assert not failed.reranked and "fake/rerank" in failed.rerank_error
    assert titles(failed) == titles(fused)
    assert [i.score for i in failed.items] == pytest.approx([i.score for i in fused.items])


async def test_columns_and_k(client: Client) -> None:
    await client.create(cols=[tpb.Column(id="source")])
    await client.add([{"Title": t, "Text": x, "source": "wiki"} for t, x in CORPUS])
    reply = await client.search("gravity", k=2, columns=["Title", "source"])
    assert len(reply.items) == 2
    assert all(set(i.row.cells) == {"Title", "source"} for i in reply.items)
    assert len((await client.search("the", k=0)).items) == 10
    assert len((await client.search("the", k=1000)).items) == len(CORPUS)


# -- EmbedFile ------------------------------------------------------------------------------

def event_kinds(events: list[kpb.EmbedFileResponse]) -> list[str]:
    return [e.WhichOneof("event") for e in events]


async def test_embed_file_streams_progress_and_writes_searchable_rows(client: Client) -> None:
    await client.create()
    paragraphs = [f"Section {i}. " + CORPUS[i % len(CORPUS)][1] * 3 for i in range(12)]
    text = "# Field guide\n\n" + "\n\n".join(paragraphs)
    uri = await client.upload("guide.md", text.encode())
    events = await client.embed_file(uri, chunk_size=400, chunk_overlap=50)
    kinds = event_kinds(events)
    assert kinds[0] == "started" and kinds[-1] == "completed"
    assert set(kinds[1:-1]) == {"progress"}
    started, completed = events[0].started, events[-1].completed
    assert started.file_uri == uri and started.page_count == 0
    count = started.chunk_count
    done = [e.progress.chunks_done for e in events[1:-1]]
    assert done == sorted(done) and done[-1] == count
    assert all(e.progress.chunk_count == count for e in events[1:-1])
    assert completed.row_count == count == len(completed.row_ids) > 3
    rows = await client.rows(columns=["Title", "Text", "File ID", "Page"])
    assert [r["ID"] for r in rows] == list(completed.row_ids)
    assert all(r["Title"] == "Field guide" and r["File ID"] == uri and r["Page"] is None
               for r in rows)
    assert all(len(r["Text"]) <= 400 for r in rows)
    reply = await client.search("magma bursts out as lava", k=3)
    assert "volcano erupts" in reply.items[0].row.cells["Text"].value.string_value
    assert reply.items[0].row.cells["File ID"].value.string_value == uri


async def test_embed_file_keeps_records_whole_and_pages(client: Client) -> None:
    await client.create()
    csv = "name,city,notes\n" + "\n".join(
        f"person {i},city {i},{'likes long walks ' * 80}" for i in range(3))
    uri = await client.upload("people.csv", csv.encode())
    events = await client.embed_file(uri, chunk_size=200)
    assert events[0].started.chunk_count == 3  # one record per chunk, longer than 200
    rows = await client.rows(columns=["Text"])
    assert len(rows) == 3 and all(len(r["Text"]) > 200 for r in rows)
    assert rows[1]["Text"].startswith("name: person 1")

    from tests.unit.test_parsing import make_pdf

    pdf = make_pdf(["Tectonic plates slip along a fault.", "Honey bees pollinate crops."],
                   title="Nature notes")
    uri = await client.upload("nature.pdf", pdf)
    events = await client.embed_file(uri)
    assert events[0].started.page_count == 2 and events[0].started.chunk_count == 2
    rows = {r["Page"]: r for r in await client.rows(columns=["Title", "Text", "Page"],
                                                     where=f"\"File ID\" = '{uri}'")}
    assert set(rows) == {1, 2} and rows[2]["Title"] == "Nature notes"
    assert "bees" in rows[2]["Text"]
    reply = await client.search("bees pollinating crops", k=1, where=f"\"File ID\" = '{uri}'")
    assert reply.items[0].row.cells["Page"].value.number_value == 2


async def test_refused_files_write_nothing(client: Client, channel: grpc.aio.Channel) -> None:
    await client.create()
    await client.create("act", table_type=ACTION, cols=[tpb.Column(id="x")])
    good = await client.upload("good.txt", b"Some useful text about volcanoes.")
    cases = [
        # (FileService refuses zero-byte uploads: "empty" is blank or header-only here.)
        (await client.upload("blank.txt", b"   \n\n  "), {}, "EMPTY_DOCUMENT"),
        (await client.upload("header.csv", b"name,city\n"), {}, "EMPTY_DOCUMENT"),
        # (FileService refuses what does not match its type, e.g. invalid JSON; these pass
        # its sniffing and fail to parse.)
        (await client.upload("broken.jsonl", b'{"a": 1}\n{"b": \n'), {}, "CORRUPT_FILE"),
        (await client.upload("broken.xml", b"<a><b>text</a>"), {}, "CORRUPT_FILE"),
        (await client.upload("broken.pdf", b"%PDF-1.4\n garbage"), {}, "CORRUPT_FILE"),
        (await client.upload("pixel.png", bytes.fromhex(
            "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
            "0000000d49444154789c6300010000000500010d0a2db40000000049454e44ae426082")),
         {}, "UNSUPPORTED_FILE_TYPE"),
        (good, {"chunk_size": 50}, "INVALID_ARGUMENT"),
        (good, {"chunk_size": 300, "chunk_overlap": 300}, "INVALID_ARGUMENT"),
        (good, {"chunk_overlap": -1}, "INVALID_ARGUMENT"),
    ]
    for uri, kw, reason in cases:
        got, _, _ = await fails(client.embed_file(uri, **kw), grpc.StatusCode.INVALID_ARGUMENT)
        assert got == reason, (uri, kw)
    _, _, fields = await fails(client.embed_file(good, chunk_size=50),
                               grpc.StatusCode.INVALID_ARGUMENT)
    assert "chunk_size" in fields
    other = (("x-project-id", f"other-{uuid.uuid4().hex[:8]}"),)
    foreign = await client.upload("theirs.txt", b"Someone else's text.", md=other)
    reason, _, _ = await fails(client.embed_file(foreign), grpc.StatusCode.NOT_FOUND)
    assert reason == "FILE_NOT_FOUND"
    await fails(client.embed_file("not a uri"), grpc.StatusCode.INVALID_ARGUMENT)
    await fails(client.embed_file(""), grpc.StatusCode.INVALID_ARGUMENT)
    await fails(client.embed_file(good, table_id="nope"), grpc.StatusCode.NOT_FOUND)
    await fails(client.embed_file(good, table_id="act"), grpc.StatusCode.NOT_FOUND)
    await fails(client.embed_file(good, table_id=""), grpc.StatusCode.INVALID_ARGUMENT)
    assert await client.rows() == []
    assert (await client.embed_file(good))[-1].completed.row_count == 1  # the file was fine


# -- HybridSearch refusals ------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "code", "field"), [
    ({"table_id": ""}, grpc.StatusCode.INVALID_ARGUMENT, "table_id"),
    ({"query": ""}, grpc.StatusCode.INVALID_ARGUMENT, "query"),
    ({"k": -1}, grpc.StatusCode.INVALID_ARGUMENT, "k"),
    ({"k": 1001}, grpc.StatusCode.INVALID_ARGUMENT, "k"),
    ({"where": '"nope" = 1'}, grpc.StatusCode.INVALID_ARGUMENT, "where"),
    ({"where": "Title = 'a'; DROP TABLE x"}, grpc.StatusCode.INVALID_ARGUMENT, "where"),
    ({"columns": ["nope"]}, grpc.StatusCode.INVALID_ARGUMENT, "columns[0]"),
    ({"reranking_model": "no/such-model"}, grpc.StatusCode.NOT_FOUND, "reranking_model"),
    ({"reranking_model": "rowforge/embed"}, grpc.StatusCode.INVALID_ARGUMENT,
     "reranking_model"),
])
async def test_search_refusals(client: Client, kwargs: dict[str, Any], code: grpc.StatusCode,
                               field: str) -> None:
    await client.create()
    await client.add([{"Title": "a", "Text": "b"}])
    request = {"table_id": "kb", "query": "volcano", **kwargs}
    _, _, fields = await fails(client.knowledge.HybridSearch(
        kpb.HybridSearchRequest(**request), metadata=client.md), code)
    assert field in fields


async def test_search_of_a_missing_or_wrong_type_table(client: Client) -> None:
    await client.create("act", table_type=ACTION, cols=[tpb.Column(id="x")])
    reason, meta, _ = await fails(client.search("x", table_id="nope"), grpc.StatusCode.NOT_FOUND)
    assert reason == "TABLE_NOT_FOUND" and meta["tableId"] == "nope"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.search("x", table_id="act")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "action table 'act' exists" in (err.value.details() or "")
    # Another project's knowledge table is not found either.
    await client.create("mine")
    other = Client.__new__(Client)
    other.__dict__.update(client.__dict__, md=(("x-project-id", "someone-else"),))
    await fails(other.search("x", table_id="mine"), grpc.StatusCode.NOT_FOUND)


# -- the BM25 index's text analyzer, per table -----------------------------------------------

async def test_text_analyzer_per_table(client: Client) -> None:
    default = await client.create("kb")
    assert default.text_analyzer == "en_stem"
    simple = (await client.tables.CreateTable(tpb.CreateTableRequest(
        table_type=KNOWLEDGE, table_id="kb_simple", text_analyzer="simple"),
        metadata=client.md)).table
    assert simple.text_analyzer == "simple"
    got = await client.tables.GetTable(tpb.GetTableRequest(
        table_type=KNOWLEDGE, table_id="kb_simple"), metadata=client.md)
    assert got.table.text_analyzer == "simple"
    rows = [{"Title": "Shoes", "Text": "running shoes for trails"},
            {"Title": "Capital", "Text": "東京は日本の首都です"}]
    await client.add(rows, "kb")
    await client.add(rows, "kb_simple")

    def lexical(reply: kpb.HybridSearchResponse) -> list[str]:
        hits = sorted((r for r in reply.items if r.lexical_rank), key=lambda r: r.lexical_rank)
        return [r.row.cells["Title"].value.string_value for r in hits]

    assert lexical(await client.search("runs", "kb")) == ["Shoes"]  # stemmed
    assert lexical(await client.search("runs", "kb_simple")) == []  # not stemmed
    assert lexical(await client.search("首都", "kb")) == ["Capital"]
    assert lexical(await client.search("首都", "kb_simple")) == ["Capital"]
    # Refused: an unknown analyzer, an analyzer for a table without a BM25 index.
    for table_type, analyzer in ((KNOWLEDGE, "klingon_stem"), (ACTION, "simple")):
        reason, _, fields = await fails(client.tables.CreateTable(tpb.CreateTableRequest(
            table_type=table_type, table_id="bad", text_analyzer=analyzer,
            cols=[tpb.Column(id="x")] if table_type == ACTION else []), metadata=client.md),
            grpc.StatusCode.INVALID_ARGUMENT)
        assert set(fields) == {"text_analyzer"} and reason
