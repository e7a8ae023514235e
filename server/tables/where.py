"""The ``where`` filter: the seeds' SQL-like syntax parsed by sqlglot, checked against the
table's columns, and compiled to a parameterised SQLAlchemy expression.

Accepted: ``"col" = 'v'`` (double-quoted columns, single-quoted strings; bare column names
too), ``= != <> < <= > >=``, ``LIKE`` / ``ILIKE`` (and ``NOT LIKE``), ``IN (...)`` /
``NOT IN``, ``IS [NOT] NULL``, ``IS [NOT] TRUE/FALSE``, ``BETWEEN``, ``AND`` / ``OR`` /
``NOT``, parentheses, numbers, strings, ``TRUE`` / ``FALSE``, and a bool column alone as a
condition. Everything else (functions, subqueries, casts, several statements, comments, ...)
is refused with INVALID_ARGUMENT before anything reaches the database; literal values only
ever travel as bound parameters.

Comparisons are typed: int/float columns compare with numbers, str/file columns with strings,
bool columns with TRUE/FALSE, ``"Updated at"`` with ISO 8601 timestamps; a mismatch is
INVALID_ARGUMENT naming the column. ``LIKE`` is case-sensitive on both databases (on SQLite it
is compiled to ``GLOB``); ``ILIKE`` ignores ASCII case. Backslash escapes ``%`` and ``_``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import sqlglot
from sqlglot import exp

from rowforge.server.errors import InvalidArgument
from rowforge.server.tables.layout import ROW_ID, UPDATED_AT, value_name
from rowforge.server.tables.model import (
    EMBEDDING_DTYPE,
    FILE_DTYPES,
    ID_COLUMN,
    UPDATED_AT_COLUMN,
    TableSchema,
)

MAX_WHERE_CHARS = 10_000
MAX_DEPTH = 64
MAX_IN_ITEMS = 1000
FIELD = "where"
_INT = re.compile(r"[0-9]+")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _bad(description: str, **metadata: Any) -> InvalidArgument:
    return InvalidArgument.field(FIELD, description, reason="INVALID_WHERE", metadata=metadata)


@dataclass(frozen=True)
class _Col:
    """A column operand: its SQL expression and comparison kind."""

    name: str
    expr: sa.ColumnElement[Any]
    kind: str  # "text" | "int" | "float" | "bool" | "time"


@dataclass(frozen=True)
class _Lit:
    """A literal operand (``value`` is str, int, float, bool or None)."""

    value: Any
    sql: str


def _kind(dtype: str) -> str:
    if dtype in {"int", "float", "bool"}:
        return dtype
    if dtype == "str" or dtype in FILE_DTYPES:
        return "text"
    return "unsupported"


def parse(where: str) -> exp.Expression:
    """Parse a where string into a sqlglot tree (no schema checks).

    Raises:
        InvalidArgument: empty, too long, unparsable, several statements, or comments.
    """
    if not where.strip():
        raise _bad("must not be empty")
    if len(where) > MAX_WHERE_CHARS:
        raise _bad(f"must be at most {MAX_WHERE_CHARS} characters")
    try:
        statements = sqlglot.parse(where, read="postgres")
    except RecursionError:
        raise _bad("is too deeply nested") from None
    except Exception as exc:  # sqlglot raises ParseError, TokenError and assorted others
        raise _bad(f"cannot be parsed: {_describe(exc)}. Use the form "
                   "\"column\" = 'value' (double-quoted columns, single-quoted strings)") from None
    statements = [s for s in statements if s is not None]
    if len(statements) != 1:
        raise _bad("must be a single condition (';' is not allowed)")
    tree = statements[0]
    assert isinstance(tree, exp.Expression)
    for node in tree.walk():
        if node.comments:
            raise _bad("comments are not allowed")
    return tree


_SYMBOLS = {"GT": ">", "GTE": ">=", "LT": "<", "LTE": "<=", "EQ": "=", "NEQ": "<>", "AND": "AND",
            "OR": "OR", "NOT": "NOT", "LIKE": "LIKE", "ILIKE": "ILIKE", "IN": "IN", "IS": "IS",
            "ADD": "+", "SUB": "-", "MUL": "*", "DIV": "/", "BETWEEN": "BETWEEN"}
_OPERATOR = re.compile(r"Required keyword: '(this|expression)' missing for <class '[\w.]*\.(\w+)'>")


def _describe(exc: Exception) -> str:
    """A parse failure in our words: sqlglot's own messages name its internal classes
    (``Required keyword: 'this' missing for <class 'sqlglot.expressions.core.And'>``)."""
    errors = getattr(exc, "errors", None) or []
    if not errors:  # TokenError: the text could not even be split into words
        return "an unterminated quote or a character that cannot start a word"
    first = errors[0]
    where = f"at character {first.get('col')}" if first.get("col") else "here"
    near = (first.get("highlight") or "").strip()
    near = f" (near {near[:40]!r})" if near else ""
    description = first.get("description") or ""
    operator = _OPERATOR.match(description)
    if operator and operator.group(2).upper() == "PAREN":
        return f"a '(' has nothing inside {where}{near}"
    if operator:
        side = "left" if operator.group(1) == "this" else "right"
        symbol = _SYMBOLS.get(operator.group(2).upper())
        what = f"'{symbol}'" if symbol else "an operator"
        return f"{what} has nothing on its {side} {where}{near}"
    if description.startswith("Expecting )"):
        return f"a '(' is never closed ({where}{near})"
    return f"unexpected text {where}{near}"


def compile_where(where: str, schema: TableSchema, table: sa.Table,
                  dialect: str) -> sa.ColumnElement[bool]:
    """Compile ``where`` into a boolean SQLAlchemy expression over ``table``.

    Args:
        where: The filter, e.g. ``"status" = 'active' AND "n" > 3``.
        schema: The table's schema (column ids and dtypes).
        table: Its SQL table (:func:`rowforge.server.tables.layout.row_table`).
        dialect: ``"sqlite"`` or ``"postgresql"`` (LIKE is compiled per dialect).

    Raises:
        InvalidArgument: field ``where``, naming the offending column or construct.
    """
    key = (schema.storage_id, schema.version, _layout(schema), where, dialect)
    compiled = _compiled.get(key)
    if compiled is None:
        compiled = _Compiler(schema, table, dialect).predicate(parse(where), 0)
        if len(_compiled) >= _CACHE_SIZE:
            _compiled.pop(next(iter(_compiled)))
        _compiled[key] = compiled
    return compiled


#: Compiled filters by table layout and text: dashboards repeat the same few filters, and
#: SQLAlchemy expressions are immutable, so they can be shared.
_compiled: dict[tuple[Any, ...], sa.ColumnElement[bool]] = {}
_CACHE_SIZE = 512


def _layout(schema: TableSchema) -> tuple[tuple[str, str, str], ...]:
    return tuple((c.id, c.storage_name, c.dtype) for c in schema.columns)


class _Compiler:
    def __init__(self, schema: TableSchema, table: sa.Table, dialect: str) -> None:
        self.schema = schema
        self.table = table
        self.dialect = dialect

    # -- operands --------------------------------------------------------------------------

    def column(self, node: exp.Column) -> _Col:
        if node.args.get("table") is not None or not isinstance(node.this, exp.Identifier):
            raise _bad(f"{node.sql()!r} is not a column; quote column names like \"my column\"")
        name = node.this.this
        if name == ID_COLUMN:
            return _Col(name, self.table.c[ROW_ID], "text")
        if name == UPDATED_AT_COLUMN:
            return _Col(name, self.table.c[UPDATED_AT], "time")
        col = self.schema.column(name)
        if col is None:
            valid = ", ".join(repr(c) for c in [ID_COLUMN, UPDATED_AT_COLUMN,
                                                *(c.id for c in self.schema.columns
                                                  if c.dtype != EMBEDDING_DTYPE)])
            raise _bad(f"unknown column {name!r}; valid columns: {valid}", column=name)
        kind = _kind(col.dtype)
        if kind == "unsupported":
            raise _bad(f"column {name!r} ({col.dtype}) cannot be filtered", column=name)
        return _Col(name, self.table.c[value_name(col)], kind)

    def operand(self, node: exp.Expression) -> _Col | _Lit:
        if isinstance(node, exp.Paren):
            return self.operand(node.this)
        if isinstance(node, exp.Column):
            return self.column(node)
        if isinstance(node, exp.Literal):
            if node.is_string:
                return _Lit(node.this, node.sql())
            return _Lit(_number(node.this), node.sql())
        if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) \
                and not node.this.is_string:
            return _Lit(-_number(node.this.this), node.sql())
        if isinstance(node, exp.Boolean):
            return _Lit(bool(node.this), node.sql())
        if isinstance(node, exp.Null):
            return _Lit(None, "NULL")
        raise _unsupported(node)

    def value_for(self, col: _Col, lit: _Lit) -> Any:
        """``lit`` converted for comparison with ``col``, or INVALID_ARGUMENT."""
        value = lit.value
        if value is None:
            raise _bad(f"compare column {col.name!r} with NULL using IS NULL / IS NOT NULL",
                       column=col.name)
        if col.kind == "text":
            if not isinstance(value, str):
                raise _bad(f"column {col.name!r} holds text: compare it with a quoted string "
                           f"like '{lit.sql}', not {lit.sql}", column=col.name)
            return value
        if col.kind in {"int", "float"}:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _bad(f"column {col.name!r} holds numbers ({col.kind}): compare it with a "
                           f"number, not {lit.sql}", column=col.name)
            return value
        if col.kind == "bool":
            if not isinstance(value, bool):
                raise _bad(f"column {col.name!r} holds booleans: compare it with TRUE or FALSE, "
                           f"not {lit.sql}", column=col.name)
            return value
        # time: "Updated at"
        if not isinstance(value, str):
            raise _bad(f"compare {col.name!r} with an ISO 8601 timestamp string such as "
                       f"'2025-01-31T12:00:00Z', not {lit.sql}", column=col.name)
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            raise _bad(f"{lit.sql} is not an ISO 8601 timestamp (e.g. '2025-01-31T12:00:00Z')",
                       column=col.name) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return (when - _EPOCH) // dt.timedelta(microseconds=1)

    def bind(self, col: _Col, lit: _Lit) -> sa.BindParameter[Any]:
        value = _fit(col, self.value_for(col, lit))
        return sa.bindparam(None, value, type_=_bind_type(col, [value]))

    # -- predicates ------------------------------------------------------------------------

    def predicate(self, node: exp.Expression, depth: int) -> sa.ColumnElement[bool]:
        if depth > MAX_DEPTH:
            raise _bad("is too deeply nested")
        depth += 1
        if isinstance(node, exp.Paren):
            return self.predicate(node.this, depth)
        if isinstance(node, exp.And):
            return sa.and_(self.predicate(node.this, depth), self.predicate(node.expression, depth))
        if isinstance(node, exp.Or):
            return sa.or_(self.predicate(node.this, depth), self.predicate(node.expression, depth))
        if isinstance(node, exp.Not):
            return sa.not_(self.predicate(node.this, depth))
        if isinstance(node, exp.Boolean):
            return sa.true() if node.this else sa.false()
        if isinstance(node, exp.Column):
            col = self.column(node)
            if col.kind != "bool":
                raise _bad(f"column {col.name!r} is not a bool column; compare it with a value",
                           column=col.name)
            return col.expr == sa.true()
        if isinstance(node, (exp.EQ, exp.NEQ, exp.LT, exp.LTE, exp.GT, exp.GTE)):
            return self.comparison(node)
        if isinstance(node, (exp.Like, exp.ILike)):
            return self.like(node)
        if isinstance(node, exp.In):
            return self.in_list(node)
        if isinstance(node, exp.Is):
            return self.is_(node)
        if isinstance(node, exp.Between):
            return self.between(node)
        raise _unsupported(node)

    def comparison(self, node: exp.Expression) -> sa.ColumnElement[bool]:
        op: type[exp.Expression] = type(node)
        left, right = self.operand(node.this), self.operand(node.expression)
        if isinstance(left, _Lit) and isinstance(right, _Col):
            left, right, op = right, left, _FLIPPED[op]
        if not isinstance(left, _Col):
            raise _bad(f"{node.sql()!r} compares two values; compare a column with a value")
        if isinstance(right, _Col):
            numeric = {"int", "float"}
            if left.kind != right.kind and not {left.kind, right.kind} <= numeric:
                raise _bad(f"cannot compare column {left.name!r} ({left.kind}) with column "
                           f"{right.name!r} ({right.kind})", column=left.name)
            a, b = left.expr, right.expr
        else:
            a, b = left.expr, self.bind(left, right)
        if left.kind == "text" and op in _ORDERING and self.dialect == "postgresql":
            a = a.collate("C")  # same order as SQLite's binary collation
        return _OPS[op](a, b)

    def like(self, node: exp.Like | exp.ILike) -> sa.ColumnElement[bool]:
        col, pattern = self.operand(node.this), self.operand(node.expression)
        word = "ILIKE" if isinstance(node, exp.ILike) else "LIKE"
        if not isinstance(col, _Col) or col.kind != "text":
            raise _bad(f"{word} needs a text column on its left")
        if not isinstance(pattern, _Lit) or not isinstance(pattern.value, str):
            raise _bad(f"{word} needs a quoted string pattern on its right", column=col.name)
        text = pattern.value
        if _ends_with_escape(text):
            raise _bad(f"{word} pattern {pattern.sql} ends with an escape character (\\)",
                       column=col.name)
        if self.dialect == "sqlite":
            if isinstance(node, exp.ILike):
                out = col.expr.like(sa.bindparam(None, text, type_=sa.Text()), escape="\\")
            else:
                out = col.expr.op("GLOB")(sa.bindparam(None, _like_to_glob(text),
                                                       type_=sa.Text()))
        elif isinstance(node, exp.ILike):
            out = col.expr.ilike(sa.bindparam(None, text, type_=sa.Text()))
        else:
            out = col.expr.like(sa.bindparam(None, text, type_=sa.Text()))
        return sa.not_(out) if node.args.get("negate") else out

    def in_list(self, node: exp.In) -> sa.ColumnElement[bool]:
        if node.args.get("query") is not None or node.args.get("unnest") is not None \
                or node.args.get("field") is not None:
            raise _bad("IN takes a list of values, e.g. \"col\" IN ('a', 'b')")
        col = self.operand(node.this)
        if not isinstance(col, _Col):
            raise _bad("IN needs a column on its left")
        items = node.expressions
        if not items or len(items) > MAX_IN_ITEMS:
            raise _bad(f"IN takes 1 to {MAX_IN_ITEMS} values", column=col.name)
        values = []
        for item in items:
            lit = self.operand(item)
            if not isinstance(lit, _Lit):
                raise _bad("IN takes values, not columns", column=col.name)
            values.append(_fit(col, self.value_for(col, lit)))
        out = col.expr.in_(sa.bindparam(None, values, expanding=True,
                                        type_=_bind_type(col, values)))
        return sa.not_(out) if node.args.get("negate") else out

    def is_(self, node: exp.Is) -> sa.ColumnElement[bool]:
        col = self.operand(node.this)
        target = self.operand(node.expression)
        if not isinstance(col, _Col) or not isinstance(target, _Lit):
            raise _bad("IS needs a column on its left and NULL, TRUE or FALSE on its right")
        if target.value is None:
            out = col.expr.is_(None)
        elif isinstance(target.value, bool) and col.kind == "bool":
            out = col.expr.is_(target.value)
        else:
            raise _bad(f"use IS NULL, or IS TRUE / IS FALSE with a bool column (got "
                       f"{node.sql()!r})", column=col.name)
        return sa.not_(out) if node.args.get("negate") else out

    def between(self, node: exp.Between) -> sa.ColumnElement[bool]:
        if node.args.get("symmetric"):
            raise _unsupported(node)
        col = self.operand(node.this)
        low, high = self.operand(node.args["low"]), self.operand(node.args["high"])
        if not isinstance(col, _Col) or not isinstance(low, _Lit) or not isinstance(high, _Lit):
            raise _bad("BETWEEN needs a column, then two values")
        expr = col.expr.collate("C") if col.kind == "text" and self.dialect == "postgresql" \
            else col.expr
        out = expr.between(self.bind(col, low), self.bind(col, high))
        return sa.not_(out) if node.args.get("negate") else out


def _fit(col: _Col, value: Any) -> Any:
    """Numbers as the column stores them where exact (3.0 -> 3 for int columns); others
    (3.5, or beyond 64 bits) compare as doubles."""
    if col.kind in {"int", "float"} and not isinstance(value, bool):
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
            value = int(value)
        if isinstance(value, int) and abs(value) >= 2**63:
            value = float(value)
    return value


def _bind_type(col: _Col, values: list[Any]) -> sa.types.TypeEngine[Any]:
    if col.kind in {"int", "float"} and any(isinstance(v, float) for v in values):
        return sa.Double()
    return col.expr.type


def _unsupported(node: exp.Expression) -> InvalidArgument:
    what = node.key.upper() if isinstance(node, exp.Func) else type(node).__name__
    return _bad(f"{what} ({node.sql()[:80]!r}) is not allowed; use comparisons, LIKE, IN, "
                "IS NULL, BETWEEN, AND, OR, NOT and parentheses")


def _number(text: str) -> int | float:
    if _INT.fullmatch(text):
        return int(text)
    try:
        value = float(text)
    except ValueError:
        raise _bad(f"{text!r} is not a number") from None
    if value != value or value in {float("inf"), float("-inf")}:
        raise _bad(f"{text!r} is not a finite number")
    return value


def _ends_with_escape(pattern: str) -> bool:
    trailing = len(pattern) - len(pattern.rstrip("\\"))
    return trailing % 2 == 1


def _like_to_glob(pattern: str) -> str:
    """A LIKE pattern (``%``, ``_``, backslash escapes) as an equivalent GLOB pattern."""
    out: list[str] = []
    chars = iter(pattern)
    for ch in chars:
        if ch == "\\":
            ch = next(chars)
            out.append(_glob_literal(ch))
        elif ch == "%":
            out.append("*")
        elif ch == "_":
            out.append("?")
        else:
            out.append(_glob_literal(ch))
    return "".join(out)


def _glob_literal(ch: str) -> str:
    return f"[{ch}]" if ch in "*?[" else ch


_FLIPPED: dict[type[exp.Expression], type[exp.Expression]] = {exp.EQ: exp.EQ, exp.NEQ: exp.NEQ, exp.LT: exp.GT, exp.LTE: exp.GTE, exp.GT: exp.LT,
            exp.GTE: exp.LTE}
_ORDERING = {exp.LT, exp.LTE, exp.GT, exp.GTE}
_OPS: dict[type, Any] = {
    exp.EQ: lambda a, b: a == b,
    exp.NEQ: lambda a, b: a != b,
    exp.LT: lambda a, b: a < b,
    exp.LTE: lambda a, b: a <= b,
    exp.GT: lambda a, b: a > b,
    exp.GTE: lambda a, b: a >= b,
}
