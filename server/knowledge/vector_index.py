"""The vector index of one embedding column: an HNSW graph plus an exact "delta" of fresh rows.

Rows reach the column in *parts* (one per catch-up batch, see :mod:`.table_index`). A part is
searchable exactly (a matrix-vector product) the moment it is staged; a background builder then
moves it into the hnswlib graph (:class:`~rowforge.fastcore.AnnIndex`), oldest part first, so
fresh rows never wait for the graph.

While a part is pending, the graph may still hold older versions of its rows (updated or
deleted since): those rows are *shadowed*, i.e. the graph's answers for them are ignored, until
the builder has deleted and re-added them. A row changed again while its part was being added
gets shadowed by the newer part, so no stale version is ever returned.

Vectors are stored unit-length and the graph uses inner product, which ranks exactly like
cosine (distance ``1 - cos``) without hnswlib re-normalising and the glue copying vectors back.

Threads: :meth:`ColumnIndex.search` runs in a worker thread (with the GIL released inside
hnswlib); everything else runs on the event loop, and only the builder mutates the graph.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sys
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from rowforge import fastcore

#: hnswlib parameters. ef=128: recall@10 ~0.975 on 50,000 low-rank 384-d vectors, where
#: ef=64 gives ~0.91 (bench/bench_knowledge.py); ~0.4 ms per query.
M = 16
EF_CONSTRUCTION = 200
EF_SEARCH = 128
#: Time one graph write should take: searches wait while one runs (at most one: the lock
#: is phase-fair), so the builder adds as many vectors per ``add`` as fit in it, by the cost
#: per vector it measured (~0.3-1.5 ms at 384-d with ef_construction=200, growing with the
#: graph and shrinking with free cores), between ADD_CHUNK_MIN and ADD_CHUNK_MAX. Below 32
#: vectors hnswlib's threaded ``add_items`` loses its batching: on 2 cores at 50k rows, 8 per
#: call build at ~0.55x the rate of 256, 32 at ~0.95x (so large graphs write ~30 ms at a time).
ADD_TARGET_S = 0.01
ADD_CHUNK_MIN = 32
ADD_CHUNK_MAX = 256

Result = tuple[str, float]
Matrix = npt.NDArray[np.float32]

#: Memory of a staged row besides its vector: its id in the part, its entries in the
#: pending-location and shadow maps.
PART_ROW_BYTES = 200
#: hnswlib's per-graph table of label locks (65,536 mutexes).
GRAPH_FIXED_BYTES = 65536 * 40


def graph_bytes(dim: int, rows: int, capacity: int, fixed: int = GRAPH_FIXED_BYTES) -> int:
    """Resident memory of a graph of ``rows`` ``dim``-d vectors with ``capacity`` slots:
    per row hnswlib's vector, level-0 links and label, the glue's copy of the vector and
    its id maps (~200 bytes); per slot hnswlib's lock, level and link pointer."""
    return rows * (8 * dim + 8 * M + 212) + capacity * 54 + fixed


def saved_graph_bytes(path: os.PathLike[str] | str) -> int:
    """Resident memory the graph saved at ``path`` will take once loaded (0 if unreadable)."""
    try:
        dim, rows, capacity = fastcore.AnnIndex.saved_shape(path)
    except (OSError, fastcore.IndexCorrupt):
        return 0
    return graph_bytes(dim, rows, capacity)


def unit_rows(raw: Sequence[bytes], dim: int) -> tuple[Matrix, npt.NDArray[np.bool_]]:
    """float32 vectors from stored bytes, scaled to unit length.

    Returns the matrix and a mask of the usable rows (finite, non-zero); all ``raw`` entries
    must be ``4 * dim`` bytes long.
    """
    if not raw:
        return np.zeros((0, dim), np.float32), np.zeros(0, bool)
    matrix = np.frombuffer(b"".join(raw), dtype="<f4").reshape(len(raw), dim).astype(np.float32)
    norms = np.linalg.norm(matrix, axis=1)
    usable = np.isfinite(norms) & (norms > 0)
    safe = np.where(usable, norms, 1.0).astype(np.float32)
    return matrix / safe[:, None], usable


