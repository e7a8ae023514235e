"""ANN glue over hnswlib: row ids, filtered search, growth and persistence (pure Python).

The class here is shared by both implementations: ``rowforge.fastcore._ann`` subclasses it and
swaps in compiled versions of the per-search kernels (:func:`all_finite`,
:func:`collect_labels`, :func:`take_allowed`, :func:`to_results`): the parts that loop per
value or per row id.
"""

from __future__ import annotations

import hashlib
import math
import operator
import os
import sys
import tempfile
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import hnswlib
import msgpack
import numpy as np
import numpy.typing as npt

from rowforge.fastcore._errors import IndexCorrupt
from rowforge.fastcore._rwlock import RWLock

SPACES = ("cosine", "ip", "l2")
FORMAT = "rowforge.ann/1"
MAGIC = b"RFANN1\n"  # sidecar: MAGIC + sha256(payload) + msgpack payload
SIDECAR_SUFFIX = ".meta"

Result = tuple[str, float]
Labels = npt.NDArray[np.int64]


# --- kernels (compiled twins in _ann.pyx) --------------------------------------------------------


def collect_labels(allowed: Collection[Any], label_of: dict[str, int]) -> Labels:
    """Labels of the ``allowed`` row ids that are in the index (unknown ids are skipped)."""
    labels = [label for label in map(label_of.get, allowed) if label is not None]
    return np.array(labels, dtype=np.int64)


def all_finite(q: npt.NDArray[np.float32]) -> bool:
    """True when the 2-D float32 array holds no NaN or infinity."""
    return bool(np.isfinite(q).all())


def take_allowed(
    labels: npt.NDArray[np.uint64], bitmap: npt.NDArray[np.uint8], k: int
) -> npt.NDArray[np.intp]:
    """Positions of the first ``k`` entries of ``labels`` whose ``bitmap`` byte is set."""
    return np.flatnonzero(bitmap[labels])[:k]


def to_results(
    labels: npt.NDArray[Any], distances: npt.NDArray[np.float32], id_of: list[str | None]
) -> list[Result]:
    """``(row id, distance)`` pairs for parallel label and distance arrays."""
    return [
        (id_of[label], dist)  # labels given here are always live
        for label, dist in zip(labels.tolist(), distances.tolist(), strict=True)
    ]


# --- the index -----------------------------------------------------------------------------------


def _positive_int(value: Any, name: str) -> int:
    value = operator.index(value)
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _id_list(ids: Iterable[str], what: str) -> list[str]:
    if isinstance(ids, str | bytes):
        raise TypeError(
            f"{what} must be a collection of row ids, not a single {type(ids).__name__}"
        )
    out = list(ids)
    for row_id in out:
        if not isinstance(row_id, str):
            raise TypeError(f"row ids must be str, got {type(row_id).__name__}")
    return out


