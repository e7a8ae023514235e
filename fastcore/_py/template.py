"""Pure-Python reference for ``${column}`` prompt templates (the oracle for ``_template.pyx``).

Syntax, scanned left to right:

* ``${name}`` is a reference. ``name`` is everything up to the first ``}``, taken exactly
  (``${ name }`` references the column ``" name "``). It must be non-empty and contain no ``{``.
* ``\\${`` is an escape and renders a literal ``${``. A backslash before anything else is kept
  as is, so there is no way (and no need) to escape a backslash.
* A ``${`` that does not start a valid reference (no closing ``}``, empty ``${}``, or a ``{``
  before the ``}``) is literal text; scanning resumes right after that ``${``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from rowforge.fastcore._errors import MissingReferenceError

_SPECIAL = re.compile(r"\\\$\{|\$\{")


class Token(NamedTuple):
    """One piece of a template: text, an escape, or a reference, with its source span."""

    kind: str  # "text" | "escape" | "ref"
    start: int
    end: int
    value: str  # rendered text for "text"/"escape", the column name for "ref"


def tokenize(text: str) -> Iterator[Token]:
    """Split ``text`` into tokens that cover it exactly, in order."""
    pos = 0
    scan = 0
    while (match := _SPECIAL.search(text, scan)) is not None:
        start = match.start()
        if match.group() == "\\${":
            if start > pos:
                yield Token("text", pos, start, text[pos:start])
            yield Token("escape", start, start + 3, "${")
            pos = scan = start + 3
            continue
        close = text.find("}", start + 2)
        name = text[start + 2 : close] if close >= 0 else ""
        if not name or "{" in name:
            scan = start + 2  # literal "${": stays part of the pending text
            continue
        if start > pos:
            yield Token("text", pos, start, text[pos:start])
        yield Token("ref", start, close + 1, name)
        pos = scan = close + 1
    if pos < len(text):
        yield Token("text", pos, len(text), text[pos:])


def parse(text: str) -> tuple[list[str], list[str]]:
    """Return ``(literals, names)`` with ``len(literals) == len(names) + 1``.

    The rendered output is ``literals[0] + value(names[0]) + literals[1] + ...``.
    """
    literals: list[str] = []
    names: list[str] = []
    pending: list[str] = []
    for token in tokenize(text):
        if token.kind == "ref":
            literals.append("".join(pending))
            pending = []
            names.append(token.value)
        else:
            pending.append(token.value)
    literals.append("".join(pending))
    return literals, names


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return str(value)


class Template:
    """A ``${column}`` template parsed once and rendered many times.

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

    __slots__ = ("_literals", "_names", "_references", "text")

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"template text must be str, not {type(text).__name__}")
        self.text = text
        self._literals, self._names = parse(text)
        self._references = list(dict.fromkeys(self._names))

    @property
    def references(self) -> list[str]:
        """Referenced column names in order of first appearance, without duplicates."""
        return list(self._references)

    def render(self, row: Mapping[str, Any]) -> str:
        """Substitute every reference with its value in ``row``.

        Raises:
            MissingReferenceError: ``row`` has no key for a referenced column.
        """
        literals = self._literals
        out = [literals[0]]
        for i, name in enumerate(self._names):
            try:
                value = row[name]
            except KeyError:
                raise MissingReferenceError(name) from None
            out.append(_to_text(value))
            out.append(literals[i + 1])
        return "".join(out)

    def __repr__(self) -> str:
        return f"Template({self.text!r})"

    def __reduce__(self) -> tuple[type[Template], tuple[str]]:
        return (type(self), (self.text,))


def rename_references(text: str, mapping: Mapping[str, str]) -> str:
    """Rewrite ``${old}`` to ``${new}`` for every ``old -> new`` in ``mapping``.

    Escapes, literal ``${`` and unmapped references are left byte for byte as they were.

    Raises:
        ValueError: A new name could not be referenced (empty, or contains ``{`` or ``}``).
    """
    for new in mapping.values():
        if not new or "{" in new or "}" in new:
            raise ValueError(f"cannot reference column {new!r}: names need no braces, not empty")
    out: list[str] = []
    for token in tokenize(text):
        if token.kind == "ref" and token.value in mapping:
            out.append("${" + mapping[token.value] + "}")
        else:
            out.append(text[token.start : token.end])
    return "".join(out)
