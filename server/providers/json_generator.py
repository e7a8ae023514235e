"""Deterministic JSON values that satisfy a JSON Schema (the built-in model's structured output).

Covers what structured-output schemas use in practice (Pydantic's output included): ``type``
(also lists), ``properties``/``required``/``additionalProperties``, ``items``/``prefixItems``,
``minItems``/``maxItems``/``uniqueItems``, ``enum``, ``const``, ``minLength``/``maxLength``,
``pattern`` (literal alternations like ``^(positive|negative)$`` exactly; other patterns by
walking the regex), ``format`` (date, date-time, time, email, uri, uuid, ipv4, hostname),
``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum``/``multipleOf``, ``$ref`` with
``$defs``/``definitions``, ``allOf`` (merged), ``anyOf``/``oneOf`` (first viable branch, non-null
preferred) and nullable types. Values come from the prompt's words where that makes sense
(titles, summaries, enum choices named in the prompt) and are always the same for the same
schema and prompt.
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from rowforge.server.providers import text as textutil

try:  # the private regex parser: fine for a best-effort generator, guarded anyway
    import re._constants as _sre_c  # type: ignore[import-not-found]
    import re._parser as _sre_p  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - other Pythons
    _sre_p = _sre_c = None

MAX_DEPTH = 12
DEFAULT_ITEMS = 3
_LITERAL_ALTERNATION = re.compile(r"^\^?\(?((?:[\w .,'/-]+\|)*[\w .,'/-]+)\)?\$?$")
_FALLBACK_WORDS = ("example", "value", "result", "item", "data", "note")


class Generator:
    """Builds one value for a schema, seeded by the prompt.

    Args:
        root: The whole schema (``$ref`` targets are looked up in it).
        prompt: Text the values are drawn from.
    """

    def __init__(self, root: Mapping[str, Any], prompt: str = "") -> None:
        self.root = root
        self.prompt = prompt
        self.prompt_folded = textutil.fold(prompt)
        content = [w for w in re.findall(r"[^\W_]+", prompt) if w.lower() not in
                   textutil.STOPWORDS and len(w) > 1]
        self.words = content or list(_FALLBACK_WORDS)
        self.seed = int.from_bytes(hashlib.blake2b(prompt.encode(), digest_size=8).digest(),
                                   "little")

    def generate(self) -> Any:
        return self.value(self.root, key="", depth=0, salt=0)

    # --- dispatch ------------------------------------------------------------------------

    def value(self, schema: Any, *, key: str, depth: int, salt: int) -> Any:
        if schema is True or not isinstance(schema, Mapping):
            return self.string({}, key, salt)
        schema = self.resolve(schema, depth)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return self.choose(schema["enum"], salt)
        for keyword in ("anyOf", "oneOf"):
            if schema.get(keyword):
                return self.branch(schema, keyword, key=key, depth=depth, salt=salt)
        kind = self.kind(schema)
        if depth >= MAX_DEPTH and kind in ("object", "array"):
            kind = "null" if "null" in self.types(schema) else kind
        if kind == "object":
            return self.object(schema, depth, salt)
        if kind == "array":
            return self.array(schema, key, depth, salt)
        if kind == "integer":
            return self.number(schema, salt, integer=True)
        if kind == "number":
            return self.number(schema, salt, integer=False)
        if kind == "boolean":
            return (self.seed + salt) % 2 == 0
        if kind == "null":
            return None
        return self.string(schema, key, salt)

    def resolve(self, schema: Mapping[str, Any], depth: int) -> Mapping[str, Any]:
        """Follow ``$ref`` and merge ``allOf`` into one schema."""
        for _ in range(MAX_DEPTH):
            ref = schema.get("$ref")
            if not isinstance(ref, str):
                break
            target = self.lookup(ref)
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **rest}
        if schema.get("allOf"):
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                part = self.resolve(part, depth) if isinstance(part, Mapping) else {}
                for k, v in part.items():
                    if k == "properties":
                        merged["properties"] = {**merged.get("properties", {}), **v}
                    elif k == "required":
                        merged["required"] = [*merged.get("required", []), *v]
                    else:
                        merged.setdefault(k, v)
            schema = merged
        return schema

    def lookup(self, ref: str) -> Mapping[str, Any]:
        if not ref.startswith("#"):
            return {}
        node: Any = self.root
        for part in ref[1:].split("/"):
            if not part:
                continue
            part = part.replace("~1", "/").replace("~0", "~")
            node = node.get(part, {}) if isinstance(node, Mapping) else {}
        return node if isinstance(node, Mapping) else {}

    @staticmethod
    def types(schema: Mapping[str, Any]) -> list[str]:
        kind = schema.get("type")
        if isinstance(kind, str):
            return [kind]
        return list(kind) if isinstance(kind, list) else []

    def kind(self, schema: Mapping[str, Any]) -> str:
        types = self.types(schema)
        non_null = [t for t in types if t != "null"]
        if non_null:
            return non_null[0]
        if types:
            return "null"
        if "properties" in schema or "additionalProperties" in schema or "required" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema or "minItems" in schema:
            return "array"
        if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum",
                                     "exclusiveMaximum", "multipleOf")):
            return "number"
        return "string"

    def branch(self, schema: Mapping[str, Any], keyword: str, *, key: str, depth: int,
               salt: int) -> Any:
        options = [self.resolve(o, depth) if isinstance(o, Mapping) else {}
                   for o in schema[keyword]]
        # Prefer a real value over null: Optional[X] should give an X.
        ordered = [o for o in options if self.types(o) != ["null"]] + \
                  [o for o in options if self.types(o) == ["null"]]
        base = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
        candidates = [self.value({**base, **option}, key=key, depth=depth + 1, salt=salt)
                      for option in ordered[:1]]
        if keyword == "oneOf" and len(options) > 1:
            candidates = [self.value({**base, **o}, key=key, depth=depth + 1, salt=salt)
                          for o in ordered]
            for candidate in candidates:
                if sum(_valid(candidate, {**base, **o}, self.root) for o in options) == 1:
                    return candidate
        return candidates[0]

    # --- kinds ---------------------------------------------------------------------------

    def object(self, schema: Mapping[str, Any], depth: int, salt: int) -> dict[str, Any]:
        properties = schema.get("properties") or {}
        required = [r for r in schema.get("required", []) if isinstance(r, str)]
        names = list(dict.fromkeys([*required, *properties]))
        limit = schema.get("maxProperties")
        if isinstance(limit, int):
            names = names[:max(limit, len(required))]
        result = {name: self.value(properties.get(name, {}), key=name, depth=depth + 1,
                                   salt=salt + i)
                  for i, name in enumerate(names)}
        extra = schema.get("additionalProperties")
        wanted = schema.get("minProperties", 0)
        i = 0
        while len(result) < wanted and extra is not False:
            name = f"{self.words[i % len(self.words)].lower()}_{i}"
            result[name] = self.value(extra if isinstance(extra, Mapping) else {}, key=name,
                                      depth=depth + 1, salt=salt + 100 + i)
            i += 1
        return result

    def array(self, schema: Mapping[str, Any], key: str, depth: int, salt: int) -> list[Any]:
        prefix = schema.get("prefixItems") or []
        items = schema.get("items", {})
        if isinstance(items, list):  # draft 4-7 tuple form
            prefix, items = items, schema.get("additionalItems", {})
        low = max(int(schema.get("minItems", 0)), 0)
        high = schema.get("maxItems")
        count = max(low, min(DEFAULT_ITEMS, high if isinstance(high, int) else DEFAULT_ITEMS))
        if items is False:
            count = min(count, len(prefix))
        count = max(count, min(len(prefix), high if isinstance(high, int) else len(prefix)))
        result: list[Any] = []
        attempt = 0
        while len(result) < count and attempt < count * 20 + 20:
            index = len(result)
            item_schema = prefix[index] if index < len(prefix) else items
            item = self.value(item_schema, key=_singular(key), depth=depth + 1,
                              salt=salt * 31 + attempt + 1)
            attempt += 1
            if schema.get("uniqueItems") and any(_same(item, seen) for seen in result):
                # Strings: a numbered variant is usually still valid (and then unique).
                variant = f"{item} {len(result) + 1}" if isinstance(item, str) else None
                if variant is None or not _valid(variant, _as_schema(item_schema), self.root):
                    continue
                item = variant
            result.append(item)
        return result

    def number(self, schema: Mapping[str, Any], salt: int, *, integer: bool) -> int | float:
        low, high = _bounds(schema, integer)
        step = schema.get("multipleOf")
        span_low = low if low is not None else (high - 100 if high is not None else 0)
        span_high = high if high is not None else span_low + 100
        if step:
            return _multiple(step, span_low, span_high, self.seed + salt, integer)
        if integer:
            lo, hi = math.ceil(span_low), math.floor(span_high)
            return int(lo + (self.seed + salt) % (hi - lo + 1)) if hi >= lo else int(lo)
        fraction = ((self.seed + salt) % 1000) / 1000
        value = round(span_low + (span_high - span_low) * fraction, 2)
        if (low is not None and value < low) or (high is not None and value > high):
            value = span_low
        return float(value)

    def string(self, schema: Mapping[str, Any], key: str, salt: int) -> str:
        low = max(int(schema.get("minLength", 0)), 0)
        high = schema.get("maxLength")
        pattern = schema.get("pattern")
        fmt = schema.get("format")
        if isinstance(pattern, str):
            value = self.from_pattern(pattern, salt)
            if value is not None and _fits(value, low, high):
                return value
        if isinstance(fmt, str) and fmt in _FORMATS:
            value = _FORMATS[fmt](self, key, salt)
        else:
            value = self.prose(key, salt)
        if isinstance(high, int):
            value = _truncate(value, high)
        if len(value) < low:
            filler = " ".join(self.words)
            while len(value) < low:
                value = (value + " " + filler).strip() if value else filler
            value = _truncate(value, high if isinstance(high, int) else len(value))
            value = value.ljust(low, "x")[: high if isinstance(high, int) else None]
        return value

    # --- strings -------------------------------------------------------------------------

    def prose(self, key: str, salt: int) -> str:
        name = key.lower()
        words = self.rotated(salt)
        if any(k in name for k in ("email",)):
            return _email(self, key, salt)
        if any(k in name for k in ("url", "uri", "link", "website")):
            return _uri(self, key, salt)
        if "phone" in name:
            return f"+1-555-01{(self.seed + salt) % 100:02d}"
        if "date" in name:
            return _date(self, key, salt)
        if any(k in name for k in ("title", "name", "heading", "topic", "category", "label")):
            return " ".join(w.capitalize() for w in words[:3])
        if any(k in name for k in ("summary", "description", "text", "content", "body",
                                   "section", "action", "reason", "explanation", "answer")):
            sentence = " ".join(words[:12])
            return sentence[:1].upper() + sentence[1:] + "."
        if name.endswith(("keyword", "tag", "feature", "interest", "word", "term")):
            return words[0].lower()
        return " ".join(words[:3])

    def rotated(self, salt: int) -> list[str]:
        start = (salt * 3) % len(self.words)
        return (self.words[start:] + self.words[:start]) or list(_FALLBACK_WORDS)

    def choose(self, options: Sequence[Any], salt: int) -> Any:
        """The option the prompt names (first mention wins), else a seeded pick."""
        best: tuple[int, Any] | None = None
        for option in options:
            if isinstance(option, str) and option:
                position = self.prompt_folded.find(textutil.fold(option))
                if position >= 0 and (best is None or position < best[0]):
                    best = (position, option)
        if best is not None:
            return best[1]
        return options[(self.seed + salt) % len(options)]

    def from_pattern(self, pattern: str, salt: int) -> str | None:
        literal = _LITERAL_ALTERNATION.match(pattern)
        if literal and "\\" not in pattern:
            return str(self.choose(literal.group(1).split("|"), salt))
        value = _walk_regex(pattern)
        try:
            return value if value is not None and re.search(pattern, value) else None
        except re.error:
            return None


# --- helpers -----------------------------------------------------------------------------

def _singular(key: str) -> str:
    return key[:-1] if key.endswith("s") and not key.endswith("ss") else key


def _as_schema(schema: Any) -> Mapping[str, Any]:
    return schema if isinstance(schema, Mapping) else {}


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _fits(value: str, low: int, high: Any) -> bool:
    return len(value) >= low and (not isinstance(high, int) or len(value) <= high)


def _truncate(value: str, limit: int) -> str:
    if len(value) <= limit:
        return value
    cut = value[:limit]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:")


def _bounds(schema: Mapping[str, Any], integer: bool) -> tuple[float | None, float | None]:
    low, high = schema.get("minimum"), schema.get("maximum")
    ex_low, ex_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    step = 1 if integer else 0.01
    if ex_low is True and low is not None:  # draft 4 booleans
        low = low + step
    elif isinstance(ex_low, int | float) and not isinstance(ex_low, bool):
        low = max(low, ex_low + step) if low is not None else ex_low + step
    if ex_high is True and high is not None:
        high = high - step
    elif isinstance(ex_high, int | float) and not isinstance(ex_high, bool):
        high = min(high, ex_high - step) if high is not None else ex_high - step
    if integer:
        low = math.floor(low) + (0 if float(low).is_integer() else 1) if low is not None else None
        high = math.floor(high) if high is not None else None
    return low, high


def _multiple(step: float, low: float, high: float, seed: int, integer: bool) -> int | float:
    first, last = math.ceil(low / step), math.floor(high / step)
    if first > last:
        first = last = math.ceil(low / step)
    count = last - first + 1
    for offset in range(min(count, 50)):
        k = first + (seed + offset) % count
        value: int | float = k * step
        if integer:
            if float(value).is_integer():
                return int(value)
            continue
        value = float(value)
        # jsonschema checks float multiples by division: make sure that check passes.
        quotient = value / step
        if quotient == int(quotient) and low <= value <= high:
            return value
    if low <= 0 <= high:
        return 0 if integer else 0.0
    return int(first * step) if integer else float(first * step)


def _valid(instance: Any, schema: Mapping[str, Any], root: Mapping[str, Any]) -> bool:
    import jsonschema

    try:
        subschema = {**schema}
        for key in ("$defs", "definitions"):
            if key in root:
                subschema.setdefault(key, root[key])
        return jsonschema.Draft202012Validator(subschema).is_valid(instance)
    except Exception:  # an odd schema: assume valid, jsonschema will say later
        return True


def _email(gen: Generator, key: str, salt: int) -> str:
    name = re.sub(r"[^a-z0-9]", "", gen.rotated(salt)[0].lower()) or "user"
    return f"{name}@example.com"


def _uri(gen: Generator, key: str, salt: int) -> str:
    slug = "-".join(re.sub(r"[^a-z0-9]", "", w.lower()) for w in gen.rotated(salt)[:2]) or "page"
    return f"https://example.com/{slug}"


def _date(gen: Generator, key: str, salt: int) -> str:
    n = gen.seed + salt
    return f"20{24 + n % 3}-{1 + n % 12:02d}-{1 + n % 28:02d}"


_FORMATS = {
    "email": _email,
    "idn-email": _email,
    "uri": _uri,
    "url": _uri,
    "iri": _uri,
    "uri-reference": _uri,
    "date": _date,
    "date-time": lambda g, k, s: _date(g, k, s) + "T12:00:00Z",
    "time": lambda g, k, s: "12:00:00Z",
    "uuid": lambda g, k, s: str(uuid.UUID(int=(g.seed * 1_000_003 + s) % (1 << 128), version=4)),
    "ipv4": lambda g, k, s: f"192.0.2.{(g.seed + s) % 254 + 1}",
    "ipv6": lambda g, k, s: "2001:db8::1",
    "hostname": lambda g, k, s: "example.com",
    "duration": lambda g, k, s: "PT1H",
}


def _walk_regex(pattern: str) -> str | None:
    """A short string matching ``pattern`` (best effort; ``None`` when unsure)."""
    if _sre_p is None:
        return None
    try:
        parsed = _sre_p.parse(pattern)
    except (re.error, RecursionError, ValueError):
        return None
    try:
        return _emit(parsed, 0)
    except (LookupError, TypeError, ValueError, RecursionError):
        return None


def _emit(items: Any, depth: int) -> str:
    if depth > 20:
        raise ValueError("too deep")
    c = _sre_c
    out: list[str] = []
    for op, arg in items:
        if op is c.LITERAL:
            out.append(chr(arg))
        elif op is c.NOT_LITERAL:
            out.append("a" if chr(arg) != "a" else "b")
        elif op is c.ANY:
            out.append("a")
        elif op is c.IN:
            out.append(_class_member(arg))
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
            low, _high, body = arg
            out.append(_emit(body, depth + 1) * max(low, 0))
        elif op is c.SUBPATTERN:
            out.append(_emit(arg[-1], depth + 1))
        elif op is c.BRANCH:
            out.append(_emit(arg[1][0], depth + 1))
        elif op in (c.AT, c.ASSERT, c.ASSERT_NOT):
            continue
        elif op is c.CATEGORY:
            out.append(_category(arg))
        else:
            raise ValueError(f"unsupported regex op {op}")
    return "".join(out)


def _class_member(items: Any) -> str:
    c = _sre_c
    if items and items[0][0] is c.NEGATE:
        for candidate in "aZ0_ -x.":
            if not _in_class(candidate, items[1:]):
                return candidate
        raise ValueError("no simple character outside the class")
    op, arg = items[0]
    if op is c.LITERAL:
        return chr(arg)
    if op is c.RANGE:
        return chr(arg[0])
    if op is c.CATEGORY:
        return _category(arg)
    raise ValueError("class")


def _in_class(char: str, items: Any) -> bool:
    c = _sre_c
    for op, arg in items:
        if (op is c.LITERAL and chr(arg) == char) or \
                (op is c.RANGE and arg[0] <= ord(char) <= arg[1]):
            return True
        if op is c.CATEGORY and re.fullmatch(_CATEGORY_REGEX.get(str(arg), "(?!)"), char):
            return True
    return False


_CATEGORY_REGEX = {"CATEGORY_DIGIT": r"\d", "CATEGORY_NOT_DIGIT": r"\D", "CATEGORY_WORD": r"\w",
                   "CATEGORY_NOT_WORD": r"\W", "CATEGORY_SPACE": r"\s",
                   "CATEGORY_NOT_SPACE": r"\S"}


def _category(arg: Any) -> str:
    name = str(arg).rsplit("_", 1)[-1].lower()  # CATEGORY_DIGIT -> digit
    return {"digit": "0", "word": "a", "space": " "}.get(name, "a") \
        if not str(arg).startswith("CATEGORY_NOT") else "-"


def generate_json(schema: Mapping[str, Any], prompt: str = "") -> Any:
    """A value valid for ``schema``, derived deterministically from ``prompt``."""
    return Generator(schema, prompt).generate()
