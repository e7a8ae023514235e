"""Structured output of the built-in model: always valid for the schema.

Property tests over generated schemas, plus the seeds' Pydantic models (BlogPost,
ProductDescription, LeadAnalysis with ContactInfo, SupportTicketAnalysis, ProductDetails,
ReviewAnalysis) and a kitchen-sink model using ``$defs``/``$ref``, enums, literals and more.
"""

from __future__ import annotations

import datetime
import enum
import math
import re
import uuid
from typing import Any, Literal

import jsonschema
import pydantic
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from rowforge.server.providers import Message, ModelRegistry, chat, json_schema_format
from rowforge.server.providers.json_generator import generate_json

CHAT = ModelRegistry.from_config([]).get("rowforge/chat")
FORMAT_CHECKER = jsonschema.Draft202012Validator.FORMAT_CHECKER


def assert_valid(value: Any, schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(schema, format_checker=FORMAT_CHECKER).validate(value)


# --- the seeds' models -------------------------------------------------------------------

class BlogPost(BaseModel):
    title: str
    sections: list[str]
    keywords: list[str]


class ProductDescription(BaseModel):
    title: str
    description: str
    features: list[str]
    price_range: str


class ContactInfo(BaseModel):
    email: str
    phone: str | None = None


class LeadAnalysis(BaseModel):
    score: int
    contact: ContactInfo
    interests: list[str]
    next_action: str


class SupportTicketAnalysis(BaseModel):
    sentiment: str
    topic: str
    urgency_score: int
    recommended_action: str


class ProductDetails(BaseModel):
    product_name: str
    short_description: str = Field(..., max_length=150)
    long_description: str
    features: list[str]
    category: str
    keywords: list[str]


class ReviewAnalysis(BaseModel):
    sentiment: str = Field(..., pattern="^(positive|negative|neutral)$")
    rating: int = Field(..., ge=1, le=5)
    summary: str = Field(..., max_length=500)


class DocumentSummary(BaseModel):
    title: str
    summary_text: str
    keywords: list[str]


class Priority(enum.Enum):
    LOW = "low"
    HIGH = "high"


class Address(BaseModel):
    street: str = Field(min_length=5, max_length=40)
    postcode: str = Field(pattern=r"^\d{4,5}$")
    country: Literal["PT", "FR", "DE"]


class KitchenSink(BaseModel):
    id: uuid.UUID
    when: datetime.date
    at: datetime.datetime
    priority: Priority
    home: Address
    previous: list[Address] = Field(min_length=1, max_length=2)
    backup: Address | None = None
    tags: set[str] = Field(min_length=2)
    weights: dict[str, float]
    ratio: float = Field(gt=0, lt=1)
    step: int = Field(multiple_of=7, ge=10, le=30)
    price: float = Field(multiple_of=0.25, ge=1, le=2)
    pair: tuple[int, str]
    flag: bool
    note: str = Field(default="", max_length=3)
    code: str = Field(pattern=r"^[A-Z]{3}-\d{2}$")


SEED_MODELS = [
    (BlogPost, "Generate a blog post about the benefits of cloud computing for small businesses."),
    (ProductDescription, "Generate a product description for wireless headphones"),
    (LeadAnalysis, "Analyze this lead: John Doe, loves tech gadgets..."),
    (SupportTicketAnalysis, "Analyze the following customer support ticket for sentiment, "
                            "topic, urgency (1-5), and recommended action:\nMy internet is "
                            "completely down! I can't work."),
    (ProductDetails, "Generate product details including short description (max 150 chars), "
                     "long description, features, category, and keywords for: Ergonomic "
                     "office chair, lumbar support, adjustable height, mesh back, black color."),
    (ReviewAnalysis, "Review: the blender is fine, neutral overall, does the job."),
    (DocumentSummary, "Summarize this long document about AI and machine learning..."),
    (KitchenSink, "Fill in every field for the warehouse in Porto."),
]


@pytest.mark.parametrize(("model", "prompt"), SEED_MODELS, ids=[m.__name__ for m, _ in SEED_MODELS])
async def test_seed_models_get_valid_output(model: type[BaseModel], prompt: str) -> None:
    result = await chat(CHAT, [Message("user", prompt)], response_format=json_schema_format(model))
    schema = model.model_json_schema()
    assert_valid(result.parsed, schema)
    model.model_validate(result.parsed)


async def test_values_come_from_the_prompt() -> None:
    result = await chat(CHAT, [Message("user", "Review: awful, a negative experience.")],
                        response_format=json_schema_format(ReviewAnalysis))
    assert result.parsed["sentiment"] == "negative"
    lead = await chat(CHAT, [Message("user", "Analyze this lead: John Doe, loves tech gadgets")],
                      response_format=json_schema_format(LeadAnalysis))
    words = {"john", "doe", "loves", "tech", "gadgets", "analyze", "lead"}
    assert set(re.findall(r"\w+", lead.text.lower())) & words


def test_same_schema_and_prompt_same_value() -> None:
    schema = KitchenSink.model_json_schema()
    assert generate_json(schema, "abc") == generate_json(schema, "abc")
    assert generate_json(schema, "abc") != generate_json(schema, "xyz")


@pytest.mark.parametrize("pattern", [r"^\d{3}-\d{4}$", r"^[A-Z][a-z]+$", r"^(abc|d+)x?$",
                                     r"^[^a-z]+$", r"^\w+@\w+\.com$", r"^(?:[A-Z]{2}|x)-\d+$",
                                     r"^(red|green|blue)$", "colou?r"])
def test_patterns(pattern: str) -> None:
    value = generate_json({"type": "string", "pattern": pattern}, "some prompt")
    assert re.search(pattern, value), value


def test_literal_alternation_prefers_the_option_the_prompt_names() -> None:
    schema = {"type": "string", "pattern": "^(positive|negative|neutral)$"}
    assert generate_json(schema, "it was a neutral experience") == "neutral"


# --- property tests over generated schemas -----------------------------------------------

PATTERNS = [r"^\d{2,4}$", r"^[a-z]+-[0-9]+$", r"^(yes|no|maybe)$", r"^[A-Z]{2}\d$"]
FORMATS = ["date", "date-time", "email", "uri", "uuid", "ipv4", "time"]
NAMES = st.sampled_from(["title", "name", "email", "summary", "score", "tags", "items", "url",
                         "phone", "description", "count", "value", "x", "created_date"])


@st.composite
def string_schemas(draw: st.DrawFn) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    choice = draw(st.sampled_from(["plain", "length", "pattern", "format", "enum"]))
    if choice == "length":
        low = draw(st.integers(0, 60))
        high = draw(st.integers(max(low, 1), 200))
        schema.update(minLength=low, maxLength=high)
    elif choice == "pattern":
        schema["pattern"] = draw(st.sampled_from(PATTERNS))
    elif choice == "format":
        schema["format"] = draw(st.sampled_from(FORMATS))
    elif choice == "enum":
        schema["enum"] = draw(st.lists(st.text(min_size=1, max_size=10), min_size=1,
                                       max_size=4, unique=True))
    return schema


@st.composite
def integer_schemas(draw: st.DrawFn) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    low = draw(st.none() | st.integers(-1000, 1000))
    high = draw(st.none() | st.integers(-1000, 1000))
    if low is not None and high is not None and low > high:
        low, high = high, low
    step = draw(st.none() | st.sampled_from([1, 2, 3, 5, 7, 10]))
    if low is not None:
        schema["exclusiveMinimum" if draw(st.booleans()) else "minimum"] = low
    if high is not None:
        schema["exclusiveMaximum" if draw(st.booleans()) else "maximum"] = high
    lo = (low + 1 if "exclusiveMinimum" in schema else low) if low is not None else -10**6
    hi = (high - 1 if "exclusiveMaximum" in schema else high) if high is not None else 10**6
    assume(lo <= hi)
    if step:
        assume(any(v % step == 0 for v in range(lo, min(hi, lo + 20) + 1)))
        schema["multipleOf"] = step
    return schema


@st.composite
def number_schemas(draw: st.DrawFn) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "number"}
    low = draw(st.floats(-1e4, 1e4, allow_nan=False).map(lambda v: round(v, 3)))
    width = draw(st.floats(0.5, 1e4, allow_nan=False).map(lambda v: round(v, 3)))
    if draw(st.booleans()):
        schema["minimum"] = low
    if draw(st.booleans()):
        schema["maximum"] = round(low + width, 3)
    if draw(st.booleans()):
        schema["exclusiveMinimum"] = schema.pop("minimum", low)
    step = draw(st.none() | st.sampled_from([0.5, 0.25, 0.1, 0.01, 2.5]))
    if step:
        schema["multipleOf"] = step
        # Only satisfiable schemas: some multiple in range passes jsonschema's own check.
        start = schema.get("minimum", schema.get("exclusiveMinimum", -1e4))
        first = math.ceil(start / step)
        validator = jsonschema.Draft202012Validator(schema)
        assume(any(validator.is_valid(k * step) for k in range(first, first + 60)))
    return schema