class AnnIndex:
    """One hnswlib index addressed by string row ids.

    The index is a cache derived from the database: callers persist it with :meth:`save`
    (tagged with a ``watermark`` such as the last change id included) and rebuild it when
    :meth:`load` raises :class:`~rowforge.fastcore.IndexCorrupt` or the watermark is stale.

    Thread safety: :meth:`search`, :meth:`save`, ``len`` and ``in`` may run concurrently from
    many threads (hnswlib releases the GIL while searching, so call :meth:`search` through
    ``asyncio.to_thread``). :meth:`add`, :meth:`delete` and setting :attr:`ef` take an
    exclusive lock: they wait for running searches and hold new ones back until done, and the
    searches that waited go before the next update (so updates in a loop cannot starve
    searches; a bulk :meth:`add` of many vectors still pauses them: add in short chunks, or
    build a fresh index off to the side and swap it in).

    Memory: besides hnswlib's graph and vectors the class keeps its own float32 copy of the
    vectors (``4 * dim`` bytes per slot), which makes exact search over a small allowed set
    cheap (hnswlib's ``get_items`` copies too slowly for that).

    Args:
        dim: Vector dimension.
        space: ``"cosine"`` (distance ``1 - cos``), ``"ip"`` (``1 - dot``) or ``"l2"``
            (squared Euclidean).
        M: hnswlib graph degree.
        ef_construction: hnswlib build-time beam width.
        ef: Search beam width; hnswlib searches with ``max(ef, k)``.
        max_elements: Initial capacity; the index doubles it whenever it is full.
        random_seed: hnswlib's level-generator seed (builds are reproducible single-threaded).

    Raises:
        ValueError: A parameter is out of range or ``space`` is unknown.
    """

    # Filtered search strategy (tuned with bench/bench_ann.py). The graph is asked for
    # ``over_fetch * k * live / allowed`` candidates, so that about ``over_fetch * k`` of them
    # pass the filter (4 keeps recall@10 near 0.99 at 10 % selectivity); ``fetch_growth``
    # multiplies that when too few passed. Exact search reads every allowed vector, while a
    # graph candidate costs about ``graph_cost_ratio`` vector reads: the cheaper plan wins, and
    # sets of at most ``exact_max_rows`` rows are always searched exactly (recall 1).
    over_fetch = 4
    fetch_growth = 4
    graph_cost_ratio = 7.0
    exact_max_rows = 256

    _all_finite = staticmethod(all_finite)
    _collect_labels = staticmethod(collect_labels)
    _take_allowed = staticmethod(take_allowed)
    _to_results = staticmethod(to_results)

    def __init__(
        self,
        dim: int,
        space: str = "cosine",
        M: int = 16,
        ef_construction: int = 200,
        ef: int = 64,
        max_elements: int = 1024,
        *,
        random_seed: int = 100,
    ) -> None:
        dim = _positive_int(dim, "dim")
        if space not in SPACES:
            raise ValueError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
        M = _positive_int(M, "M")
        if M < 2:
            raise ValueError(f"M must be >= 2, got {M}")
        ef_construction = _positive_int(ef_construction, "ef_construction")
        ef = _positive_int(ef, "ef")
        max_elements = _positive_int(max_elements, "max_elements")
        index = hnswlib.Index(space=space, dim=dim)
        index.init_index(
            max_elements=max_elements,
            M=M,
            ef_construction=ef_construction,
            random_seed=operator.index(random_seed),
        )
        index.set_ef(ef)
        self._setup(index, space, dim, M, ef_construction, ef, max_elements)

    def _setup(
        self,
        index: hnswlib.Index,
        space: str,
        dim: int,
        M: int,
        ef_construction: int,
        ef: int,
        capacity: int,
    ) -> None:
        self._index = index
        self._space = space
        self._dim = dim
        self._M = M
        self._ef_construction = ef_construction
        self._ef = ef
        self._vectors = np.zeros((capacity, dim), dtype=np.float32)
        self._label_of: dict[str, int] = {}  # live rows only
        self._id_of: list[str | None] = []  # by label; None marks a free (deleted) label
        self._free: list[int] = []  # deleted labels, reused by the next new rows
        self._lock = RWLock()
        self.watermark: Any = None
        """Caller-defined marker of what the index contains (saved and loaded with it)."""

    # --- introspection ---------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    @property
    def space(self) -> str:
        """Distance space: ``"cosine"``, ``"ip"`` or ``"l2"``."""
        return self._space

    @property
    def capacity(self) -> int:
        """Slots allocated; grows by doubling."""
        return len(self._vectors)

    @property
    def ef(self) -> int:
        """Search beam width (hnswlib uses ``max(ef, k)``)."""
        return self._ef

    @ef.setter
    def ef(self, value: int) -> None:
        value = _positive_int(value, "ef")
        with self._lock.write():
            self._index.set_ef(value)
            self._ef = value

    def __len__(self) -> int:
        return len(self._label_of)

    def __contains__(self, row_id: object) -> bool:
        return row_id in self._label_of

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(dim={self._dim}, space={self._space!r}, "
            f"live={len(self)}, capacity={self.capacity})"
        )

    # --- updates ---------------------------------------------------------------------------------

    def add(self, ids: Sequence[str], vectors: npt.ArrayLike) -> None:
        """Insert rows, or replace the vectors of ids already present.

        Args:
            ids: Distinct row ids.
            vectors: Array-like of shape ``(len(ids), dim)``, converted to float32.

        Raises:
            TypeError: An id is not a str.
            ValueError: Duplicate ids, a shape mismatch, or a non-finite value.
        """
        id_list = _id_list(ids, "ids")
        data = np.ascontiguousarray(vectors, dtype=np.float32)
        if data.ndim != 2 or data.shape != (len(id_list), self._dim):
            raise ValueError(
                f"vectors must have shape ({len(id_list)}, {self._dim}), got {data.shape}"
            )
        if len(set(id_list)) != len(id_list):
            raise ValueError("ids must be distinct within one add()")
        if not id_list:
            return
        if not np.isfinite(data).all():
            raise ValueError("vectors must be finite (no NaN or infinity)")
        with self._lock.write():
            free = list(self._free)
            next_label = len(self._id_of)
            labels = np.empty(len(id_list), dtype=np.int64)
            for i, row_id in enumerate(id_list):
                label = self._label_of.get(row_id)
                if label is None:
                    if free:
                        label = free.pop()  # hnswlib un-deletes and overwrites a known label
                    else:
                        label = next_label
                        next_label += 1
                labels[i] = label
            if next_label > self.capacity:
                capacity = self.capacity
                while capacity < next_label:
                    capacity *= 2
                self._grow(capacity)
            try:
                self._index.add_items(data, labels)
            except BaseException:
                self._undo_partial_add(labels)
                raise
            self._free = free
            self._id_of.extend([None] * (next_label - len(self._id_of)))
            for row_id, label in zip(id_list, labels.tolist(), strict=True):
                self._id_of[label] = row_id
                self._label_of[row_id] = label
            # hnswlib stores cosine vectors normalised; copy its exact floats so that exact and
            # graph distances agree bit for bit, before and after a save/load.
            self._vectors[labels] = self._fetch(labels) if self._space == "cosine" else data

    def _undo_partial_add(self, labels: Labels) -> None:
        # hnswlib may have inserted some of the batch: hide labels that we do not map to a row.
        for label in labels.tolist():
            if label >= len(self._id_of) or self._id_of[label] is None:
                try:
                    self._index.mark_deleted(label)
                except RuntimeError:
                    pass  # never inserted, or already deleted

    def _grow(self, capacity: int) -> None:
        self._index.resize_index(capacity)
        vectors = np.zeros((capacity, self._dim), dtype=np.float32)
        vectors[: len(self._vectors)] = self._vectors
        self._vectors = vectors

    def _fetch(self, labels: Labels) -> npt.NDArray[np.float32]:
        out = np.empty((len(labels), self._dim), dtype=np.float32)
        for start in range(0, len(labels), 4096):  # get_items is slow; small batches
            chunk = labels[start : start + 4096]
            out[start : start + len(chunk)] = self._index.get_items(chunk)
        return out

    def delete(self, ids: Iterable[str]) -> None:
        """Remove rows; ids not in the index are ignored. Their labels are reused later."""
        id_list = _id_list(ids, "ids")
        with self._lock.write():
            for row_id in id_list:
                label = self._label_of.pop(row_id, None)
                if label is None:
                    continue
                self._index.mark_deleted(label)
                self._id_of[label] = None
                self._free.append(label)

    # --- search ----------------------------------------------------------------------------------

    def search(
        self, query: npt.ArrayLike, k: int, allowed: Collection[str] | None = None
    ) -> list[Result] | list[list[Result]]:
        """Nearest rows to one query ``(dim,)`` or to each of ``(nq, dim)`` queries.

        Args:
            query: One vector or a batch of vectors.
            k: Maximum results per query, >= 1; clamped to the rows available.
            allowed: Optional row ids the results must come from (for example the rows that
                match a ``where`` filter). Unknown ids are ignored. Small allowed sets are
                searched exactly; larger ones through the graph with over-fetching.

        Returns:
            ``(row id, distance)`` pairs, nearest first; a list of such lists for a batch.

        Raises:
            TypeError: ``allowed`` is a single string.
            ValueError: Bad query shape or values, or ``k < 1``.
        """
        q = np.ascontiguousarray(query, dtype=np.float32)
        single = q.ndim == 1
        if single:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self._dim:
            raise ValueError(f"query must have shape ({self._dim},) or (n, {self._dim})")
        if not self._all_finite(q):
            raise ValueError("query must be finite (no NaN or infinity)")
        k = _positive_int(k, "k")
        if allowed is not None:
            if isinstance(allowed, str | bytes):
                raise TypeError("allowed must be a collection of row ids, not a single string")
            if not isinstance(allowed, Collection):
                allowed = list(allowed)
        self._lock.acquire_read()  # not ``with``: the generator costs ~1 us per search
        try:
            if allowed is None:
                results = self._search_all(q, k)
            else:
                results = self._search_allowed(q, k, allowed)
        finally:
            self._lock.release_read()
        return results[0] if single else results

    def _search_all(self, q: npt.NDArray[np.float32], k: int) -> list[list[Result]]:
        live = len(self._label_of)
        if live == 0:
            return [[] for _ in range(len(q))]
        kk = min(k, live)
        try:
            labels, distances = self._index.knn_query(q, k=kk)
        except RuntimeError:
            # Fewer than kk reachable through the graph (deletions can disconnect it).
            everyone = np.fromiter(self._label_of.values(), dtype=np.int64, count=live)
            return [self._exact(row, everyone, kk) for row in q]
        return [self._to_results(labels[i], distances[i], self._id_of) for i in range(len(q))]

    def _search_allowed(
        self, q: npt.NDArray[np.float32], k: int, allowed: Collection[str]
    ) -> list[list[Result]]:
        labels = self._collect_labels(allowed, self._label_of)
        if len(labels) == 0:
            return [[] for _ in range(len(q))]
        bitmap = np.zeros(self.capacity, dtype=np.uint8)
        bitmap[labels] = 1  # also removes duplicate ids
        n_allowed = int(np.count_nonzero(bitmap))
        live = len(self._label_of)
        kk = min(k, n_allowed)
        fetch = max(2 * kk, math.ceil(self.over_fetch * kk * live / n_allowed))
        if self._exact_is_cheaper(n_allowed, fetch, live):
            unique = np.flatnonzero(bitmap)
            return [self._exact(row, unique, kk) for row in q]
        return [self._search_filtered(row, kk, bitmap, n_allowed, fetch, live) for row in q]

    def _exact_is_cheaper(self, n_allowed: int, fetch: int, live: int) -> bool:
        return (
            n_allowed <= self.exact_max_rows
            or n_allowed <= self.graph_cost_ratio * fetch
            or 2 * fetch > live  # the graph would have to return most of the index
        )

    def _search_filtered(
        self,
        row: npt.NDArray[np.float32],
        kk: int,
        bitmap: npt.NDArray[np.uint8],
        n_allowed: int,
        fetch: int,
        live: int,
    ) -> list[Result]:
        while True:
            try:
                labels, distances = self._index.knn_query(row, k=fetch)
            except RuntimeError:
                break  # fewer than ``fetch`` reachable: deletions can disconnect the graph
            positions = self._take_allowed(labels[0], bitmap, kk)
            if len(positions) == kk:
                return self._to_results(labels[0][positions], distances[0][positions], self._id_of)
            fetch *= self.fetch_growth
            if self._exact_is_cheaper(n_allowed, fetch, live):
                break
        return self._exact(row, np.flatnonzero(bitmap), kk)

    def _exact(self, row: npt.NDArray[np.float32], labels: Labels, k: int) -> list[Result]:
        vectors = self._vectors[labels]
        if self._space == "l2":
            diff = vectors - row
            distances = np.einsum("ij,ij->i", diff, diff)
        else:
            if self._space == "cosine":
                row = row / (np.sqrt(np.dot(row, row)) + np.float32(1e-30))
            distances = np.float32(1.0) - vectors @ row
        if k < len(labels):
            nearest = np.argpartition(distances, k - 1)[:k]
        else:
            nearest = np.arange(len(labels))
        # Sort by distance, then label, so that ties come out in a stable order.
        order = nearest[np.lexsort((labels[nearest], distances[nearest]))]
        return self._to_results(
            labels[order].astype(np.uint64),
            distances[order].astype(np.float32),
            self._id_of,
        )

    @staticmethod
    def merge(results_lists: Iterable[Iterable[Result]], k: int) -> list[Result]:
        """Merge the results of several indexes (e.g. a table's Title and Text embeddings).

        Each row id keeps its smallest distance; ties keep first appearance.

        Args:
            results_lists: ``(row id, distance)`` lists as returned by :meth:`search`.
            k: Maximum results, >= 1.

        Returns:
            The ``k`` nearest ``(row id, distance)`` pairs.
        """
        k = _positive_int(k, "k")
        best: dict[str, float] = {}
        for results in results_lists:
            for row_id, distance in results:
                if row_id not in best or distance < best[row_id]:
                    best[row_id] = distance
        return sorted(best.items(), key=lambda item: item[1])[:k]

    # --- persistence -----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], *, watermark: Any = ...) -> None:
        """Write the index to ``path`` and its metadata to ``path + ".meta"``, atomically each.

        Both files are written to temporary names, flushed to disk and renamed into place. The
        sidecar records the row-id mapping, the parameters, the watermark and a SHA-256 of the
        index file, so a torn pair (a crash between the renames) fails :meth:`load` cleanly.

        Args:
            path: Index file path; its directory must exist.
            watermark: Replaces :attr:`watermark` before saving (any msgpack-able value).

        Raises:
            TypeError: The watermark cannot be serialised with msgpack.
            OSError: The files cannot be written.
        """
        if watermark is not ...:
            self.watermark = watermark
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        temporaries: list[str] = []
        try:
            with self._lock.read():
                index_tmp = _temp_path(directory, path)
                temporaries.append(index_tmp)
                self._index.save_index(index_tmp)
                with open(index_tmp, "rb") as f:
                    digest = hashlib.file_digest(f, "sha256").hexdigest()
                    os.fsync(f.fileno())
                meta = {
                    "format": FORMAT,
                    "space": self._space,
                    "dim": self._dim,
                    "M": self._M,
                    "ef_construction": self._ef_construction,
                    "ef": self._ef,
                    "capacity": self.capacity,
                    "count": len(self._label_of),
                    "ids": list(self._id_of),
                    "watermark": self.watermark,
                    "index_sha256": digest,
                    "index_bytes": os.path.getsize(index_tmp),
                }
            payload = msgpack.packb(meta, use_bin_type=True)
            meta_tmp = _temp_path(directory, path)
            temporaries.append(meta_tmp)
            with open(meta_tmp, "wb") as f:
                f.write(MAGIC + hashlib.sha256(payload).digest() + payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(index_tmp, path)
            os.replace(meta_tmp, path + SIDECAR_SUFFIX)
            temporaries.clear()
            _fsync_directory(directory)
        finally:
            for leftover in temporaries:
                try:
                    os.unlink(leftover)
                except FileNotFoundError:
                    pass

    @staticmethod
    def saved_shape(path: str | os.PathLike[str]) -> tuple[int, int, int]:
        """``(dim, elements, capacity)`` of an index saved at ``path``, from the first bytes
        of its file (to size it before loading it; ``elements`` counts deleted ones too).

        Raises:
            OSError: The file cannot be read.
            IndexCorrupt: The file does not start with an hnswlib header.
        """
        header = _hnsw_header(os.fspath(path))
        data, label_at = int(header["data_offset"]), int(header["label_offset"])
        dim, rest = divmod(label_at - data, 4)
        if dim < 1 or rest:
            raise IndexCorrupt(os.fspath(path), "index file header is not hnswlib's")
        return dim, int(header["count"]), int(header["max_elements"])

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        dim: int | None = None,
        space: str | None = None,
        ef: int | None = None,
    ) -> AnnIndex:
        """Load an index written by :meth:`save`, verifying it first.

        Args:
            path: Index file path (the sidecar is ``path + ".meta"``).
            dim: Expected dimension; a different one raises :class:`IndexCorrupt`.
            space: Expected space; a different one raises :class:`IndexCorrupt`.
            ef: Search beam width to use instead of the saved one.

        Returns:
            The index, with :attr:`watermark` as saved.

        Raises:
            FileNotFoundError: There is no index file at ``path``.
            IndexCorrupt: The sidecar is missing or damaged, the checksum does not match,
                the format is unknown or the parameters differ from the expected ones.
        """
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(path)
        meta = _read_sidecar(path)
        try:
            digest_ok = _file_matches(path, meta["index_sha256"], meta["index_bytes"])
        except OSError as e:
            raise IndexCorrupt(path, f"cannot read the index file: {e}") from e
        if not digest_ok:
            raise IndexCorrupt(path, "index file does not match the checksum in its sidecar")
        if dim is not None and dim != meta["dim"]:
            raise IndexCorrupt(path, f"dimension is {meta['dim']}, expected {dim}")
        if space is not None and space != meta["space"]:
            raise IndexCorrupt(path, f"space is {meta['space']!r}, expected {space!r}")
        index = hnswlib.Index(space=meta["space"], dim=meta["dim"])
        try:
            index.load_index(path, max_elements=meta["capacity"])
        except (RuntimeError, ValueError) as e:
            raise IndexCorrupt(path, f"hnswlib cannot load it: {e}") from e
        ids: list[str | None] = meta["ids"]
        if index.element_count != len(ids):
            raise IndexCorrupt(
                path, f"index holds {index.element_count} elements, sidecar maps {len(ids)}"
            )
        search_ef = _positive_int(ef, "ef") if ef is not None else meta["ef"]
        index.set_ef(search_ef)
        loaded = cls.__new__(cls)
        loaded._setup(
            index,
            meta["space"],
            meta["dim"],
            meta["M"],
            meta["ef_construction"],
            search_ef,
            meta["capacity"],
        )
        loaded._id_of = ids
        loaded._label_of = {row_id: label for label, row_id in enumerate(ids) if row_id is not None}
        loaded._free = [label for label, row_id in enumerate(ids) if row_id is None]
        if len(loaded._label_of) != meta["count"]:
            raise IndexCorrupt(path, "sidecar row count does not match its mapping")
        live = np.fromiter(loaded._label_of.values(), dtype=np.int64, count=len(loaded._label_of))
        if not _copy_saved_vectors(path, loaded, live):
            loaded._vectors[live] = loaded._fetch(live)
        loaded.watermark = meta["watermark"]
        return loaded


