"""Knowledge tables: rowforge hybrid search and ingest vs raw hnswlib, chromadb and lancedb.

One run, same data for everyone. Data: ``--n`` chunks (default 50,000) of synthetic text
(~100 Zipf-distributed words, English stopwords the most frequent ones) with 384-d low-rank
vectors (``bench_ann.make_data``: a random 32-d latent times a projection, plus noise; real
sentence embeddings have such structure, uniform random vectors do not); ``--queries``
held-out queries: a vector of the same distribution and 3 words taken from a random chunk.
Index parameters everywhere: cosine, M=16, ef_construction=200, ef=128 (what rowforge
searches with: ef=64, the issue's reference, gives recall@10 ~0.91 on this data; raw hnswlib
is measured at both).

Measured:

* raw hnswlib: ``add_items`` rate (all cores) and ``knn_query`` p50, the baselines;
* rowforge, in-process (SQLite, the server's own components): ingest of pre-embedded chunks in
  batches of 1,000 through the table store (rows, change feed), until every row is
  acknowledged, until it is searchable (exact vector delta, BM25 committed), and until the HNSW
  index holds them all; hybrid search p50/p99 (query embedding, BM25 and vector sides, RRF, row
  reads); each side alone; recall@10 of the vector side against exact search; exactness of the
  BM25 side against a brute-force BM25 over the same tokens (``tests/support/bm25_oracle.py``);
  BM25 on queries of common words only; the ANN glue's cost over a raw ``knn_query``; RRF;
  memory (RSS growth) and on-disk size; last, hybrid search p50/p99 while a further 10% of
  rows (at least 5,000) are being built into the graphs (users search while they ingest);
* rowforge over gRPC: the same searches from a client in another process;
* chromadb and lancedb (embedded, in this process; skipped with a message when not
  installed): ingest rate (lancedb: rows, HNSW and full-text index), vector p50 and recall,
  chromadb's text filter (``$contains``, not ranked) and lancedb's hybrid search (BM25 +
  vector + RRF).

The query embedding is a lookup of the query's precomputed vector for every system (the
server's built-in embedder is patched in this process to return it), so latencies compare
search work only; the built-in embedder's own cost per query is printed alongside.

Scale mode (``--scale``): each size of ``--sizes`` (default 50,000, 200,000 and 1,000,000) runs
in a fresh child process of this script (so one size's memory is gone before the next), peers
up to ``--peer-max`` chunks (default 200,000), fewer queries at 1M (``--big-queries``); a
summary table follows (markdown, as in the README).

Run (peers installed in a venv of their own, never needed by the tests)::

    python3 -m venv .venv-bench && .venv-bench/bin/pip install -e ".[server,bench]"
    .venv-bench/bin/python bench/bench_knowledge.py [--n 50000] [--queries 300]
    .venv-bench/bin/python bench/bench_knowledge.py --scale          # 50k, 200k, 1M

(``.venv/bin/python`` runs it too, skipping the peers it cannot import.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np
from _machine import print_machine
from bench_ann import exact_topk, make_data, percentile
from bench_rrf import dict_rrf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support

os.environ.setdefault("LANCEDB_LOG", "error")  # lancedb logs a deprecation warning per query

DIM = 384
K = 10
#: Graph parameters for every system; ef as rowforge searches (64: the issue's reference).
M, EF_CONSTRUCTION, EF, EF_REFERENCE = 16, 200, 128, 64
BATCH = 1000
#: Rows added at the end to time searches while the graphs build (or 10% of --n).
BUILD_EXTRA_MIN = 5000
VOCABULARY = 30_000
WORDS_PER_CHUNK = 100


# -- data -----------------------------------------------------------------------------------

def make_texts(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Titles and chunk texts: Zipf words over stopwords + pronounceable pseudo-words."""
    from rowforge.server.providers.text import STOPWORDS

    rng = np.random.default_rng(seed)
    letters = random.Random(seed)
    consonants, vowels = "bcdfghjklmnpqrstvwxz", "aeiou"
    words = sorted(STOPWORDS)
    seen = set(words)
    while len(words) < VOCABULARY:
        word = "".join(letters.choice(consonants if i % 2 == 0 else vowels)
                       for i in range(letters.randint(4, 9)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    weights = 1.0 / np.arange(1, len(words) + 1) ** 1.07
    weights /= weights.sum()
    vocab = np.array(words)
    draws = rng.choice(len(words), size=(n, WORDS_PER_CHUNK), p=weights)
    texts = [" ".join(vocab[row]) for row in draws]
    titles = [f"Document {i // 20}: {' '.join(vocab[rng.integers(200, 5000, 3)])}"
              for i in range(n)]
    return titles, texts


def make_queries(texts: list[str], n_queries: int, seed: int = 1) -> list[str]:
    """Distinct 3-word queries, each taken from a random chunk (stopwords excluded)."""
    from rowforge.server.providers.text import STOPWORDS

    rng = random.Random(seed)
    queries: list[str] = []
    seen: set[str] = set()
    while len(queries) < n_queries:
        words = [w for w in rng.choice(texts).split() if w not in STOPWORDS]
        query = " ".join(rng.sample(words, 3))
        if query not in seen:
            seen.add(query)
            queries.append(query)
    return queries


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    hits = sum(len(set(f) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def summary(samples: list[float]) -> tuple[float, float]:
    return percentile(samples, 50) * 1e3, percentile(samples, 99) * 1e3


def install_query_vectors(vectors: dict[str, np.ndarray]) -> Callable[[list[str]], Any]:
    """Make the built-in embedder return the precomputed vector of each bench query; returns
    the original function."""
    from rowforge.server.providers import hashing_embedder

    original = hashing_embedder.embed_texts

    def embed_texts(texts: list[str]) -> np.ndarray:
        if texts and all(t in vectors for t in texts):
            return np.stack([vectors[t] for t in texts])
        return original(texts)

    hashing_embedder.embed_texts = embed_texts
    return original


# -- baselines ------------------------------------------------------------------------------

def run_raw(corpus: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    n = len(corpus)
    raw = hnswlib.Index(space="cosine", dim=DIM)
    raw.init_index(max_elements=n, M=M, ef_construction=EF_CONSTRUCTION)
    start = time.perf_counter()
    raw.add_items(corpus, np.arange(n))
    build = time.perf_counter() - start
    out: dict[str, Any] = {"index": raw, "ingest": n / build}
    for ef in (EF_REFERENCE, EF):
        raw.set_ef(ef)
        times, found = [], []
        for q in queries:
            start = time.perf_counter()
            labels, _ = raw.knn_query(q, k=K)
            times.append(time.perf_counter() - start)
            found.append(labels[0].tolist())
        out[ef] = {"p50": summary(times)[0], "recall": recall(found, truth)}
    return out  # left at ef=EF for the glue comparison


# -- rowforge -------------------------------------------------------------------------------

def grpc_client(address: str, queries: list[str], rounds: int, out: Any) -> None:
    """Child process: HybridSearch each query ``rounds`` times, then as many Health/Check
    calls (the gRPC round trip with no work behind it: the floor of any call); send back
    both latencies."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from rowforge.v1 import knowledge_service_pb2 as kpb
    from rowforge.v1 import knowledge_service_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = knowledge_service_pb2_grpc.KnowledgeServiceStub(channel)
        # typed values only (legacy_values=False), as rowforge's own clients ask
        for q in queries[:20]:  # warm up the connection
            stub.HybridSearch(kpb.HybridSearchRequest(table_id="bench", query=q, k=K,
                                                      legacy_values=False))
        times = []
        for _ in range(rounds):
            for q in queries:
                start = time.perf_counter()
                stub.HybridSearch(kpb.HybridSearchRequest(table_id="bench", query=q, k=K,
                                                          legacy_values=False))
                times.append(time.perf_counter() - start)
        health = health_pb2_grpc.HealthStub(channel)
        floor = []
        for _ in range(len(times)):
            start = time.perf_counter()
            health.Check(health_pb2.HealthCheckRequest())
            floor.append(time.perf_counter() - start)
    out.send((times, floor))
    out.close()


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def stopword_queries(n: int, seed: int = 2) -> list[str]:
    """Queries of 3 common words only (the BM25 side must still rank rows)."""
    from rowforge.server.providers.text import STOPWORDS

    rng = random.Random(seed)
    common = sorted(STOPWORDS)[:60]
    return [" ".join(rng.sample(common, 3)) for _ in range(n)]


def bm25_exactness(index: Any, titles: list[str], texts: list[str], query_texts: list[str],
                   row_of: dict[str, int]) -> tuple[float, float]:
    """Share of queries whose BM25 top-10 is a correct top-10 (scores equal the brute-force
    BM25's, order free only among equal scores), and share with identical id lists."""
    from tests.support.bm25_oracle import BM25Oracle, same_ranking

    lexical = index.lexical
    vocabulary = {t for q in query_texts for t in lexical.terms(q)}
    analyze = lexical.analyzer.analyze
    oracle = BM25Oracle(((str(i), analyze(titles[i]) + analyze(texts[i]))
                         for i in range(len(texts))), vocabulary)
    exact = identical = 0
    for q in query_texts:
        terms = lexical.terms(q)
        found = [(str(row_of[r]), s) for r, s in index.search_text(q, K)]
        exact += same_ranking(found, oracle, terms, K)
        identical += [d for d, _ in found] == [d for d, _ in oracle.top(terms, K)]
    return exact / len(query_texts), identical / len(query_texts)


async def run_rowforge(args: argparse.Namespace, corpus: np.ndarray, queries: np.ndarray,
                       titles: list[str], texts: list[str], query_texts: list[str],
                       truth: np.ndarray, raw: Any) -> dict[str, Any]:
    from rowforge.fastcore import rrf
    from rowforge.server.app import App, Server
    from rowforge.server.config import Settings
    from rowforge.server.knowledge.search import _nearest, candidates
    from rowforge.server.providers import embed
    from rowforge.server.tables import row_reads

    data_dir = Path(tempfile.mkdtemp(prefix="bench-knowledge-"))
    blobs = [v.astype("<f4").tobytes() for v in corpus]
    rss_before = rss_bytes()
    app = App(Settings(data_dir=data_dir, port=0, log_level="WARNING"))
    server = Server(app)
    port = await server.start()
    out: dict[str, Any] = {}
    try:
        tables, knowledge = app.tables, app.knowledge  # type: ignore[attr-defined]
        schema = await tables.create_table("default", "knowledge", "bench", [])
        await knowledge.search_side.indexes.get(schema)  # open (empty): ingest goes through catch-up
        n = len(corpus)
        start = time.perf_counter()
        for s in range(0, n, BATCH):
            await tables.insert_rows(schema, [
                {"Title": titles[i], "Text": texts[i], "Text Embed": blobs[i],
                 "Title Embed": None} for i in range(s, min(n, s + BATCH))])
        acknowledged = time.perf_counter() - start
        del blobs
        index = await knowledge.search_side.indexes.get(schema)
        await index.refresh(0.0)
        searchable = time.perf_counter() - start
        last = index.search(corpus[-1], 1)
        assert last and last[0][1] < 1e-4, "the last row is not searchable"
        assert len(index.lexical) == n, "the BM25 index misses rows"
        await index.wait_built()
        built = time.perf_counter() - start
        out.update(acked=n / acknowledged, searchable=n / searchable, built=n / built,
                   built_s=built)

        # Hybrid search in-process (warm up, then rounds).
        for q in query_texts[:20]:
            await knowledge.search(schema, q, k=K)
        times = []
        lexical_empty = 0
        for _ in range(args.rounds):
            for q in query_texts:
                begin = time.perf_counter()
                outcome = await knowledge.search(schema, q, k=K)
                times.append(time.perf_counter() - begin)
                lexical_empty += not any(h.lexical_rank for h in outcome.hits)
        out["p50"], out["p99"] = summary(times)
        out["lexical_empty"] = lexical_empty / len(times)

        # Each side alone. Lexical: the BM25 top-n (n as hybrid search asks) in this thread.
        depth = candidates(K)
        lexical_times = []
        for _ in range(args.rounds):
            for q in query_texts:
                begin = time.perf_counter()
                index.search_text(q, depth)
                lexical_times.append(time.perf_counter() - begin)
        out["lexical_p50"], out["lexical_p99"] = summary(lexical_times)
        common_times = []
        for q in stopword_queries(50):
            begin = time.perf_counter()
            found = index.search_text(q, depth)
            common_times.append(time.perf_counter() - begin)
            assert found, f"no BM25 hit for {q!r}"
        out["common_p50"], out["common_p99"] = summary(common_times)
        # Vector: query embedding, graph search and row read, as hybrid search does them:
        # the work a vector-only peer query does (plus reading the rows).
        searcher = knowledge.searcher
        spec = searcher.embedding_model(schema)
        read = [schema.column(c) for c in ("Title", "Text", "File ID", "Page")]
        reader = searcher.reader
        vector_times = []
        for q in query_texts:
            begin = time.perf_counter()
            v = (await embed(spec, [q], is_query=True)).vectors[0]
            unit = (v / np.linalg.norm(v)).astype(np.float32)
            await asyncio.to_thread(lambda u=unit: reader.in_thread(
                row_reads.read_rows, schema, _nearest(index, u, K, None), read))
            vector_times.append(time.perf_counter() - begin)
        out["vector_p50"], out["vector_p99"] = summary(vector_times)
        row_of = {}
        async for rows in tables.iter_rows(schema, columns=["Title"], batch=5000):
            for row in rows:
                row_of[row.id] = len(row_of)
        found = [[row_of[r] for r, _ in index.search(q, K)] for q in queries]
        out["recall"] = recall(found, truth)
        out["bm25_exact"], out["bm25_identical"] = await asyncio.to_thread(
            bm25_exactness, index, titles, texts, query_texts, row_of)

        # ANN glue: our whole vector side (both columns, delta, merge) vs raw knn_query.
        ours_t, raw_t = [], []
        for round_no in range(args.rounds):
            for q in queries:
                pair = [(ours_t, lambda q=q: index.search(q, K)),
                        (raw_t, lambda q=q: raw.knn_query(q, k=K))]
                for samples, call in pair if round_no % 2 else pair[::-1]:
                    begin = time.perf_counter()
                    call()
                    samples.append(time.perf_counter() - begin)
        out["glue"] = percentile(ours_t, 50) / percentile(raw_t, 50) - 1

        # RRF of this search's shape: 2 lists of 20 ids (k=10), and of 2 x 100.
        ratios = []
        for size in (20, 100):
            lists = [random.Random(size + i).sample(list(row_of), size) for i in range(2)]
            ratios.append(_per_call(lambda lists=lists: dict_rrf(lists))
                          / _per_call(lambda lists=lists: rrf(lists, k=60, top_k=K)))
        out["rrf"] = ratios

        # Over gRPC from a client process vs in-process, interleaved (a pass of each per
        # round, so both see the same machine), for each GIL switch interval of --gil-compare
        # (default: the one this process runs with).
        async def local_pass() -> list[float]:
            times = []
            for q in query_texts:
                begin = time.perf_counter()
                await knowledge.search(schema, q, k=K)
                times.append(time.perf_counter() - begin)
            return times

        async def grpc_pass() -> tuple[list[float], list[float]]:
            ctx = multiprocessing.get_context("spawn")
            receive, send = ctx.Pipe(duplex=False)
            child = ctx.Process(target=grpc_client,
                                args=(f"127.0.0.1:{port}", query_texts, 1, send))
            child.start()
            send.close()  # ours: recv() then fails instead of hanging if the child dies
            times = await asyncio.to_thread(receive.recv)
            await asyncio.to_thread(child.join)
            return times

        default_ms = sys.getswitchinterval() * 1000
        settings = args.gil_compare or [default_ms]
        edge: dict[float, dict[str, list[float]]] = {
            ms: {"local": [], "grpc": [], "ratio": [], "floor": []} for ms in settings}
        for _ in range(max(args.rounds, 3 if args.gil_compare else 1)):
            for ms in settings:
                sys.setswitchinterval(ms / 1000)
                local, (remote, floor) = await local_pass(), await grpc_pass()
                edge[ms]["local"] += local
                edge[ms]["grpc"] += remote
                edge[ms]["floor"] += floor
                edge[ms]["ratio"].append(percentile(remote, 50) / percentile(local, 50))
        sys.setswitchinterval(default_ms / 1000)
        out["edge"] = {str(ms): {"local_p50": summary(e["local"])[0],
                                 "grpc_p50": summary(e["grpc"])[0],
                                 "ratio": statistics.median(e["ratio"])}
                       for ms, e in edge.items()}
        main_edge = edge[default_ms] if default_ms in edge else edge[settings[0]]
        out["edge_local_p50"] = summary(main_edge["local"])[0]
        out["grpc_p50"], out["grpc_p99"] = summary(main_edge["grpc"])
        out["grpc_ratio"] = statistics.median(main_edge["ratio"])
        out["grpc_floor_p50"] = summary(main_edge["floor"])[0]
        out["rss"] = rss_bytes() - rss_before
        await index.save()
        out["disk"] = disk_bytes(data_dir)
        out["disk_lexical"] = disk_bytes(index.lexical.directory)
        out["disk_graphs"] = sum(p.stat().st_size for p in index.directory.glob("*.hnsw"))
        out.update(await search_while_building(tables, knowledge, schema, index, corpus,
                                               titles, texts, query_texts))
    finally:
        await server.stop(0)
        shutil.rmtree(data_dir, ignore_errors=True)
    return out


async def search_while_building(tables: Any, knowledge: Any, schema: Any, index: Any,
                                corpus: np.ndarray, titles: list[str], texts: list[str],
                                query_texts: list[str]) -> dict[str, Any]:
    """Hybrid search p50/p99 while the graph builder adds a further 10% of the rows (the
    first chunks again, as new rows; users search while they ingest), after every other
    figure (it adds rows). At most 20 passes over the queries."""
    extra = min(len(corpus), max(BUILD_EXTRA_MIN, len(corpus) // 10))
    for s in range(0, extra, BATCH):
        await tables.insert_rows(schema, [
            {"Title": titles[i], "Text": texts[i], "Text Embed": corpus[i].astype("<f4").tobytes(),
             "Title Embed": None} for i in range(s, min(extra, s + BATCH))])
    await index.refresh(0.0)
    times = []
    while index.building and len(times) < 20 * len(query_texts):
        q = query_texts[len(times) % len(query_texts)]
        begin = time.perf_counter()
        await knowledge.search(schema, q, k=K)
        times.append(time.perf_counter() - begin)
    await index.wait_built()
    if not times:
        return {"building_n": 0}
    p50, p99 = summary(times)
    return {"building_n": len(times), "building_rows": extra, "building_p50": p50,
            "building_p99": p99}


def _per_call(fn: Callable[[], object], seconds: float = 0.2) -> float:
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return (time.perf_counter() - start) / n


# -- peers ----------------------------------------------------------------------------------

def run_chroma(corpus: np.ndarray, queries: np.ndarray, titles: list[str], texts: list[str],
               query_texts: list[str], truth: np.ndarray) -> dict[str, Any] | None:
    try:
        import chromadb
        from chromadb.config import Settings as ChromaSettings
    except ImportError:
        print("chromadb: not installed, skipped (.venv/bin/pip install chromadb)")
        return None
    path = tempfile.mkdtemp(prefix="bench-chroma-")
    try:
        client = chromadb.PersistentClient(path=path,
                                           settings=ChromaSettings(anonymized_telemetry=False))
        col = client.create_collection("bench_kb", embedding_function=None, metadata={
            "hnsw:space": "cosine", "hnsw:M": M, "hnsw:construction_ef": EF_CONSTRUCTION,
            "hnsw:search_ef": EF})
        n = len(corpus)
        start = time.perf_counter()
        for s in range(0, n, BATCH):
            e = min(n, s + BATCH)
            col.add(ids=[str(i) for i in range(s, e)], embeddings=corpus[s:e],
                    documents=texts[s:e], metadatas=[{"title": t} for t in titles[s:e]])
        ingest = n / (time.perf_counter() - start)
        times, found = [], []
        for q in queries:
            begin = time.perf_counter()
            result = col.query(query_embeddings=[q], n_results=K, include=[])
            times.append(time.perf_counter() - begin)
            found.append([int(i) for i in result["ids"][0]])
        text_times = []
        for q, text in zip(queries[:50], query_texts[:50], strict=True):
            begin = time.perf_counter()
            col.query(query_embeddings=[q], n_results=K, include=[],
                      where_document={"$contains": text.split()[0]})
            text_times.append(time.perf_counter() - begin)
        return {"ingest": ingest, "p50": summary(times)[0], "p99": summary(times)[1],
                "recall": recall(found, truth), "text_p50": summary(text_times)[0]}
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_lancedb(corpus: np.ndarray, queries: np.ndarray, titles: list[str], texts: list[str],
                query_texts: list[str], truth: np.ndarray) -> dict[str, Any] | None:
    try:
        import lancedb
        import pyarrow as pa
        from lancedb.index import FTS, HnswSq
    except ImportError:
        print("lancedb: not installed, skipped (.venv/bin/pip install lancedb)")
        return None
    path = tempfile.mkdtemp(prefix="bench-lancedb-")
    try:
        db = lancedb.connect(path)
        n = len(corpus)
        table = None
        start = time.perf_counter()
        for s in range(0, n, BATCH):
            e = min(n, s + BATCH)
            batch = pa.table({
                "id": pa.array(np.arange(s, e, dtype=np.int64)),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(corpus[s:e].ravel()), DIM),
                "title": titles[s:e], "text": texts[s:e]})
            if table is None:
                table = db.create_table("bench_kb", batch)
            else:
                table.add(batch)
        assert table is not None
        table.create_index("vector", config=HnswSq(distance_type="cosine", num_partitions=1,
                                                   m=M, ef_construction=EF_CONSTRUCTION))
        table.create_index("text", config=FTS())
        ingest = n / (time.perf_counter() - start)
        times, found = [], []
        for q in queries:
            begin = time.perf_counter()
            rows = table.search(q).ef(EF).limit(K).select(["id"]).to_list()
            times.append(time.perf_counter() - begin)
            found.append([int(r["id"]) for r in rows])
        hybrid = []
        for q, text in zip(queries, query_texts, strict=True):
            begin = time.perf_counter()
            (table.search(query_type="hybrid").vector(q).text(text).limit(K)
             .select(["id"]).to_list())
            hybrid.append(time.perf_counter() - begin)
        return {"ingest": ingest, "p50": summary(times)[0], "p99": summary(times)[1],
                "recall": recall(found, truth), "hybrid_p50": summary(hybrid)[0],
                "hybrid_p99": summary(hybrid)[1]}
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- main -----------------------------------------------------------------------------------

def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def report(args: argparse.Namespace, raw: dict[str, Any], ours: dict[str, Any],
           chroma: dict[str, Any] | None, lance: dict[str, Any] | None, embed_us: float) -> None:
    print(f"{'ingest (pre-embedded chunks)':44s} {'docs/s':>9}")
    print(f"{'raw hnswlib add_items (vectors only)':44s} {raw['ingest']:>9,.0f}")
    print(f"{'rowforge: acknowledged (rows, feed)':44s} {ours['acked']:>9,.0f}")
    print(f"{'rowforge: searchable (+ exact delta, BM25)':44s} {ours['searchable']:>9,.0f}")
    print(f"{'rowforge: fully indexed (+ HNSW)':44s} {ours['built']:>9,.0f}  "
          f"({ours['built'] / raw['ingest']:.2f}x raw add_items; target >= 0.6x at 1M)")
    if len(ours["edge"]) > 1:
        print("gRPC edge by GIL switch interval (interleaved rounds; ratio = median of the "
              "rounds' gRPC p50 / in-process p50):")
        for ms, e in ours["edge"].items():
            print(f"  {float(ms):5.2f} ms: in-process {e['local_p50']:.2f} ms, gRPC "
                  f"{e['grpc_p50']:.2f} ms, {e['ratio']:.2f}x")
    if chroma:
        print(f"{'chromadb add':44s} {chroma['ingest']:>9,.0f}")
    if lance:
        print(f"{'lancedb add + HNSW + FTS index':44s} {lance['ingest']:>9,.0f}")
    print()
    print(f"{'search, k=10':44s} {'p50 ms':>9} {'p99 ms':>9} {'recall@10':>10}")
    for ef in (EF_REFERENCE, EF):
        label = f"raw hnswlib knn_query, ef={ef} (vector only)"
        print(f"{label:44s} {raw[ef]['p50']:>9.2f} {'':>9} {raw[ef]['recall']:>10.3f}")
    print(f"{'rowforge hybrid, in-process':44s} {ours['p50']:>9.2f} {ours['p99']:>9.2f} "
          f"{ours['recall']:>10.3f}")
    print(f"{'rowforge hybrid, gRPC (client process)':44s} {ours['grpc_p50']:>9.2f} "
          f"{ours['grpc_p99']:>9.2f}   ({ours['grpc_ratio']:.2f}x in-process, interleaved)")
    print(f"{'gRPC floor: Health/Check, same client':44s} {ours['grpc_floor_p50']:>9.2f} "
          f"{'':>9}   (a call with no work behind it: "
          f"{ours['grpc_floor_p50'] / ours['edge_local_p50']:.2f}x of the in-process search)")
    if ours.get("building_n"):
        print(f"{'rowforge hybrid, graphs building':44s} {ours['building_p50']:>9.2f} "
              f"{ours['building_p99']:>9.2f}   ({ours['building_n']} searches while "
              f"{ours['building_rows']:,} added rows were built into the graph; "
              f"{ours['building_p50'] / ours['p50']:.1f}x the settled p50)")
    print(f"{'rowforge vector side only (+ row read)':44s} {ours['vector_p50']:>9.2f} "
          f"{ours['vector_p99']:>9.2f}")
    print(f"{'rowforge BM25 side only (top 20)':44s} {ours['lexical_p50']:>9.2f} "
          f"{ours['lexical_p99']:>9.2f}")
    print(f"{'rowforge BM25, 3 common words only':44s} {ours['common_p50']:>9.2f} "
          f"{ours['common_p99']:>9.2f}")
    if chroma:
        print(f"{'chromadb vector':44s} {chroma['p50']:>9.2f} {chroma['p99']:>9.2f} "
              f"{chroma['recall']:>10.3f}")
        print(f"{'chromadb vector + $contains text filter':44s} {chroma['text_p50']:>9.2f}")
    if lance:
        print(f"{'lancedb vector (HNSW)':44s} {lance['p50']:>9.2f} {lance['p99']:>9.2f} "
              f"{lance['recall']:>10.3f}")
        print(f"{'lancedb hybrid (RRF)':44s} {lance['hybrid_p50']:>9.2f} "
              f"{lance['hybrid_p99']:>9.2f}")
    print(f"\nBM25 side vs brute-force BM25 over the same tokens: {ours['bm25_exact']:.1%} of "
          f"the queries exact (top-10 scores equal), {ours['bm25_identical']:.1%} with identical "
          "id lists (the rest differ in the order of equal scores); "
          f"{ours['lexical_empty']:.0%} of the searches had no BM25 hit")
    print(f"memory: rowforge grew the process by {mib(ours['rss'])}; on disk {mib(ours['disk'])} "
          f"(graphs {mib(ours['disk_graphs'])}, BM25 index {mib(ours['disk_lexical'])}, the "
          "rest SQLite)")
    print(f"(the built-in embedder would add {embed_us:.0f} us per query)")
    print(f"ANN glue over raw knn_query (p50): {ours['glue']:+.1%} (target <= +10%)")
    print(f"compiled RRF vs dict-based Python RRF: {ours['rrf'][0]:.0f}x (2 x 20 ids), "
          f"{ours['rrf'][1]:.0f}x (2 x 100 ids) (target >= 20x)")
    print("\nratios (rowforge / peer; ingest: higher is better, latency: lower is better):")
    for name, peer, hybrid_key in (("chromadb", chroma, "text_p50"),
                                   ("lancedb", lance, "hybrid_p50")):
        if peer is None:
            continue
        print(f"  {name:9s} acknowledged ingest {ours['searchable'] / peer['ingest']:5.1f}x, "
              f"fully indexed {ours['built'] / peer['ingest']:5.2f}x; p50 latency: vector "
              f"{ours['vector_p50'] / peer['p50']:4.2f}x, our hybrid vs its "
              f"{'text-filtered vector' if name == 'chromadb' else 'hybrid'} "
              f"{ours['p50'] / peer[hybrid_key]:4.2f}x (our hybrid vs its vector-only "
              f"{ours['p50'] / peer['p50']:4.2f}x)")


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    began = time.perf_counter()
    corpus, queries = make_data(args.n, args.queries)
    titles, texts = make_texts(args.n)
    query_texts = make_queries(texts, args.queries)
    truth = exact_topk(corpus, queries, K)
    original = install_query_vectors(dict(zip(query_texts, queries, strict=True)))
    embed_us = _per_call(lambda: original(query_texts[:1])) * 1e6
    print(f"data: {args.n:,} chunks (~{sum(map(len, texts)) // args.n} chars), {DIM}-d "
          f"low-rank vectors, {args.queries} queries x {args.rounds} rounds, k={K}")
    print(f"index parameters (every system): cosine, M={M}, ef_construction={EF_CONSTRUCTION}, "
          f"ef={EF}\n", flush=True)

    raw = run_raw(corpus, queries, truth)
    ours = asyncio.run(run_rowforge(args, corpus, queries, titles, texts, query_texts, truth,
                                    raw["index"]))
    raw.pop("index")
    chroma = lance = None
    if not args.no_peers:
        chroma = run_chroma(corpus, queries, titles, texts, query_texts, truth)
        lance = run_lancedb(corpus, queries, titles, texts, query_texts, truth)
    report(args, raw, ours, chroma, lance, embed_us)
    seconds = time.perf_counter() - began
    print(f"\ntotal run time {seconds:.0f} s, load average now "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    return {"n": args.n, "queries": args.queries, "rounds": args.rounds, "seconds": seconds,
            "raw": {"ingest": raw["ingest"], **{str(ef): raw[ef] for ef in (EF_REFERENCE, EF)}},
            "rowforge": ours, "chromadb": chroma, "lancedb": lance}


def run_scale(args: argparse.Namespace) -> None:
    results = []
    for n in args.sizes:
        big = n >= 1_000_000
        cmd = [sys.executable, __file__, "--n", str(n),
               "--queries", str(args.big_queries if big else args.queries),
               "--rounds", str(1 if big else args.rounds)]
        if n > args.peer_max or args.no_peers:
            cmd.append("--no-peers")
        if args.gil_compare:
            cmd += ["--gil-compare", ",".join(map(str, args.gil_compare))]
        with tempfile.NamedTemporaryFile(suffix=".json") as result:
            print(f"\n===== {n:,} chunks: {' '.join(cmd[1:])}", flush=True)
            subprocess.run([*cmd, "--json", result.name], check=True)
            results.append(json.loads(Path(result.name).read_text()))
    print("\n===== summary (markdown)\n")
    sizes = [f"{r['n']:,}" for r in results]
    print("| chunks | " + " | ".join(sizes) + " |")
    print("|---|" + "---:|" * len(results))

    def row(label: str, cell: Callable[[dict[str, Any]], str]) -> None:
        cells = []
        for r in results:
            try:
                cells.append(cell(r))
            except (KeyError, TypeError):
                cells.append("")
        print(f"| {label} | " + " | ".join(cells) + " |")

    row("queries x rounds", lambda r: f"{r['queries']} x {r['rounds']}")
    row("raw hnswlib add_items, docs/s", lambda r: f"{r['raw']['ingest']:,.0f}")
    row("rowforge acknowledged, docs/s", lambda r: f"{r['rowforge']['acked']:,.0f}")
    row("rowforge searchable (delta + BM25), docs/s",
        lambda r: f"{r['rowforge']['searchable']:,.0f}")
    row("rowforge fully indexed, docs/s (x raw)",
        lambda r: f"{r['rowforge']['built']:,.0f} ({r['rowforge']['built'] / r['raw']['ingest']:.2f}x)")
    row("chromadb add, docs/s", lambda r: f"{r['chromadb']['ingest']:,.0f}")
    row("lancedb add + indexes, docs/s", lambda r: f"{r['lancedb']['ingest']:,.0f}")
    row("**rowforge hybrid p50 / p99, in-process, ms**",
        lambda r: f"**{r['rowforge']['p50']:.2f}** / {r['rowforge']['p99']:.2f}")
    row("**rowforge hybrid p50 / p99, gRPC, ms**",
        lambda r: f"**{r['rowforge']['grpc_p50']:.2f}** / {r['rowforge']['grpc_p99']:.2f}")
    row("rowforge hybrid p50 / p99 while 10% more rows build, ms",
        lambda r: f"{r['rowforge']['building_p50']:.2f} / {r['rowforge']['building_p99']:.2f}")
    row("rowforge BM25 side p50 / p99, ms",
        lambda r: f"{r['rowforge']['lexical_p50']:.2f} / {r['rowforge']['lexical_p99']:.2f}")
    row("rowforge BM25, common words only, p50, ms",
        lambda r: f"{r['rowforge']['common_p50']:.2f}")
    row("rowforge vector side (+ row read) p50, ms",
        lambda r: f"{r['rowforge']['vector_p50']:.2f}")
    row("raw hnswlib knn_query p50 (ef=128), ms", lambda r: f"{r['raw']['128']['p50']:.2f}")
    row("lancedb hybrid p50, ms", lambda r: f"{r['lancedb']['hybrid_p50']:.2f}")
    row("lancedb vector p50, ms", lambda r: f"{r['lancedb']['p50']:.2f}")
    row("chromadb vector p50 ($contains filter), ms",
        lambda r: f"{r['chromadb']['p50']:.2f} ({r['chromadb']['text_p50']:.1f})")
    row("vector recall@10 (rowforge)", lambda r: f"{r['rowforge']['recall']:.3f}")
    row("BM25 exact vs brute force (identical lists)",
        lambda r: f"{r['rowforge']['bm25_exact']:.0%} ({r['rowforge']['bm25_identical']:.0%})")
    row("rowforge RSS growth", lambda r: mib(r["rowforge"]["rss"]))
    row("on disk (graphs, BM25)", lambda r: f"{mib(r['rowforge']['disk'])} "
        f"({mib(r['rowforge']['disk_graphs'])}, {mib(r['rowforge']['disk_lexical'])})")
    row("run time", lambda r: f"{r['seconds'] / 60:.1f} min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="chunks")
    parser.add_argument("--queries", type=int, default=300, help="distinct queries")
    parser.add_argument("--rounds", type=int, default=2, help="timed passes over the queries")
    parser.add_argument("--gil-compare", type=lambda v: [float(x) for x in v.split(",")],
                        default=None, help="GIL switch intervals (ms) to compare the gRPC "
                        "edge at, e.g. 5,1,0.5 (interleaved rounds)")
    parser.add_argument("--no-peers", action="store_true", help="skip chromadb and lancedb")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--scale", action="store_true", help="run every size of --sizes")
    parser.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")],
                        default=[50_000, 200_000, 1_000_000], help="scale mode: chunks")
    parser.add_argument("--peer-max", type=int, default=200_000,
                        help="scale mode: largest size the peers run at")
    parser.add_argument("--big-queries", type=int, default=100,
                        help="scale mode: queries at 1M chunks and more (1 round)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)

    print_machine("numpy", "hnswlib", "tantivy", "chromadb", "lancedb")
    if args.scale:
        run_scale(args)
        return
    result = run_one(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
