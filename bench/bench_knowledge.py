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
  batches of 1,000 through the table store (rows, FTS5, change feed), until every row is
  acknowledged and searchable (exact delta) and until the HNSW index holds them all; hybrid
  search p50/p99 (query embedding, vector + BM25 concurrently, RRF, row reads); recall@10 of
  the vector side against exact search; the ANN glue's cost over a raw ``knn_query``; RRF;
* rowforge over gRPC: the same searches from a client in another process;
* chromadb and lancedb (embedded, in this process; skipped with a message when not
  installed): ingest rate (lancedb: rows, HNSW and full-text index), vector p50 and recall,
  chromadb's text filter (``$contains``, not ranked) and lancedb's hybrid search (RRF).

The query embedding is a lookup of the query's precomputed vector for every system (the
server's built-in embedder is patched in this process to return it), so latencies compare
search work only; the built-in embedder's own cost per query is printed alongside.

Run: ``.venv/bin/python bench/bench_knowledge.py [--n 50000] [--queries 300]``
(chromadb and lancedb are benchmark-only: ``.venv/bin/pip install chromadb lancedb``).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import shutil
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

os.environ.setdefault("LANCEDB_LOG", "error")  # lancedb logs a deprecation warning per query

DIM = 384
K = 10
#: Graph parameters for every system; ef as rowforge searches (64: the issue's reference).
M, EF_CONSTRUCTION, EF, EF_REFERENCE = 16, 200, 128, 64
BATCH = 1000
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
    """Child process: HybridSearch each query ``rounds`` times; send back the latencies."""
    import grpc

    from rowforge.v1 import knowledge_service_pb2 as kpb
    from rowforge.v1 import knowledge_service_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = knowledge_service_pb2_grpc.KnowledgeServiceStub(channel)
        for q in queries[:20]:  # warm up the connection
            stub.HybridSearch(kpb.HybridSearchRequest(table_id="bench", query=q, k=K))
        times = []
        for _ in range(rounds):
            for q in queries:
                start = time.perf_counter()
                stub.HybridSearch(kpb.HybridSearchRequest(table_id="bench", query=q, k=K))
                times.append(time.perf_counter() - start)
    out.send(times)
    out.close()


