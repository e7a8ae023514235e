"""Compiled per-search kernels for the hnswlib glue; the class itself lives in ``_py/ann.py``.

``AnnIndex`` here is the shared class with these kernels swapped in: the finiteness check of
queries, label collection with C-level dict lookups, the allowed-label scan over a byte bitmap
without the GIL, and building the ``(row id, distance)`` result tuples. Typed memoryviews only (no NumPy C-API at build time).
"""

import numpy as np

from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from libc.math cimport isfinite
from libc.stdint cimport int64_t, uint8_t, uint64_t

from rowforge.fastcore._py import ann as _py_ann


cdef extern from "Python.h":
    PyObject* PyDict_GetItemWithError(object mp, object key) except? NULL
    long long PyLong_AsLongLong(PyObject* o) except? -1
    void _incref "Py_INCREF"(object o)


cdef bint all_finite_kernel(const float* values, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if not isfinite(values[i]):
            return False
    return True


def all_finite(const float[:, ::1] q):
    """True when the 2-D float32 array holds no NaN or infinity."""
    cdef Py_ssize_t n = q.shape[0] * q.shape[1]
    if n == 0:
        return True
    return all_finite_kernel(&q[0, 0], n)


cdef Py_ssize_t take_allowed_kernel(
    const uint64_t* labels, Py_ssize_t n, const uint8_t* bitmap, Py_ssize_t bitmap_len,
    Py_ssize_t k, Py_ssize_t* out,
) noexcept nogil:
    """Write the positions of the first ``k`` labels whose bitmap byte is set; return count."""
    cdef Py_ssize_t found = 0
    cdef Py_ssize_t i
    cdef uint64_t label
    for i in range(n):
        if found == k:
            break
        label = labels[i]
        if label < <uint64_t>bitmap_len and bitmap[label]:
            out[found] = i
            found += 1
    return found


def take_allowed(const uint64_t[::1] labels, const uint8_t[::1] bitmap, Py_ssize_t k):
    """Positions of the first ``k`` entries of ``labels`` whose ``bitmap`` byte is set."""
    cdef Py_ssize_t n = labels.shape[0]
    out = np.empty(max(0, min(k, n)), dtype=np.intp)
    cdef Py_ssize_t[::1] positions = out
    cdef Py_ssize_t found = 0
    if n and k > 0 and bitmap.shape[0]:
        with nogil:
            found = take_allowed_kernel(
                &labels[0], n, &bitmap[0], bitmap.shape[0], k, &positions[0]
            )
    return out[:found]


def collect_labels(allowed, dict label_of):
    """Labels of the ``allowed`` row ids that are in the index (unknown ids are skipped)."""
    cdef Py_ssize_t capacity = len(allowed)
    out = np.empty(capacity, dtype=np.int64)
    cdef int64_t[::1] labels = out
    cdef Py_ssize_t n = 0
    cdef PyObject* found
    for row_id in allowed:
        found = PyDict_GetItemWithError(label_of, row_id)
        if found == NULL:
            continue
        if n == capacity:
            raise RuntimeError("allowed changed size during iteration")
        labels[n] = PyLong_AsLongLong(found)
        n += 1
    return out[:n]


def to_results(const uint64_t[::1] labels, const float[::1] distances, list id_of):
    """``(row id, distance)`` pairs for parallel label and distance arrays."""
    cdef Py_ssize_t n = labels.shape[0]
    if distances.shape[0] != n:
        raise ValueError("labels and distances differ in length")
    cdef list results = [None] * n
    cdef Py_ssize_t i
    cdef object pair
    cdef object row_id
    cdef object distance
    for i in range(n):
        row_id = id_of[<Py_ssize_t>labels[i]]
        distance = <double>distances[i]
        pair = PyTuple_New(2)
        _incref(row_id)
        PyTuple_SET_ITEM(pair, 0, row_id)
        _incref(distance)
        PyTuple_SET_ITEM(pair, 1, distance)
        results[i] = pair
    return results


class AnnIndex(_py_ann.AnnIndex):
    __doc__ = _py_ann.AnnIndex.__doc__

    _all_finite = staticmethod(all_finite)
    _collect_labels = staticmethod(collect_labels)
    _take_allowed = staticmethod(take_allowed)
    _to_results = staticmethod(to_results)
