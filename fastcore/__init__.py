"""rowforge.fastcore: the compiled hot path (Cython) with pure-Python twins.

Public API:

* :class:`Template` renders ``${column}`` prompt templates; :func:`rename_references` rewrites
  references when a column is renamed; :class:`MissingReferenceError` is raised for a column the
  row lacks.
* :func:`rrf` fuses ranked lists with Reciprocal Rank Fusion.
* :class:`AnnIndex` wraps one ``hnswlib`` index (row-id mapping, filtered search, persistence);
  :class:`IndexCorrupt` is raised when a persisted index cannot be trusted. Importing it loads
  numpy and hnswlib, so it is resolved lazily on first access.
* :data:`COMPILED` is ``True`` when the Cython extensions are in use.

Like msgpack, the implementation is chosen once at import time: the compiled extensions when
they are built, else the pure-Python reference in ``rowforge.fastcore._py`` (also the oracle the
tests compare against). Set ``ROWFORGE_PUREPYTHON=1`` to force the pure-Python twins.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import TYPE_CHECKING, Any

from rowforge.fastcore._errors import IndexCorrupt, MissingReferenceError
from rowforge.fastcore._py.template import rename_references

if TYPE_CHECKING:
    from rowforge.fastcore._py.ann import AnnIndex

__all__ = [
    "COMPILED",
    "AnnIndex",
    "IndexCorrupt",
    "MissingReferenceError",
    "Template",
    "rename_references",
    "rrf",
]


def _compiled_available() -> bool:
    if os.environ.get("ROWFORGE_PUREPYTHON") == "1":
        return False
    try:
        from rowforge.fastcore import _rrf, _template  # noqa: F401
    except ImportError:  # not built (or built for another Python): use the twins
        return False
    # find_spec locates ``_ann`` without importing it (importing pulls in numpy and hnswlib).
    return importlib.util.find_spec("rowforge.fastcore._ann") is not None


COMPILED: bool = _compiled_available()
"""True when the Cython extensions are used, False for the pure-Python twins."""

if COMPILED:
    from rowforge.fastcore._rrf import rrf
    from rowforge.fastcore._template import Template
else:
    from rowforge.fastcore._py.rrf import rrf
    from rowforge.fastcore._py.template import Template  # type: ignore[assignment]


def __getattr__(name: str) -> Any:
    # Lazy so that templates and RRF do not pay for importing numpy and hnswlib.
    if name == "AnnIndex":
        module = "rowforge.fastcore._ann" if COMPILED else "rowforge.fastcore._py.ann"
        value = importlib.import_module(module).AnnIndex
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