async def run_rowforge(args: argparse.Namespace, corpus: np.ndarray, queries: np.ndarray,
                       titles: list[str], texts: list[str], query_texts: list[str],
                       truth: np.ndarray, raw: Any) -> dict[str, Any]:
    from rowforge.fastcore import rrf
    from rowforge.server.app import App, Server
    from rowforge.server.config import Settings

    data_dir = Path(tempfile.mkdtemp(prefix="bench-knowledge-"))
    app = App(Settings(data_dir=data_dir, port=0, log_level="WARNING"))
    server = Server(app)
    port = await server.start()
    out: dict[str, Any] = {}
    try:
        tables, knowledge = app.tables, app.knowledge  # type: ignore[attr-defined]
        schema = await tables.create_table("default", "knowledge", "bench", [])
        await knowledge.indexes.get(schema)  # open (empty): ingest goes through catch-up
        blobs = [v.astype("<f4").tobytes() for v in corpus]
        n = len(corpus)
        start = time.perf_counter()
        for s in range(0, n, BATCH):
            await tables.insert_rows(schema, [
                {"Title": titles[i], "Text": texts[i], "Text Embed": blobs[i],
                 "Title Embed": None} for i in range(s, min(n, s + BATCH))])
        acknowledged = time.perf_counter() - start
        index = await knowledge.indexes.get(schema)
        await index.refresh(0.0)
        searchable = time.perf_counter() - start
        last = index.search(corpus[-1], 1)
        assert last and last[0][1] < 1e-4, "the last row is not searchable"
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
        # The vector side alone (query embedding, graph search, row read): the work a
        # vector-only peer query does (plus reading the rows).
        searcher = knowledge.searcher
        read = [schema.column(c) for c in ("Title", "Text", "File ID", "Page")]
        vector_times = []
        for q in query_texts:
            begin = time.perf_counter()
            await searcher._vector_side(schema, q, K, "", read)
            vector_times.append(time.perf_counter() - begin)
        out["vector_p50"], out["vector_p99"] = summary(vector_times)
        row_of = {}
        async for rows in tables.iter_rows(schema, columns=["Title"], batch=5000):
            for row in rows:
                row_of[row.id] = len(row_of)
        found = [[row_of[r] for r, _ in index.search(q, K)] for q in queries]
        out["recall"] = recall(found, truth)

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

        # Over gRPC from another process.
        ctx = multiprocessing.get_context("spawn")
        receive, send = ctx.Pipe(duplex=False)
        child = ctx.Process(target=grpc_client,
                            args=(f"127.0.0.1:{port}", query_texts, args.rounds, send))
        child.start()
        send.close()  # ours: recv() then fails instead of hanging if the child dies
        grpc_times = await asyncio.to_thread(receive.recv)
        await asyncio.to_thread(child.join)
        out["grpc_p50"], out["grpc_p99"] = summary(grpc_times)
    finally:
        await server.stop(0)
        shutil.rmtree(data_dir, ignore_errors=True)
    return out


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

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="chunks")
    parser.add_argument("--queries", type=int, default=300, help="distinct queries")
    parser.add_argument("--rounds", type=int, default=2, help="timed passes over the queries")
    parser.add_argument("--no-peers", action="store_true", help="skip chromadb and lancedb")
    args = parser.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)

    print_machine("numpy", "hnswlib", "chromadb", "lancedb")
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
          f"ef={EF}\n")

    raw = run_raw(corpus, queries, truth)
    ours = asyncio.run(run_rowforge(args, corpus, queries, titles, texts, query_texts, truth,
                                    raw["index"]))
    chroma = lance = None
    if not args.no_peers:
        chroma = run_chroma(corpus, queries, titles, texts, query_texts, truth)
        lance = run_lancedb(corpus, queries, titles, texts, query_texts, truth)

    print(f"{'ingest (pre-embedded chunks)':44s} {'docs/s':>9}")
    print(f"{'raw hnswlib add_items (vectors only)':44s} {raw['ingest']:>9,.0f}")
    print(f"{'rowforge: acknowledged (rows, FTS, feed)':44s} {ours['acked']:>9,.0f}")
    print(f"{'rowforge: searchable (+ exact delta)':44s} {ours['searchable']:>9,.0f}")
    print(f"{'rowforge: fully indexed (+ HNSW)':44s} {ours['built']:>9,.0f}  "
          f"({ours['built'] / raw['ingest']:.2f}x raw add_items; target >= 0.7x)")
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
          f"{ours['grpc_p99']:>9.2f}")
    print(f"{'rowforge vector side only (+ row read)':44s} {ours['vector_p50']:>9.2f} "
          f"{ours['vector_p99']:>9.2f}")
    if chroma:
        print(f"{'chromadb vector':44s} {chroma['p50']:>9.2f} {chroma['p99']:>9.2f} "
              f"{chroma['recall']:>10.3f}")
        print(f"{'chromadb vector + $contains text filter':44s} {chroma['text_p50']:>9.2f}")
    if lance:
        print(f"{'lancedb vector (HNSW)':44s} {lance['p50']:>9.2f} {lance['p99']:>9.2f} "
              f"{lance['recall']:>10.3f}")
        print(f"{'lancedb hybrid (RRF)':44s} {lance['hybrid_p50']:>9.2f} "
              f"{lance['hybrid_p99']:>9.2f}")
    print(f"\n(recall: rowforge's vector side against exact search; {ours['lexical_empty']:.0%} "
          "of the queries kept no BM25 word after dropping stopwords and words too common to "
          f"rank; the built-in embedder would add {embed_us:.0f} us per query)")
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
    print(f"\ntotal run time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