LEAVES = st.one_of(
    string_schemas(), integer_schemas(), number_schemas(),
    st.just({"type": "boolean"}), st.just({"type": "null"}),
    st.builds(lambda v: {"const": v}, st.integers() | st.text(max_size=5) | st.booleans()),
    st.builds(lambda v: {"enum": v}, st.lists(st.integers(-5, 5) | st.text(max_size=4),
                                              min_size=1, max_size=4, unique=True)),
    st.just({}),
)


def _extend(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    objects = st.builds(
        lambda props, required_flags, closed: {
            "type": "object",
            "properties": props,
            "required": [n for n, flag in zip(props, required_flags, strict=False) if flag],
            **({"additionalProperties": False} if closed else {})},
        st.dictionaries(NAMES, children, max_size=5),
        st.lists(st.booleans(), min_size=5, max_size=5), st.booleans())
    arrays = st.builds(
        lambda items, low, extra: {"type": "array", "items": items, "minItems": low,
                                   "maxItems": low + extra},
        children, st.integers(0, 4), st.integers(0, 3))
    nullable = st.builds(lambda s: {"anyOf": [s, {"type": "null"}]}, children)
    # oneOf as Pydantic emits it for tagged unions: branches told apart by a const tag.
    one_of = st.builds(
        lambda a, b: {"oneOf": [
            {"type": "object", "properties": {"kind": {"const": "a"}, "a": a},
             "required": ["kind", "a"]},
            {"type": "object", "properties": {"kind": {"const": "b"}, "b": b},
             "required": ["kind", "b"]}]},
        children, children)
    typed_null = st.builds(lambda s: {**s, "type": [s["type"], "null"]}, string_schemas())
    return st.one_of(objects, arrays, nullable, one_of, typed_null)


SCHEMAS = st.recursive(LEAVES, _extend, max_leaves=12)


@st.composite
def schemas_with_refs(draw: st.DrawFn) -> dict[str, Any]:
    """A root object referring to named definitions (the shape Pydantic emits)."""
    defs = draw(st.dictionaries(st.sampled_from(["Contact", "Item", "Meta"]), SCHEMAS,
                                min_size=1, max_size=3))
    names = list(defs)
    props = {f"field_{i}": ({"$ref": f"#/$defs/{name}"} if i % 2 == 0 else
                            {"type": "array", "items": {"$ref": f"#/$defs/{name}"}})
             for i, name in enumerate(names)}
    return {"type": "object", "properties": props, "required": list(props), "$defs": defs}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.filter_too_much])