@dataclass(eq=False)
class Part:
    """Rows staged together: ids, unit vectors, and which of them are still current."""

    ids: list[str]
    vectors: Matrix
    alive: npt.NDArray[np.bool_] = field(init=False)

    def __post_init__(self) -> None:
        self.alive = np.ones(len(self.ids), dtype=bool)

    @classmethod
    def empty(cls, dim: int | None) -> Part:
        return cls([], np.zeros((0, dim or 1), np.float32))

    def search(self, query: Matrix, n: int, allowed: Collection[str] | None) -> list[Result]:
        """Exact nearest ``n`` current rows (``allowed`` ones only, when given)."""
        m = len(self.ids)
        if m == 0:
            return []
        mask = self.alive
        if allowed is not None:
            mask = mask & np.fromiter((rid in allowed for rid in self.ids), dtype=bool, count=m)
        live = int(np.count_nonzero(mask))
        if live == 0:
            return []
        if 2 * live >= m:
            # Mostly live (a part being built): one product over every row, the dead ones
            # pushed last, rather than copying the live rows out first (~3x faster).
            distances = np.float32(1.0) - self.vectors @ query
            if live < m:
                distances[~mask] = np.inf
            positions = None
        else:
            positions = np.flatnonzero(mask)
            distances = np.float32(1.0) - self.vectors[positions] @ query
        k = min(n, live)
        if k < len(distances):
            best = np.argpartition(distances, k - 1)[:k]
        else:
            best = np.arange(len(distances))
        best = best[np.argsort(distances[best], kind="stable")]
        ids = self.ids
        if positions is None:
            return [(ids[i], float(distances[i])) for i in best.tolist()]
        return [(ids[positions[i]], float(distances[i])) for i in best.tolist()]


def _new_ann(dim: int, capacity: int) -> Any:
    size = 1024
    while size < capacity:
        size *= 2
    return fastcore.AnnIndex(dim, space="ip", M=M, ef_construction=EF_CONSTRUCTION,
                             ef=EF_SEARCH, max_elements=size)


#: Nice value of the graph builder's thread (and the hnswlib threads it starts).
BUILDER_NICENESS = 10
_builder: concurrent.futures.ThreadPoolExecutor | None = None


def _lower_priority() -> None:
    # Linux schedules threads separately and a new thread inherits its creator's nice value,
    # so this thread and hnswlib's insertion threads yield the CPU to request handling and
    # ingestion, and take whatever is left. (Elsewhere PRIO_PROCESS would renice the whole
    # process: skip it there.)
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BUILDER_NICENESS)


def builder_executor() -> concurrent.futures.ThreadPoolExecutor:
    """The one low-priority thread that builds every graph of this process."""
    global _builder
    if _builder is None:
        _builder = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="rowforge-graph-builder",
            initializer=_lower_priority)
    return _builder


class _AddPace:
    """The builder's running estimate of one vector's insertion time (its thread only)."""

    seconds_per_vector = 0.001

    @classmethod
    def chunk(cls) -> int:
        fit = int(ADD_TARGET_S / cls.seconds_per_vector)
        return max(ADD_CHUNK_MIN, min(ADD_CHUNK_MAX, fit))

    @classmethod
    def observe(cls, vectors: int, seconds: float) -> None:
        cls.seconds_per_vector += 0.3 * (seconds / vectors - cls.seconds_per_vector)


def _update_graph(ann: Any, gone: list[str], ids: list[str], vectors: Matrix) -> None:
    """Delete ``gone`` then add ``ids``, in writes of about ADD_TARGET_S each (searches go
    in between)."""
    if gone:
        ann.delete(gone)
    start = 0
    while start < len(ids):
        size = _AddPace.chunk()
        began = time.perf_counter()
        ann.add(ids[start:start + size], vectors[start:start + size])
        _AddPace.observe(len(ids[start:start + size]), time.perf_counter() - began)
        start += size


