"""ANN glue over hnswlib: both implementations against a brute-force numpy oracle."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rowforge import fastcore
from rowforge.fastcore import IndexCorrupt
from rowforge.fastcore._py import ann as py_ann

try:
    from rowforge.fastcore import _ann as compiled_ann
except ImportError:  # pragma: no cover - depends on the build
    compiled_ann = None

NOT_BUILT = "rowforge.fastcore._ann is not built (pip install --no-build-isolation -e .)"
IMPLS = [
    pytest.param(py_ann, id="py"),
    pytest.param(
        compiled_ann,
        id="compiled",
        marks=pytest.mark.skipif(compiled_ann is None, reason=NOT_BUILT),
    ),
]

DIM = 32


@pytest.fixture(params=IMPLS)
def Ann(request: pytest.FixtureRequest) -> type:
    return request.param.AnnIndex


def structured(n: int, dim: int = DIM, rank: int = 8, seed: int = 0) -> np.ndarray:
    """Low-rank vectors plus a little noise, normalised (uniform random ones are degenerate)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, dim))
    x += 0.05 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def ids_for(n: int, prefix: str = "row") -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


def brute_force(
    vectors: np.ndarray, ids: list[str], query: np.ndarray, k: int, space: str = "cosine"
) -> list[tuple[str, float]]:
    v = vectors.astype(np.float64)
    q = query.astype(np.float64)
    if space == "l2":
        d = ((v - q) ** 2).sum(axis=1)
    elif space == "ip":
        d = 1 - v @ q
    else:
        d = 1 - (v / np.linalg.norm(v, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
    order = np.argsort(d, kind="stable")[:k]
    return [(ids[i], float(d[i])) for i in order]


@pytest.fixture(scope="module")
def corpus() -> tuple[np.ndarray, list[str]]:
    return structured(2000), ids_for(2000)


@pytest.fixture
def built(Ann: type, corpus: tuple[np.ndarray, list[str]]) -> Any:
    vectors, ids = corpus
    index = Ann(DIM, M=16, ef_construction=100, ef=64, max_elements=len(ids))
    index.add(ids, vectors)
    return index


# --- search quality -------------------------------------------------------------------------------


def test_recall_against_brute_force(built: Any, corpus: tuple[np.ndarray, list[str]]) -> None:
    vectors, ids = corpus
    queries = structured(50, seed=1)
    hits = 0
    for q in queries:
        got = {row_id for row_id, _ in built.search(q, 10)}
        hits += len(got & {row_id for row_id, _ in brute_force(vectors, ids, q, 10)})
    assert hits / (50 * 10) >= 0.95


def test_results_are_sorted_and_distances_are_cosine(built: Any, corpus: Any) -> None:
    vectors, ids = corpus
    q = structured(1, seed=2)[0]
    results = built.search(q, 10)
    distances = [d for _, d in results]
    assert distances == sorted(distances)
    truth = dict(brute_force(vectors, ids, q, len(ids)))
    for row_id, d in results:
        assert d == pytest.approx(truth[row_id], abs=1e-5)


def test_batch_query_equals_single_queries(built: Any) -> None:
    queries = structured(5, seed=3)
    batch = built.search(queries, 7)
    assert len(batch) == 5
    for q, got in zip(queries, batch, strict=True):
        assert [r for r, _ in got] == [r for r, _ in built.search(q, 7)]


def test_small_allowed_set_is_exact(built: Any, corpus: Any) -> None:
    vectors, ids = corpus
    rng = np.random.default_rng(4)
    chosen = sorted(rng.choice(len(ids), 60, replace=False).tolist())
    allowed = {ids[i] for i in chosen}
    for q in structured(10, seed=5):
        got = built.search(q, 10, allowed=allowed)
        want = brute_force(vectors[chosen], [ids[i] for i in chosen], q, 10)
        assert [r for r, _ in got] == [r for r, _ in want]
        assert [d for _, d in got] == pytest.approx([d for _, d in want], abs=1e-5)


def test_large_allowed_set_uses_the_graph_with_high_recall(built: Any, corpus: Any) -> None:
    vectors, ids = corpus
    chosen = list(range(0, len(ids), 3))  # 33 %: above the exact-search threshold
    allowed = [ids[i] for i in chosen]
    # Force the over-fetching graph path (exact search would be cheaper at this size).
    built.exact_max_rows = 16
    built.graph_cost_ratio = 0
    hits = 0
    for q in structured(20, seed=6):
        got = built.search(q, 10, allowed=allowed)
        assert len(got) == 10
        assert all(r in set(allowed) for r, _ in got)
        want = brute_force(vectors[chosen], allowed, q, 10)
        hits += len({r for r, _ in got} & {r for r, _ in want})
    assert hits / 200 >= 0.9


def test_over_fetch_exhaustion_falls_back_to_exact(built: Any, corpus: Any) -> None:
    vectors, ids = corpus
    built.exact_max_rows = 16
    built.graph_cost_ratio = 0
    chosen = list(range(0, len(ids), 20))  # 100 rows; k asks for all of them
    allowed = [ids[i] for i in chosen]
    q = structured(1, seed=7)[0]
    got = built.search(q, 500, allowed=allowed)
    want = brute_force(vectors[chosen], allowed, q, 500)
    assert [r for r, _ in got] == [r for r, _ in want]


def test_k_is_clamped_and_edge_cases(Ann: type) -> None:
    index = Ann(4, max_elements=8)
    q = np.ones(4, dtype=np.float32)
    assert index.search(q, 5) == []
    assert index.search(np.ones((2, 4)), 5) == [[], []]
    index.add(["a", "b", "c"], np.eye(3, 4, dtype=np.float32) + 0.1)
    assert len(index.search(q, 50)) == 3
    assert index.search(q, 5, allowed=[]) == []
    assert index.search(q, 5, allowed={"zzz"}) == []
    assert [r for r, _ in index.search(q, 5, allowed=iter(["b", "b", "nope"]))] == ["b"]


# --- updates --------------------------------------------------------------------------------------


def test_readding_an_id_replaces_its_vector(Ann: type) -> None:
    vectors = structured(200, seed=8)
    ids = ids_for(200)
    index = Ann(DIM, max_elements=256)
    index.add(ids, vectors)
    capacity = index.capacity
    new = -vectors[0]
    index.add(["row-0"], new[None, :])
    assert len(index) == 200 and index.capacity == capacity
    (top, d), *_ = index.search(new, 3)
    assert top == "row-0" and d == pytest.approx(0, abs=1e-5)
    assert "row-0" not in [r for r, _ in index.search(vectors[0], 3)]


def test_delete_hides_rows_and_reuses_labels(Ann: type) -> None:
    vectors = structured(64, seed=9)
    ids = ids_for(64)
    index = Ann(DIM, max_elements=64)
    index.add(ids, vectors)
    index.delete(["row-3", "row-4", "never-added"])
    assert len(index) == 62
    assert "row-3" not in index and "row-5" in index
    assert "row-3" not in [r for r, _ in index.search(vectors[3], 10)]
    assert "row-3" not in [r for r, _ in index.search(vectors[3], 10, allowed={"row-3", "row-5"})]
    index.delete(["row-3"])  # twice: ignored
    # Two new rows fit into the deleted slots: no growth.
    index.add(["new-1", "new-2"], structured(2, seed=10))
    assert index.capacity == 64 and len(index) == 64
    index.add(["row-3"], vectors[3][None, :])  # a deleted id can come back
    assert index.search(vectors[3], 1)[0][0] == "row-3"
    assert index.capacity == 128


def test_grows_past_max_elements(Ann: type) -> None:
    vectors = structured(300, seed=11)
    ids = ids_for(300)
    index = Ann(DIM, max_elements=4)
    for start in range(0, 300, 37):
        index.add(ids[start : start + 37], vectors[start : start + 37])
    assert len(index) == 300
    assert index.capacity >= 300
    assert index.capacity & (index.capacity - 1) == 0  # 4 doubled
    hits = sum(index.search(vectors[i], 1)[0][0] == ids[i] for i in range(0, 300, 7))
    assert hits >= 40  # 43 probes, self is nearly always nearest


def test_failed_add_leaves_no_half_mapped_rows(Ann: type) -> None:
    class FailingIndex:
        """Delegates to hnswlib but dies half-way through ``add_items``."""

        def __init__(self, real: Any) -> None:
            self._real = real

        def __getattr__(self, name: str) -> Any:
            return getattr(self._real, name)

        def add_items(self, data: np.ndarray, labels: np.ndarray) -> None:
            self._real.add_items(data[:2], labels[:2])
            raise MemoryError("injected")

    vectors = structured(10, seed=12)
    index = Ann(DIM, max_elements=16)
    index.add(["keep"], vectors[:1])
    index.delete(["keep"])  # leaves a free label that the failing add will reuse
    real = index._index
    index._index = FailingIndex(real)
    with pytest.raises(MemoryError):
        index.add(ids_for(5), vectors[1:6])
    index._index = real
    assert len(index) == 0
    assert index.search(vectors[1], 5) == []
    index.add(ids_for(5), vectors[1:6])
    assert {r for r, _ in index.search(vectors[1], 5)} == set(ids_for(5))


@pytest.mark.parametrize("space", ["l2", "ip"])
def test_other_spaces_exact_path_agrees_with_hnswlib(Ann: type, space: str) -> None:
    rng = np.random.default_rng(13)
    vectors = rng.standard_normal((300, 8)).astype(np.float32)
    ids = ids_for(300)
    index = Ann(8, space=space, max_elements=300)
    index.add(ids, vectors)
    q = rng.standard_normal(8).astype(np.float32)
    graph = dict(index.search(q, 300))  # unfiltered: hnswlib's own distances
    exact = index.search(q, 5, allowed=set(ids[:50]))
    for row_id, d in exact:
        assert d == pytest.approx(graph[row_id], rel=1e-4, abs=1e-4)
    want = brute_force(vectors[:50], ids[:50], q, 5, space=space)
    assert [r for r, _ in exact] == [r for r, _ in want]


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"dim": 0}, ValueError),
        ({"dim": 4, "space": "hamming"}, ValueError),
        ({"dim": 4, "M": 1}, ValueError),
        ({"dim": 4, "ef": 0}, ValueError),
        ({"dim": 4, "max_elements": 0}, ValueError),
        ({"dim": 4.5}, TypeError),
    ],
)
def test_bad_parameters(Ann: type, kwargs: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        Ann(**kwargs)


def test_bad_add_arguments(Ann: type) -> None:
    index = Ann(4, max_elements=4)
    v = np.ones((2, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="shape"):
        index.add(["a", "b"], np.ones((2, 3)))
    with pytest.raises(ValueError, match="shape"):
        index.add(["a"], v)
    with pytest.raises(ValueError, match="distinct"):
        index.add(["a", "a"], v)
    with pytest.raises(ValueError, match="finite"):
        index.add(["a", "b"], np.array([[1, 2, 3, np.nan], [1, 1, 1, 1]]))
    with pytest.raises(TypeError, match="str"):
        index.add([1, 2], v)
    with pytest.raises(TypeError, match="single"):
        index.add("ab", v)
    with pytest.raises(TypeError, match="single"):
        index.delete("a")
    assert len(index) == 0
    index.add([], np.empty((0, 4)))
    assert len(index) == 0


def test_bad_search_arguments(built: Any) -> None:
    with pytest.raises(ValueError, match="shape"):
        built.search(np.ones(DIM + 1), 3)
    with pytest.raises(ValueError, match="finite"):
        built.search(np.full(DIM, np.inf), 3)
    with pytest.raises(ValueError, match="k must be"):
        built.search(np.ones(DIM), 0)
    with pytest.raises(TypeError, match="single string"):
        built.search(np.ones(DIM), 3, allowed="row-1")
    with pytest.raises(TypeError):
        built.search(np.ones(DIM), 3, allowed=[["unhashable"]])


def test_merge_keeps_best_distance_per_id(Ann: type) -> None:
    title = [("a", 0.3), ("b", 0.1), ("c", 0.5)]
    text = [("c", 0.05), ("a", 0.4), ("d", 0.1)]
    assert Ann.merge([title, text], 3) == [("c", 0.05), ("b", 0.1), ("d", 0.1)]
    assert Ann.merge([title, text], 10) == [
        ("c", 0.05),
        ("b", 0.1),
        ("d", 0.1),
        ("a", 0.3),
    ]
    assert Ann.merge([], 5) == []
    with pytest.raises(ValueError):
        Ann.merge([title], 0)


# --- persistence ----------------------------------------------------------------------------------


def test_save_load_roundtrip(built: Any, Ann: type, tmp_path: Path) -> None:
    built.delete(["row-1", "row-2"])
    path = tmp_path / "table.hnsw"
    built.save(path, watermark={"change_id": 41})
    assert sorted(os.listdir(tmp_path)) == ["table.hnsw", "table.hnsw.meta"]  # no temporaries
    loaded = Ann.load(path, dim=DIM, space="cosine")
    assert type(loaded) is Ann
    assert loaded.watermark == {"change_id": 41}
    assert len(loaded) == len(built) and "row-1" not in loaded and "row-0" in loaded
    assert loaded.ef == built.ef
    for q in structured(5, seed=14):
        assert loaded.search(q, 10) == built.search(q, 10)
        small = {f"row-{i}" for i in range(0, 2000, 40)}
        assert loaded.search(q, 5, allowed=small) == built.search(q, 5, allowed=small)
    # The loaded index keeps working: reuses the two free labels, then grows.
    capacity = loaded.capacity
    loaded.add(["x", "y"], structured(2, seed=15))
    assert loaded.capacity == capacity
    assert Ann.load(path, ef=99).ef == 99


@pytest.mark.parametrize("space", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("direct", [True, False], ids=["read-from-file", "through-hnswlib"])
def test_load_restores_every_vector_exactly(Ann: type, tmp_path: Path, space: str,
                                            direct: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    index = Ann(DIM, space=space, max_elements=64)
    vectors = structured(300, seed=31)
    index.add(ids_for(300), vectors)
    index.delete(ids_for(300)[100:140])
    index.add(["new-a", "new-b"], structured(2, seed=32))  # reuses two freed labels
    index.add(ids_for(300)[:5], structured(5, seed=33))  # replaces five vectors
    index.save(tmp_path / "i.hnsw")
    if not direct:  # a file layout the direct read does not recognise: hnswlib's get_items
        header = [(name, "<u8") for name in ("offset_level0", "max_elements", "count")]
        monkeypatch.setattr(py_ann, "_HNSW_HEADER", np.dtype(header))
    fetched: list[int] = []
    fetch = Ann._fetch
    monkeypatch.setattr(Ann, "_fetch", lambda self, labels: (fetched.append(len(labels)),
                                                             fetch(self, labels))[1])
    loaded = Ann.load(tmp_path / "i.hnsw")
    live = np.array(sorted(loaded._label_of.values()), dtype=np.int64)
    assert len(live) == 262
    # The direct read is spot-checked against hnswlib (a few rows); the fallback fetches all.
    assert max(fetched) == (8 if direct else 262)
    np.testing.assert_array_equal(loaded._vectors[live], index._vectors[live])
    np.testing.assert_array_equal(loaded._vectors[live], loaded._fetch(live))


def test_save_overwrites_atomically(built: Any, Ann: type, tmp_path: Path) -> None:
    path = tmp_path / "i.hnsw"
    built.save(path, watermark=1)
    built.delete(["row-7"])
    built.save(path, watermark=2)
    loaded = Ann.load(path)
    assert loaded.watermark == 2 and "row-7" not in loaded


def test_watermark_must_be_serialisable(built: Any, tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        built.save(tmp_path / "i.hnsw", watermark=object())
    assert os.listdir(tmp_path) == []


def _corrupt_cases() -> list[tuple[str, Callable[[Path], None]]]:
    def truncate_index(p: Path) -> None:
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])

    def flip_index_byte(p: Path) -> None:
        data = bytearray(p.read_bytes())
        data[len(data) // 3] ^= 0xFF
        p.write_bytes(bytes(data))

    def drop_sidecar(p: Path) -> None:
        (p.parent / (p.name + ".meta")).unlink()

    def truncate_sidecar(p: Path) -> None:
        meta = p.parent / (p.name + ".meta")
        meta.write_bytes(meta.read_bytes()[:-5])

    def garbage_sidecar(p: Path) -> None:
        (p.parent / (p.name + ".meta")).write_bytes(b"not a sidecar at all")

    def empty_index(p: Path) -> None:
        p.write_bytes(b"")

    return [
        ("truncated index", truncate_index),
        ("flipped byte", flip_index_byte),
        ("missing sidecar", drop_sidecar),
        ("truncated sidecar", truncate_sidecar),
        ("garbage sidecar", garbage_sidecar),
        ("empty index", empty_index),
    ]


@pytest.mark.parametrize(("name", "damage"), _corrupt_cases(), ids=lambda c: str(c))
def test_corrupt_files_raise_index_corrupt(
    Ann: type, tmp_path: Path, name: str, damage: Callable[[Path], None]
) -> None:
    index = Ann(DIM, max_elements=64)
    index.add(ids_for(50), structured(50, seed=16))
    path = tmp_path / "i.hnsw"
    index.save(path)
    damage(path)
    with pytest.raises(IndexCorrupt) as info:
        Ann.load(path)
    assert info.value.path == str(path)


def test_torn_pair_is_detected(Ann: type, tmp_path: Path) -> None:
    index = Ann(DIM, max_elements=64)
    index.add(ids_for(20), structured(20, seed=17))
    path = tmp_path / "i.hnsw"
    index.save(path)
    old_meta = tmp_path / "old.meta"
    shutil.copy(tmp_path / "i.hnsw.meta", old_meta)
    index.add(ids_for(20, "more"), structured(20, seed=18))
    index.save(path)
    shutil.copy(old_meta, tmp_path / "i.hnsw.meta")  # as if we crashed between the renames
    with pytest.raises(IndexCorrupt, match="checksum"):
        Ann.load(path)


def test_load_rejects_unexpected_parameters_and_missing_file(Ann: type, tmp_path: Path) -> None:
    index = Ann(DIM, max_elements=8)
    index.add(["a"], structured(1))
    path = tmp_path / "i.hnsw"
    index.save(path)
    with pytest.raises(IndexCorrupt, match="dimension"):
        Ann.load(path, dim=DIM * 2)
    with pytest.raises(IndexCorrupt, match="space"):
        Ann.load(path, space="l2")
    with pytest.raises(FileNotFoundError):
        Ann.load(tmp_path / "absent.hnsw")


# --- concurrency ----------------------------------------------------------------------------------


def test_searches_run_while_rows_change(Ann: type) -> None:
    vectors = structured(600, seed=19)
    ids = ids_for(600)
    index = Ann(DIM, max_elements=64)
    index.add(ids[:200], vectors[:200])
    stop = threading.Event()
    errors: list[BaseException] = []

    def searcher(seed: int) -> int:
        rng = np.random.default_rng(seed)
        done = 0
        while not stop.is_set():
            try:
                q = vectors[rng.integers(600)]
                for row_id, _ in index.search(q, 5):
                    assert isinstance(row_id, str)
                for row_id, _ in index.search(q, 5, allowed=set(ids[:300:2])):
                    assert row_id in ids[:300:2]
            except BaseException as e:  # collected and re-raised in the main thread
                errors.append(e)
                return done
            done += 1
        return done

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(searcher, s) for s in range(3)]
        for start in range(200, 600, 50):  # grows the index several times meanwhile
            index.add(ids[start : start + 50], vectors[start : start + 50])
            index.delete(ids[start - 100 : start - 90])
        stop.set()
        counts = [f.result() for f in futures]
    assert not errors, errors[0]
    assert all(c > 0 for c in counts)
    assert len(index) == 600 - 80


async def test_search_through_to_thread(built: Any) -> None:
    queries = structured(4, seed=20)
    results = await asyncio.gather(*(asyncio.to_thread(built.search, q, 3) for q in queries))
    assert [len(r) for r in results] == [3, 3, 3, 3]


def test_public_api_picks_one_implementation() -> None:
    expected = compiled_ann.AnnIndex if fastcore.COMPILED else py_ann.AnnIndex
    assert fastcore.AnnIndex is expected
    assert fastcore.IndexCorrupt is IndexCorrupt


# --- compiled kernels == Python kernels ------------------------------------------------------------


@pytest.mark.skipif(compiled_ann is None, reason=NOT_BUILT)
@settings(max_examples=200, deadline=None)
@given(
    labels=st.lists(st.integers(0, 40), max_size=60),
    bits=st.lists(st.booleans(), min_size=41, max_size=41),
    k=st.integers(0, 70),
)
def test_take_allowed_kernels_agree(labels: list[int], bits: list[bool], k: int) -> None:
    lab = np.array(labels, dtype=np.uint64)
    bitmap = np.array(bits, dtype=np.uint8)
    mine = compiled_ann.take_allowed(lab, bitmap, k)
    ref = py_ann.take_allowed(lab, bitmap, k)
    assert mine.tolist() == ref.tolist()


@pytest.mark.skipif(compiled_ann is None, reason=NOT_BUILT)
@settings(max_examples=200, deadline=None)
@given(
    allowed=st.lists(st.sampled_from(["a", "b", "c", "d", "x", "é"]), max_size=10),
    mapping=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 2**40)),
)
def test_collect_labels_kernels_agree(allowed: list[str], mapping: dict[str, int]) -> None:
    assert (
        compiled_ann.collect_labels(allowed, mapping).tolist()
        == py_ann.collect_labels(allowed, mapping).tolist()
    )


@pytest.mark.skipif(compiled_ann is None, reason=NOT_BUILT)
@settings(max_examples=100, deadline=None)
@given(pairs=st.lists(st.tuples(st.integers(0, 4), st.floats(width=32)), max_size=10))
def test_to_results_kernels_agree(pairs: list[tuple[int, float]]) -> None:
    id_of = ["a", "b", "c", "d", "e"]
    labels = np.array([p[0] for p in pairs], dtype=np.uint64)
    distances = np.array([p[1] for p in pairs], dtype=np.float32)
    mine = compiled_ann.to_results(labels, distances, id_of)
    ref = py_ann.to_results(labels, distances, id_of)
    assert repr(mine) == repr(ref)  # repr: NaN == NaN, and the same float values


@pytest.mark.skipif(compiled_ann is None, reason=NOT_BUILT)
@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(width=32), min_size=0, max_size=12), cols=st.integers(1, 4))
def test_all_finite_kernels_agree(values: list[float], cols: int) -> None:
    rows = len(values) // cols
    q = np.array(values[: rows * cols], dtype=np.float32).reshape(rows, cols)
    assert compiled_ann.all_finite(q) == py_ann.all_finite(q)