@given(schema=SCHEMAS, prompt=st.text(max_size=80))
def test_generated_values_are_valid(schema: dict[str, Any], prompt: str) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)
    assert_valid(generate_json(schema, prompt), schema)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.filter_too_much])
@given(schema=schemas_with_refs(), prompt=st.text(max_size=40))
def test_generated_values_with_refs_are_valid(schema: dict[str, Any], prompt: str) -> None:
    assert_valid(generate_json(schema, prompt), schema)


@settings(max_examples=60, deadline=None)
@given(fields=st.dictionaries(
    st.from_regex(r"[a-z]{1,8}", fullmatch=True),
    st.sampled_from([str, int, float, bool, list[str], dict[str, int], int | None,
                     Literal["a", "b"], ContactInfo, list[ContactInfo], ContactInfo | None]),
    min_size=1, max_size=6))
def test_dynamic_pydantic_models(fields: dict[str, Any]) -> None:
    try:
        model = pydantic.create_model("Dynamic", **{k: (v, ...) for k, v in fields.items()})
    except (NameError, TypeError, ValueError, pydantic.PydanticUserError):
        assume(False)
        raise
    schema = model.model_json_schema()
    value = generate_json(schema, "a dynamic prompt about contacts")
    assert_valid(value, schema)
    model.model_validate(value)