class ColumnIndex:
    """Graph + pending parts of one embedding column.

    Args:
        name: The column's SQL name (``c_<n>``), naming its files.
        ann: A loaded :class:`~rowforge.fastcore.AnnIndex` (space ``ip``), or None.
        watermark: The last change id the graph includes.
    """

    def __init__(self, name: str, ann: Any = None, watermark: int = 0) -> None:
        self.name = name
        self.ann = ann
        self.watermark = watermark
        self.dim: int | None = ann.dim if ann is not None else None
        self.parts: tuple[Part, ...] = ()
        # Newest pending location of each row staged and not yet in the graph.
        self._where: dict[str, tuple[Part, int]] = {}
        # Row id -> number of pending parts in which it changed: the graph's entry (if any)
        # is stale until the builder has processed them all.
        self._shadow: dict[str, int] = {}

    def __len__(self) -> int:
        """Rows with a vector (approximately: a row deleted but not yet out of the graph
        still counts)."""
        ann = self.ann
        if ann is None:
            return len(self._where)
        return len(ann) + sum(1 for row_id in self._where if row_id not in ann)

    def memory_bytes(self) -> int:
        """Estimated memory of the graph, the pending parts and the graph they will grow
        into (for the memory budget: an index still building counts at its final size, so
        the budget holds the graphs that are being built too).

        Counted for what is resident, not for the capacity hnswlib reserves (untouched pages
        cost nothing): per row hnswlib's vector, links and label, the glue's copy of the
        vector and its id maps; per slot the lock, level and link pointer hnswlib keeps;
        per graph its table of label locks. Measured within ~12% of the anonymous memory a
        10,000-row 64-d column takes (tests/unit/test_knowledge_vector_index.py).
        """
        staged = sum(len(p.ids) for p in self.parts)
        total = sum(int(p.vectors.nbytes) + PART_ROW_BYTES * len(p.ids) for p in self.parts)
        ann = self.ann
        dim = self.dim or 0
        if ann is not None:
            total += graph_bytes(dim, len(ann), ann.capacity) + graph_bytes(dim, staged, 0, 0)
        elif staged:
            total += graph_bytes(dim, staged, staged)
        return total

    @property
    def pending(self) -> int:
        """Rows waiting for the graph."""
        return sum(int(p.alive.sum()) for p in self.parts)

    def stage(self, changed: Sequence[str], part: Part) -> None:
        """Make a part searchable: ``changed`` rows lose their older versions, ``part``
        holds the current vectors of those that still have one."""
        shadow = self._shadow
        for row_id in changed:
            old = self._where.pop(row_id, None)
            if old is not None:
                old[0].alive[old[1]] = False
            shadow[row_id] = shadow.get(row_id, 0) + 1
        for position, row_id in enumerate(part.ids):
            self._where[row_id] = (part, position)
        self.parts = (*self.parts, part)

    async def commit_oldest(self, changed: Sequence[str], watermark: int) -> None:
        """Move the oldest part into the graph (deleting ``changed`` rows' old versions), in
        the low-priority builder thread."""
        part = self.parts[0]
        positions = np.flatnonzero(part.alive)
        ids = [part.ids[i] for i in positions.tolist()]
        if ids and self.ann is None:
            self.ann = _new_ann(part.vectors.shape[1], len(ids))
        if self.ann is not None:
            gone = [row_id for row_id in changed if row_id in self.ann]
            await asyncio.get_running_loop().run_in_executor(
                builder_executor(), _update_graph, self.ann, gone, ids,
                np.ascontiguousarray(part.vectors[positions]))
        shadow = self._shadow
        for row_id in changed:
            left = shadow[row_id] - 1
            if left:
                shadow[row_id] = left
            else:
                del shadow[row_id]
        for position, row_id in zip(positions.tolist(), ids, strict=True):
            where = self._where.get(row_id)
            if where is not None and where[0] is part and where[1] == position:
                del self._where[row_id]  # the graph has its current version now
        self.parts = self.parts[1:]
        if watermark >= 0:
            self.watermark = watermark

    def search(self, query: Matrix, n: int, allowed: Collection[str] | None) -> list[Result]:
        """Nearest ``n`` rows by cosine distance (graph and pending parts). Thread-safe."""
        lists: list[list[Result]] = []
        ann = self.ann
        if ann is not None and len(ann):
            shadow = self._shadow
            # Ask for more when some answers may be shadowed (bounded: a mass update is
            # transient and served by the pending parts meanwhile).
            extra = min(len(shadow), 4 * n + 64)
            found = ann.search(query, n + extra, allowed)
            if shadow:
                found = [r for r in found if r[0] not in shadow]
            lists.append(found[:n])
        for part in self.parts:
            lists.append(part.search(query, n, allowed))
        if len(lists) == 1:
            return lists[0]
        return fastcore.AnnIndex.merge(lists, n) if lists else []
