"""Compiled Reciprocal Rank Fusion; same results as ``_py/rrf.py`` (the oracle), bit for bit.

Ids are interned to small ints in one pass through an open-addressing table (exact ``str``
hashes read from their cache), scores accumulate in C arrays in the same order as the
reference (so the doubles are identical), and the top ``k`` are selected with a bounded heap in
C without the GIL.
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from libc.math cimport INFINITY
from libc.stdint cimport int32_t

from rowforge.fastcore._py import rrf as _py_rrf
from rowforge.fastcore._py.rrf import check_args


cdef extern from "Python.h":
    ctypedef struct PyASCIIObject:
        Py_hash_t hash
    void* PyMem_Calloc(size_t nelem, size_t elsize)
    Py_hash_t PyObject_Hash(PyObject* o) except? -1
    int PyObject_RichCompareBool(PyObject* a, PyObject* b, int op) except -1
    int Py_EQ
    object PySequence_Fast(object o, const char* message)
    Py_ssize_t PySequence_Fast_GET_SIZE(object o)
    PyObject** PySequence_Fast_ITEMS(object o)
    bint PyUnicode_CheckExact(object o)
    bint PyLong_CheckExact(object o)


cdef struct Candidate:
    double score
    Py_ssize_t best_rank  # smallest rank over all lists, from 1
    Py_ssize_t order  # first appearance; unique, so the ordering is total


cdef inline bint candidate_better(const Candidate* a, const Candidate* b) noexcept nogil:
    """Higher score, then smaller best rank, then earlier first appearance."""
    if a.score != b.score:
        return a.score > b.score
    if a.best_rank != b.best_rank:
        return a.best_rank < b.best_rank
    return a.order < b.order


cdef inline void _sift_down(Candidate* heap, Py_ssize_t size, Py_ssize_t i) noexcept nogil:
    # ``heap`` keeps its worst candidate at the root.
    cdef Py_ssize_t child
    cdef Candidate moving = heap[i]
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and candidate_better(&heap[child], &heap[child + 1]):
            child += 1  # the worse of the two children
        if candidate_better(&heap[child], &moving):
            break
        heap[i] = heap[child]
        i = child
    heap[i] = moving


cdef Py_ssize_t select_top(const double* score, const Py_ssize_t* best_rank, Py_ssize_t m,
                           Candidate* heap, Py_ssize_t h) noexcept nogil:
    """Write the ``min(h, m)`` best of candidates ``0..m-1`` into ``heap``, best first.

    ``heap`` must hold ``h`` entries. Bounded worst-at-root heap, O(m log h), then an in-place
    heap sort. Returns the number of entries written.
    """
    cdef Py_ssize_t size = 0
    cdef Py_ssize_t i
    cdef Py_ssize_t j
    cdef Py_ssize_t parent
    cdef Candidate c
    cdef Candidate tmp
    for i in range(m):
        if size == h and score[i] < heap[0].score:
            continue  # cheap reject: most candidates lose on score alone
        c.score = score[i]
        c.best_rank = best_rank[i]
        c.order = i
        if size < h:
            # Sift up: the new candidate rises while it is worse than its parent.
            heap[size] = c
            j = size
            size += 1
            while j > 0:
                parent = (j - 1) // 2
                if not candidate_better(&heap[parent], &heap[j]):
                    break
                tmp = heap[parent]
                heap[parent] = heap[j]
                heap[j] = tmp
                j = parent
        elif candidate_better(&c, &heap[0]):
            heap[0] = c
            _sift_down(heap, size, 0)
    # Heap sort: moving the worst to the end each time leaves the array best first.
    i = size - 1
    while i > 0:
        tmp = heap[0]
        heap[0] = heap[i]
        heap[i] = tmp
        _sift_down(heap, i, 0)
        i -= 1
    return size


cdef inline bint _plain(PyObject* o) noexcept:
    # Exact str and int hash and compare in C: no Python code can run while we hold pointers.
    return PyUnicode_CheckExact(<object>o) or PyLong_CheckExact(<object>o)


def rrf(ranked_lists, k=60, weights=None, top_k=10):
    # The docstring is the reference's, assigned below.
    cdef list seqs = [PySequence_Fast(ranked, b"each ranked list must be iterable")
                      for ranked in ranked_lists]
    cdef Py_ssize_t n_lists = len(seqs)
    cdef double k_c
    cdef list ws = None  # None: every weight is 1
    cdef object top = top_k
    if (
        weights is None
        and (type(k) is float or type(k) is int)
        and 0 <= k < INFINITY
        and (top_k is None or (type(top_k) is int and top_k >= 1))
    ):
        k_c = k  # the common call, validated without a Python-level call
    else:
        kk, ws, top = check_args(n_lists, k, weights, top_k)
        k_c = kk
    cdef Py_ssize_t total = 0
    cdef Py_ssize_t li
    cdef Py_ssize_t r
    cdef Py_ssize_t n
    cdef PyObject** items
    cdef bint all_plain = True
    for li in range(n_lists):
        seq = seqs[li]
        n = PySequence_Fast_GET_SIZE(seq)
        total += n
        if all_plain:
            items = PySequence_Fast_ITEMS(seq)
            for r in range(n):
                if not _plain(items[r]):
                    all_plain = False
                    break
    if not all_plain:
        # Some id's __hash__/__eq__ is Python code that could mutate a caller's list while we
        # hold pointers into it: work on immutable copies instead.
        seqs = [tuple(seq) if type(seq) is list else seq for seq in seqs]
    if total == 0:
        return []
    if total >= (1 << 30):
        raise OverflowError("rrf() supports up to 2**30 ranked ids in total")

    # Intern ids to 0..m-1 in order of first appearance through an open-addressing table of
    # int32 slots (cheaper than a dict: no int objects, no resizing, little zeroed memory).
    # Keys are borrowed: ``seqs`` holds every id for the whole call.
    cdef int bits = 3
    while (<Py_ssize_t>1 << bits) < 2 * total:
        bits += 1
    cdef size_t mask = ((<size_t>1) << bits) - 1
    cdef int shift = <int>(sizeof(size_t) * 8) - bits
    cdef int32_t* slots = <int32_t*>PyMem_Calloc(mask + 1, sizeof(int32_t))  # idx + 1; 0: empty
    # Per interned id: hash, key, score, best rank, last list seen in.
    cdef char* block = <char*>PyMem_Malloc(
        total * (sizeof(Py_hash_t) + sizeof(PyObject*) + sizeof(double) + 2 * sizeof(Py_ssize_t)))
    if slots == NULL or block == NULL:
        PyMem_Free(slots)
        PyMem_Free(block)
        raise MemoryError()
    cdef Py_hash_t* id_hash = <Py_hash_t*>block
    cdef PyObject** id_key = <PyObject**>(id_hash + total)
    cdef double* score = <double*>(id_key + total)
    cdef Py_ssize_t* best_rank = <Py_ssize_t*>(score + total)
    cdef Py_ssize_t* last_list = best_rank + total
    cdef Candidate* heap = NULL
    cdef Py_ssize_t m = 0
    cdef Py_ssize_t h
    cdef Py_ssize_t idx = -1
    cdef Py_ssize_t written
    cdef Py_hash_t hash_
    cdef size_t slot
    cdef double w
    cdef PyObject* item
    try:
        for li in range(n_lists):
            seq = seqs[li]
            n = PySequence_Fast_GET_SIZE(seq)
            items = PySequence_Fast_ITEMS(seq)
            w = 1.0 if ws is None else ws[li]
            for r in range(1, n + 1):
                item = items[r - 1]
                if PyUnicode_CheckExact(<object>item):
                    hash_ = (<PyASCIIObject*>item).hash  # cached after the first hash
                    if hash_ == -1:
                        hash_ = PyObject_Hash(item)
                else:
                    hash_ = PyObject_Hash(item)
                slot = (<size_t>hash_ * <size_t>0x9E3779B97F4A7C15ULL) >> shift
                while True:
                    idx = slots[slot] - 1
                    if idx < 0:
                        break
                    if id_key[idx] == item or (
                        id_hash[idx] == hash_
                        and PyObject_RichCompareBool(id_key[idx], item, Py_EQ)
                    ):
                        break
                    slot = (slot + 1) & mask
                if idx < 0:
                    idx = m
                    m += 1
                    id_key[idx] = item
                    id_hash[idx] = hash_
                    slots[slot] = <int32_t>(idx + 1)
                    score[idx] = 0.0
                    best_rank[idx] = r
                else:
                    if last_list[idx] == li:
                        continue  # repeated within this list: only its best rank counts
                    if r < best_rank[idx]:
                        best_rank[idx] = r
                last_list[idx] = li
                score[idx] += w / (k_c + <double>r)

        h = m if top is None or top > m else top
        heap = <Candidate*>PyMem_Malloc(h * sizeof(Candidate))
        if heap == NULL:
            raise MemoryError()
        with nogil:
            written = select_top(score, best_rank, m, heap, h)
        return [(<object>id_key[heap[r].order], heap[r].score) for r in range(written)]
    finally:
        PyMem_Free(heap)
        PyMem_Free(slots)
        PyMem_Free(block)


rrf.__doc__ = _py_rrf.rrf.__doc__
