"""Compiled ``${column}`` templates; same behaviour as ``_py/template.py`` (the oracle).

Rendering does less work than a Python join: the template is parsed once into literal and
reference segments, values are looked up with C-level dict access, the output length and widest
character kind are computed first, and every piece is copied into one preallocated string.
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from libc.string cimport memcpy

from rowforge.fastcore._errors import MissingReferenceError


cdef extern from "Python.h":
    # Borrowed reference; NULL with no exception set means "missing".
    PyObject* PyDict_GetItemWithError(object mp, object key) except? NULL
    bint PyDict_CheckExact(object o)
    bint PyUnicode_Check(PyObject* o)
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    Py_ssize_t PyUnicode_GET_LENGTH(PyObject* o)
    int PyUnicode_KIND(PyObject* o)
    void* PyUnicode_DATA(PyObject* o)
    Py_UCS4 PyUnicode_MAX_CHAR_VALUE(PyObject* o)
    Py_ssize_t PyUnicode_CopyCharacters(
        object to, Py_ssize_t to_start, object from_, Py_ssize_t from_start, Py_ssize_t how_many
    ) except -1
    PyObject* PyObject_Str(PyObject* o) except NULL
    void _incref "Py_INCREF"(PyObject* o)
    void _decref "Py_DECREF"(PyObject* o)
    void _xdecref "Py_XDECREF"(PyObject* o)


cdef extern from *:
    """
    #if PY_VERSION_HEX >= 0x030C0000
    #define rf_unicode_ready(o) 0
    #else
    #define rf_unicode_ready(o) PyUnicode_READY(o)
    #endif
    """
    # Python 3.11 may still hold legacy (wstr) strings whose kind/data need readying.
    int rf_unicode_ready(PyObject* o) except -1


cdef enum:
    STACK_VALUES = 32

cdef str _EMPTY = ""


cdef tuple _parse(str text):
    """Split ``text`` into (literals, names); see ``_py/template.py`` for the syntax."""
    cdef Py_ssize_t n = len(text)
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t run = 0  # start of the pending run of plain text
    cdef Py_ssize_t close
    cdef Py_UCS4 c
    cdef list literals = []
    cdef list names = []
    cdef list pending = []
    while i < n:
        c = text[i]
        if c == u"\\" and i + 2 < n and text[i + 1] == u"$" and text[i + 2] == u"{":
            pending.append(text[run:i])
            pending.append("${")
            i += 3
            run = i
        elif c == u"$" and i + 1 < n and text[i + 1] == u"{":
            close = text.find("}", i + 2)
            if close > i + 2 and text.find("{", i + 2, close) < 0:
                pending.append(text[run:i])
                literals.append("".join(pending))
                pending = []
                names.append(text[i + 2:close])
                i = close + 1
                run = i
            else:
                i += 2  # not a reference: the "${" stays literal text
        else:
            i += 1
    pending.append(text[run:])
    literals.append("".join(pending))
    return literals, names


cdef inline int _copy_into(object out, char* out_data, int out_kind, Py_ssize_t at,
                           PyObject* piece, Py_ssize_t length) except -1:
    if length == 0:
        return 0
    if PyUnicode_KIND(piece) == out_kind:
        memcpy(out_data + at * out_kind, PyUnicode_DATA(piece), <size_t>(length * out_kind))
    else:
        # Narrower piece into a wider buffer: CPython widens the characters for us.
        PyUnicode_CopyCharacters(out, at, <object>piece, 0, length)
    return 0


cdef class Template:
    """A ``${column}`` template parsed once and rendered many times (compiled).

    Syntax: ``${name}`` references the column ``name``, taken exactly as written between the
    braces (``${ name }`` is the column ``" name "``); it must be non-empty and hold no ``{``.
    ``\\${`` renders a literal ``${``. A ``${`` that starts no valid reference (unterminated,
    empty ``${}``, a ``{`` inside) is literal text. Values render as: ``str`` (and subclasses)
    as is, ``None`` as ``""``, anything else as ``str(value)`` (``True`` renders ``"True"``).

    Args:
        text: The template source.

    Raises:
        TypeError: ``text`` is not a str.
    """

    cdef readonly str text
    cdef tuple _literals  # n_refs + 1 exact str objects
    cdef tuple _unique  # distinct names, in order of first appearance
    cdef Py_ssize_t _n_refs
    cdef Py_ssize_t _n_unique
    cdef Py_ssize_t _literal_length
    cdef Py_UCS4 _literal_maxchar
    cdef PyObject** _lit  # borrowed from _literals
    cdef PyObject** _uniq  # borrowed from _unique
    cdef Py_ssize_t* _slot  # reference i -> index into _unique

    def __cinit__(self):
        self._lit = NULL
        self._uniq = NULL
        self._slot = NULL

    def __init__(self, text):
        cdef Py_ssize_t i
        cdef PyObject* piece
        if not isinstance(text, str):
            raise TypeError(f"template text must be str, not {type(text).__name__}")
        literals, names = _parse(text)
        unique = list(dict.fromkeys(names))
        slot_of = {name: i for i, name in enumerate(unique)}
        self.text = text
        self._literals = tuple(literals)
        self._unique = tuple(unique)
        self._n_refs = len(names)
        self._n_unique = len(unique)
        # __init__ may run again on the same object: release the previous arrays first.
        PyMem_Free(self._lit)
        PyMem_Free(self._uniq)
        PyMem_Free(self._slot)
        self._lit = self._uniq = NULL
        self._slot = NULL
        self._lit = <PyObject**>PyMem_Malloc((self._n_refs + 1) * sizeof(PyObject*))
        self._uniq = <PyObject**>PyMem_Malloc((self._n_unique + 1) * sizeof(PyObject*))
        self._slot = <Py_ssize_t*>PyMem_Malloc((self._n_refs + 1) * sizeof(Py_ssize_t))
        if self._lit == NULL or self._uniq == NULL or self._slot == NULL:
            raise MemoryError()
        self._literal_length = 0
        self._literal_maxchar = 127
        for i in range(self._n_refs + 1):
            piece = <PyObject*>self._literals[i]
            self._lit[i] = piece
            self._literal_length += PyUnicode_GET_LENGTH(piece)
            self._literal_maxchar = max(self._literal_maxchar, PyUnicode_MAX_CHAR_VALUE(piece))
        for i in range(self._n_unique):
            self._uniq[i] = <PyObject*>self._unique[i]
        for i in range(self._n_refs):
            self._slot[i] = slot_of[names[i]]

    def __dealloc__(self):
        PyMem_Free(self._lit)
        PyMem_Free(self._uniq)
        PyMem_Free(self._slot)

    @property
    def references(self):
        """Referenced column names in order of first appearance, without duplicates."""
        return list(self._unique)

    def render(self, row):
        """Substitute every reference with its value in ``row``.

        Raises:
            MissingReferenceError: ``row`` has no key for a referenced column.
        """
        cdef PyObject* stack_values[STACK_VALUES]
        cdef PyObject** values = stack_values
        cdef Py_ssize_t n_held = 0
        cdef Py_ssize_t i
        cdef Py_ssize_t total
        cdef Py_ssize_t at
        cdef Py_UCS4 maxchar = self._literal_maxchar
        cdef PyObject* value
        cdef PyObject* text
        cdef object out
        cdef char* data
        cdef int kind
        cdef bint exact_dict = PyDict_CheckExact(row)

        if self._lit == NULL:  # __new__ without __init__, or an __init__ that ran out of memory
            raise ValueError("Template is not initialised")
        if self._n_refs == 0:
            return self._literals[0]
        if self._n_unique > STACK_VALUES:
            values = <PyObject**>PyMem_Malloc(self._n_unique * sizeof(PyObject*))
            if values == NULL:
                raise MemoryError()
        try:
            # 1. Look up and stringify each distinct value once; hold a reference to each.
            for i in range(self._n_unique):
                if exact_dict:
                    value = PyDict_GetItemWithError(row, <object>self._uniq[i])
                    if value == NULL:
                        raise MissingReferenceError(<object>self._uniq[i])
                    _incref(value)
                else:
                    try:
                        item = row[<object>self._uniq[i]]
                    except KeyError:
                        raise MissingReferenceError(<object>self._uniq[i]) from None
                    value = <PyObject*>item
                    _incref(value)
                    item = None
                values[n_held] = value
                n_held += 1
                if not PyUnicode_Check(value):
                    if value == <PyObject*>None:
                        text = <PyObject*>_EMPTY
                        _incref(text)
                    else:
                        text = PyObject_Str(value)
                    values[i] = text
                    _decref(value)
                rf_unicode_ready(values[i])
                maxchar = max(maxchar, PyUnicode_MAX_CHAR_VALUE(values[i]))
            # 2. Size the output once, 3. copy every piece into it.
            total = self._literal_length
            for i in range(self._n_refs):
                total += PyUnicode_GET_LENGTH(values[self._slot[i]])
            out = PyUnicode_New(total, maxchar)
            kind = PyUnicode_KIND(<PyObject*>out)
            data = <char*>PyUnicode_DATA(<PyObject*>out)
            _copy_into(out, data, kind, 0, self._lit[0], PyUnicode_GET_LENGTH(self._lit[0]))
            at = PyUnicode_GET_LENGTH(self._lit[0])
            for i in range(self._n_refs):
                value = values[self._slot[i]]
                _copy_into(out, data, kind, at, value, PyUnicode_GET_LENGTH(value))
                at += PyUnicode_GET_LENGTH(value)
                _copy_into(out, data, kind, at, self._lit[i + 1],
                           PyUnicode_GET_LENGTH(self._lit[i + 1]))
                at += PyUnicode_GET_LENGTH(self._lit[i + 1])
            return out
        finally:
            for i in range(n_held):
                _decref(values[i])
            if values != stack_values:
                PyMem_Free(values)

    def __repr__(self):
        return f"Template({self.text!r})"

    def __reduce__(self):
        return (type(self), (self.text,))
