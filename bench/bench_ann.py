"""ANN glue: raw hnswlib vs rowforge AnnIndex (build, search latency, recall, filters), one run.

Data: ``--n`` (default 50,000) vectors of 384 dimensions with low-rank structure (a random
32-d latent times a random 32x384 projection, plus small noise, normalised), like sentence
embeddings; uniform random vectors would make every neighbour equally far. Index parameters:
cosine, M=16, ef_construction=200, ef=64. Each index is built once.

Prints: raw ``add_items`` rate, ``knn_query`` p50 and recall@10 against exact search; our
``AnnIndex`` add rate, search p50/p99, recall@10 and its glue overhead over the raw call;
filtered search at 10 % and 1 % selectivity (p50, recall against exact search over the allowed
rows), next to hnswlib's own per-candidate Python ``filter=`` callback as a peer.

Run: ``.venv/bin/python bench/bench_ann.py [--n 50000] [--queries 300]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import hnswlib
import numpy as np
from _machine import print_machine

from rowforge import fastcore
from rowforge.fastcore._py import ann as py_ann

DIM = 384
LATENT = 32
K = 10
PARAMS = {"M": 16, "ef_construction": 200}
EF = 64


def make_data(n: int, n_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Corpus and held-out queries from the same low-rank distribution."""
    rng = np.random.default_rng(seed)
    projection = rng.standard_normal((LATENT, DIM)).astype(np.float32)

    def draw(m: int) -> np.ndarray:
        x = rng.standard_normal((m, LATENT)).astype(np.float32) @ projection
        x += 0.1 * np.sqrt(LATENT) * rng.standard_normal((m, DIM)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return draw(n), draw(n_queries)


def exact_topk(corpus: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Indices of the exact k nearest rows by cosine distance, per query."""
    sims = queries @ corpus.T
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return top


def percentile(samples: list[float], p: float) -> float:
    return float(np.percentile(np.array(samples), p))


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def recall(found: list[set[int]], truth: np.ndarray) -> float:
    hits = sum(len(f & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="corpus size")
    parser.add_argument("--queries", type=int, default=300, help="distinct queries")
    parser.add_argument("--rounds", type=int, default=6, help="timed passes over the queries")
    args = parser.parse_args()

    print_machine("numpy", "hnswlib")
    began = time.perf_counter()
    corpus, queries = make_data(args.n, args.queries)
    ids = [f"row-{i:07d}" for i in range(args.n)]
    truth = exact_topk(corpus, queries, K)
    print(f"data: {args.n:,} x {DIM} (rank-{LATENT} structure + noise), {args.queries} queries")
    print(f"index: cosine, M={PARAMS['M']}, ef_construction={PARAMS['ef_construction']}, ef={EF}")
    print(f"fastcore implementation: {'compiled' if fastcore.COMPILED else 'pure Python'}\n")

    # --- build ---------------------------------------------------------------------------------
    raw = hnswlib.Index(space="cosine", dim=DIM)
    raw.init_index(max_elements=args.n, **PARAMS)
    raw.set_ef(EF)
    raw_build = timed(lambda: raw.add_items(corpus, np.arange(args.n)))

    ours = fastcore.AnnIndex(DIM, "cosine", ef=EF, max_elements=args.n, **PARAMS)
    our_build = timed(lambda: ours.add(ids, corpus))
    print(f"raw hnswlib add_items     {args.n / raw_build:>10,.0f} vectors/s  ({raw_build:.1f} s)")
    print(
        f"AnnIndex.add              {args.n / our_build:>10,.0f} vectors/s  ({our_build:.1f} s; "
        "includes copying hnswlib's normalised vectors)\n"
    )
    # The pure-Python glue over the very same index, to show what the compiled kernels buy.
    py_view = py_ann.AnnIndex.__new__(py_ann.AnnIndex)
    py_view.__dict__.update(ours.__dict__)

    # --- unfiltered search ---------------------------------------------------------------------
    row_of = {row_id: i for i, row_id in enumerate(ids)}
    searches: dict[str, Callable[[np.ndarray], object]] = {
        "raw": lambda q: raw.knn_query(q, k=K),
        "ours": lambda q: ours.search(q, K),
        "py": lambda q: py_view.search(q, K),
    }
    times: dict[str, list[float]] = {name: [] for name in searches}
    # Whole passes per implementation, in an order reversed every round, so that each sees the
    # same cache conditions and drift in machine load averages out.
    for round_no in range(args.rounds):
        order = list(searches.items())
        for name, search in order if round_no % 2 == 0 else order[::-1]:
            for q in queries:
                start = time.perf_counter()
                search(q)
                times[name].append(time.perf_counter() - start)
    raw_t, our_t, py_t = times["raw"], times["ours"], times["py"]
    raw_found = [set(raw.knn_query(q, k=K)[0][0].tolist()) for q in queries]
    our_found = [{row_of[r] for r, _ in ours.search(q, K)} for q in queries]
    raw_p50, our_p50 = percentile(raw_t, 50), percentile(our_t, 50)
    print(f"{'k=10, unfiltered':34s} {'p50 us':>8} {'p99 us':>8} {'recall@10':>10}")
    print(
        f"{'raw hnswlib knn_query':34s} {raw_p50 * 1e6:>8.0f} {percentile(raw_t, 99) * 1e6:>8.0f}"
        f" {recall(raw_found, truth):>10.3f}"
    )
    print(
        f"{'AnnIndex.search':34s} {our_p50 * 1e6:>8.0f} {percentile(our_t, 99) * 1e6:>8.0f}"
        f" {recall(our_found, truth):>10.3f}"
    )
    print(
        f"{'  (pure-Python glue, same index)':34s} {percentile(py_t, 50) * 1e6:>8.0f}"
        f" {percentile(py_t, 99) * 1e6:>8.0f}"
    )
    print(f"glue overhead (p50): {(our_p50 / raw_p50 - 1) * 100:+.1f}% over raw (target <= 10%)\n")

    # --- filtered search -----------------------------------------------------------------------
    rng = np.random.default_rng(1)
    print(f"{'k=10, filtered':34s} {'p50 us':>8} {'p99 us':>8} {'recall@10':>10}")
    n_filter_queries = min(len(queries), 100)
    for selectivity in (0.10, 0.01):
        rows = np.sort(rng.choice(args.n, max(K, int(args.n * selectivity)), replace=False))
        allowed = {ids[i] for i in rows.tolist()}
        bitmap = np.zeros(args.n, dtype=bool)
        bitmap[rows] = True
        sub_truth = rows[exact_topk(corpus[rows], queries[:n_filter_queries], K)]

        def accept(label: int, bitmap: np.ndarray = bitmap) -> bool:
            return bool(bitmap[label])

        def run_ours(q: np.ndarray, allowed: set[str] = allowed) -> set[int]:
            return {row_of[r] for r, _ in ours.search(q, K, allowed=allowed)}

        def run_py(q: np.ndarray, allowed: set[str] = allowed) -> set[int]:
            return {row_of[r] for r, _ in py_view.search(q, K, allowed=allowed)}

        def run_callback(q: np.ndarray, accept: Callable[[int], bool] = accept) -> set[int]:
            return set(raw.knn_query(q, k=K, filter=accept)[0][0].tolist())

        runners = {"ours": run_ours, "py": run_py, "callback": run_callback}
        timings: dict[str, list[float]] = {key: [] for key in runners}
        found: dict[str, list[set[int]]] = {key: [] for key in runners}
        for key, run in runners.items():
            for q in queries[:n_filter_queries]:
                start = time.perf_counter()
                hits = run(q)
                timings[key].append(time.perf_counter() - start)
                found[key].append(hits)
        names = {
            "ours": f"AnnIndex allowed= ({selectivity:.0%}, {len(allowed):,})",
            "py": "  (pure-Python glue, same index)",
            "callback": "  raw hnswlib filter= callback",
        }
        for key, name in names.items():
            print(
                f"{name:34s} {percentile(timings[key], 50) * 1e6:>8.0f}"
                f" {percentile(timings[key], 99) * 1e6:>8.0f}"
                f" {recall(found[key], sub_truth):>10.3f}"
            )
    print(
        "\n(AnnIndex maps allowed row ids to labels on every call, included above; the callback"
        " peer gets a ready label bitmap. Allowed sets are searched exactly when that is cheaper"
        " than over-fetching through the graph.)"
    )
    print(f"total run time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
