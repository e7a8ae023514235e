"""Cell value typing, page tokens, UUIDv7 row ids and the stored JSON forms."""

from __future__ import annotations

import math
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rowforge.server.errors import InvalidArgument
from rowforge.server.tables import page_tokens
from rowforge.server.tables.codec import (
    cell_from_stored,
    column_from_json,
    column_to_json,
    state_to_json,
)
from rowforge.server.tables.ids import uuid7
from rowforge.server.tables.model import (
    Cell,
    CellStatus,
    CellUsage,
    Chunk,
    ColumnSchema,
    EmbedGenConfig,
    LLMGenConfig,
    PythonGenConfig,
    RAGParams,
    References,
)
from rowforge.server.tables.values import (
    ValueTypeError,
    check_vector,
    coerce,
    from_stored,
    parse_text,
)


@pytest.mark.parametrize("dtype, value, stored", [
    ("int", 3.0, 3), ("int", -7, -7), ("float", 2, 2.0), ("bool", False, False),
    ("str", "x", "x"), ("image", "file://a", "file://a"), ("str", None, None),
    ("int", None, None),
])
def test_accepted(dtype: str, value: object, stored: object) -> None:
    assert coerce(dtype, value) == stored
    assert type(coerce(dtype, value)) is type(stored)


@pytest.mark.parametrize("dtype, value", [
    ("int", 3.5), ("int", True), ("int", "3"), ("int", 2.0**64), ("float", math.nan),
    ("float", math.inf), ("float", "1"), ("float", False), ("bool", 1), ("bool", "true"),
    ("str", 5), ("str", ["a"]), ("str", {"a": 1}), ("file", 3), ("embedding", "abc"),
    ("embedding", [[1.0]]), ("embedding", [math.nan]), ("embedding", [1.0, math.inf]),
    ("embedding", [1e39]), ("embedding", []), ("embedding", [1.0, "a"]),
    ("embedding", [[1.0], [1.0, 2.0]]), ("embedding", {"a": 1.0}),
    ("embedding", b"\x00\x00\xc0\x7f"), ("embedding", b"\x00\x00\x80"), ("nope", 1),
])
def test_refused(dtype: str, value: object) -> None:
    with pytest.raises(ValueTypeError):
        coerce(dtype, value)


def test_embeddings_are_float32_bytes() -> None:
    stored = coerce("embedding", [0.5, -1.0, 2.0])
    assert isinstance(stored, bytes) and len(stored) == 12
    assert from_stored("embedding", stored) == [0.5, -1.0, 2.0]
    assert coerce("embedding", stored) == stored
    assert parse_text("embedding", "[0.5, -1, 2]") == stored


def test_vectors_must_have_their_columns_length() -> None:
    stored = coerce("embedding", [0.5, -1.0, 2.0])
    check_vector(stored, 3)
    check_vector(stored, 0)  # not recorded: any length
    with pytest.raises(ValueTypeError, match=r"expected 4 numbers .* got 3"):
        check_vector(stored, 4)


@pytest.mark.parametrize("dtype, text, value", [
    ("int", "42", 42), ("int", " 4.0 ", 4), ("float", "1e3", 1000.0), ("bool", "TRUE", True),
    ("bool", "0", False), ("str", " keep ", " keep "), ("int", "", None), ("str", "", None),
])
def test_parse_text(dtype: str, text: str, value: object) -> None:
    assert parse_text(dtype, text) == value


@pytest.mark.parametrize("dtype, text", [("int", "4.5"), ("int", "x"), ("float", "nan"),
                                         ("bool", "maybe"), ("embedding", "1, 2"),
                                         ("embedding", "[1, NaN]"), ("embedding", "{}")])
def test_parse_text_refuses(dtype: str, text: str) -> None:
    with pytest.raises(ValueTypeError):
        parse_text(dtype, text)


def test_page_tokens_round_trip_and_bind_to_parameters() -> None:
    bound = page_tokens.params_hash("rows", "t", "\"a\" = 1")
    token = page_tokens.encode([False, "x", 7], bound)
    assert page_tokens.decode(token, bound) == [False, "x", 7]
    with pytest.raises(InvalidArgument) as err:
        page_tokens.decode(token, page_tokens.params_hash("rows", "t", "\"a\" = 2"))
    assert err.value.reason == "PAGE_TOKEN_MISMATCH"


@given(st.text(max_size=60))
def test_garbage_tokens_are_invalid_arguments(token: str) -> None:
    try:
        page_tokens.decode(token, "h")
    except InvalidArgument as exc:
        assert exc.field_violations[0].field == "page_token"


def test_uuid7_ids_are_time_ordered_and_unique() -> None:
    ids = [uuid7() for _ in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert {uuid.UUID(i).version for i in ids} == {7}


def test_stored_json_forms_round_trip() -> None:
    for col in [
        ColumnSchema("a", gen_config=LLMGenConfig("m", "s", "${x}", 0.5, 10, 0.9, True,
                                                  RAGParams("kb", 4, "r", "q", True)),
                     storage_name="c_1"),
        ColumnSchema("p", "int", PythonGenConfig("row['p']=1"), storage_name="c_2"),
        ColumnSchema("e", "embedding", EmbedGenConfig("m", "a"), system=True,
                     storage_name="c_3"),
        ColumnSchema("plain", storage_name="c_4"),
    ]:
        back = column_from_json(column_to_json(col))
        assert back == col and back.storage_name == col.storage_name
    assert state_to_json(Cell("x")) is None
    cell = Cell("v", CellStatus.ERROR, "boom", CellUsage(1, 2),
                References("kb", "q", (Chunk("r", "t", "x", 3, "f", 0.5),)))
    assert cell_from_stored("v", state_to_json(cell)) == cell