#: hnswlib's index file (``HierarchicalNSW::saveIndex``, unchanged since 2018): a header of
#: these fields, then every element's level-0 record (links, vector, label) back to back.
_HNSW_HEADER = np.dtype(
    [
        ("offset_level0", "<u8"),
        ("max_elements", "<u8"),
        ("count", "<u8"),
        ("record_bytes", "<u8"),
        ("label_offset", "<u8"),
        ("data_offset", "<u8"),
        ("max_level", "<i4"),
        ("entry_point", "<u4"),
        ("max_m", "<u8"),
        ("max_m0", "<u8"),
        ("m", "<u8"),
        ("mult", "<f8"),
        ("ef_construction", "<u8"),
    ]
)
#: Labels checked against hnswlib's own ``get_items`` after a direct read.
_SPOT_CHECKS = 8


def _hnsw_header(path: str) -> Any:
    """The header of an hnswlib index file (a numpy record of :data:`_HNSW_HEADER`)."""
    header = np.fromfile(path, dtype=_HNSW_HEADER, count=1)
    if len(header) != 1:
        raise IndexCorrupt(path, "index file is shorter than its header")
    return header[0]


def _copy_saved_vectors(path: str, index: AnnIndex, live: Labels) -> bool:
    """Fill ``index``'s vector copy straight from the saved file's level-0 records (a strided
    copy: hnswlib's ``get_items`` takes ~25 us per 384-d vector, 2.5 s per 100,000).

    Returns False, leaving the copy alone, when the file does not look as expected (another
    hnswlib layout): the caller then fetches through hnswlib. A few rows are compared with
    hnswlib's answer either way.
    """
    if not len(live) or sys.byteorder != "little":
        return not len(live)
    try:
        header = _hnsw_header(path)
        count, record = int(header["count"]), int(header["record_bytes"])
        data, label_at = int(header["data_offset"]), int(header["label_offset"])
        size = os.path.getsize(path)
        if (
            int(header["offset_level0"]) != 0
            or count != index._index.element_count
            or data + 4 * index.dim > record
            or label_at + 8 > record
            or _HNSW_HEADER.itemsize + count * record > size
        ):
            return False
        records = np.memmap(
            path, dtype=np.uint8, mode="r", offset=_HNSW_HEADER.itemsize, shape=(count, record)
        )
        try:
            labels = np.ascontiguousarray(records[:, label_at : label_at + 8]).view("<u8")[:, 0]
            if labels.max(initial=0) >= len(index._vectors):
                return False
            vectors = np.ascontiguousarray(records[:, data : data + 4 * index.dim]).view("<f4")
            index._vectors[labels.astype(np.int64)] = vectors
        finally:
            del records
    except (OSError, ValueError, IndexCorrupt):
        return False
    sample = live[:: max(1, len(live) // _SPOT_CHECKS)][:_SPOT_CHECKS]
    return bool(np.array_equal(index._vectors[sample], index._fetch(sample)))


def _temp_path(directory: str, path: str) -> str:
    fd, name = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(fd)
    return name


def _fsync_directory(directory: str) -> None:
    # Makes the renames durable; not every platform lets a directory be opened.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _file_matches(path: str, sha256_hex: str, size: int) -> bool:
    if os.path.getsize(path) != size:
        return False
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest() == sha256_hex


_META_TYPES = {
    "format": str,
    "space": str,
    "dim": int,
    "M": int,
    "ef_construction": int,
    "ef": int,
    "capacity": int,
    "count": int,
    "ids": list,
    "index_sha256": str,
    "index_bytes": int,
}


def _read_sidecar(path: str) -> dict[str, Any]:
    sidecar = path + SIDECAR_SUFFIX
    try:
        with open(sidecar, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise IndexCorrupt(path, f"sidecar {sidecar!r} is missing") from None
    head = len(MAGIC) + 32
    if len(raw) < head or not raw.startswith(MAGIC):
        raise IndexCorrupt(path, "sidecar is not a rowforge ANN sidecar")
    payload = raw[head:]
    if hashlib.sha256(payload).digest() != raw[len(MAGIC) : head]:
        raise IndexCorrupt(path, "sidecar checksum mismatch (truncated or modified)")
    try:
        meta = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as e:  # checksum passed: written by a bug
        raise IndexCorrupt(path, f"sidecar does not decode: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise IndexCorrupt(path, f"unknown sidecar format {found!r}, expected {FORMAT!r}")
    for key, kind in _META_TYPES.items():
        if not isinstance(meta.get(key), kind):
            raise IndexCorrupt(path, f"sidecar field {key!r} is missing or has the wrong type")
    if meta["space"] not in SPACES or meta["dim"] < 1 or meta["capacity"] < len(meta["ids"]):
        raise IndexCorrupt(path, "sidecar parameters are out of range")
    if not all(row_id is None or isinstance(row_id, str) for row_id in meta["ids"]):
        raise IndexCorrupt(path, "sidecar row ids must be strings")
    return meta
