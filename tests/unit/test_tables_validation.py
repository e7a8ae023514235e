"""Schema validation: ids, dtypes, gen configs, references, table-type rules."""

from __future__ import annotations

import pytest

from rowforge.server.errors import InvalidArgument, NotFound
from rowforge.server.providers.registry import ModelRegistry
from rowforge.server.tables.model import (
    ColumnSchema,
    EmbedGenConfig,
    LLMGenConfig,
    PythonGenConfig,
    RAGParams,
    TableSchema,
)
from rowforge.server.tables.validation import (
    ValidationContext,
    check_table_id,
    column_id_problem,
    id_problem,
    knowledge_columns,
    validate_table,
)

MODELS = ModelRegistry.from_config([])
CTX = ValidationContext(models=MODELS, knowledge_tables={"kb"})


def table(*cols: ColumnSchema, kind: str = "action") -> TableSchema:
    return TableSchema(project_id="p", table_type=kind, id="t", columns=cols)  # type: ignore[arg-type]


def problems(schema: TableSchema) -> list[tuple[str, str]]:
    with pytest.raises(InvalidArgument) as err:
        validate_table(schema, CTX)
    return [(v.field, v.description) for v in err.value.field_violations]


@pytest.mark.parametrize("value", ["a", "My table", "t-1.v2", "9lives", "x" * 100, "a_b"])
def test_valid_ids(value: str) -> None:
    assert id_problem(value) is None
    check_table_id(value)


@pytest.mark.parametrize("value", ["", " a", "_a", "-a", ".a", "a/b", "a\"b", "a;b", "é",
                                   "a\nb", "x" * 101, "trailing ", "a\tb", "'; DROP"])
def test_invalid_ids(value: str) -> None:
    assert id_problem(value)
    with pytest.raises(InvalidArgument) as err:
        check_table_id(value)
    assert err.value.reason == "INVALID_TABLE_ID"


@pytest.mark.parametrize("value", ["ID", "id", "Id", "Updated at", "UPDATED AT", "updated at"])
def test_reserved_column_ids(value: str) -> None:
    assert "reserved" in (column_id_problem(value) or "")


def test_a_valid_table_passes() -> None:
    validate_table(table(
        ColumnSchema("q"), ColumnSchema("n", "int"), ColumnSchema("img", "image"),
        ColumnSchema("a", gen_config=LLMGenConfig(
            model="rowforge/chat", system_prompt="About ${q}", prompt="${q} ${img}",
            temperature=0.0, max_tokens=1, top_p=1.0,
            rag_params=RAGParams("kb", k=100, reranking_model="rowforge/rerank",
                                 search_query="${q}"))),
        ColumnSchema("p", "float", PythonGenConfig("row['p'] = 1.5"))), CTX)


def test_duplicates_are_case_insensitive() -> None:
    found = problems(table(ColumnSchema("Name"), ColumnSchema("name")))
    assert found == [("cols[name].id", "column 'name': duplicates column 'Name' (ids are "
                                       "compared case-insensitively)")]


def test_references_must_point_left_and_exist() -> None:
    found = problems(table(
        ColumnSchema("a", gen_config=LLMGenConfig(prompt="${b} ${a} ${zz}")),
        ColumnSchema("b")))
    assert {f for f, _ in found} == {"cols[a].gen_config.llm.prompt"}
    text = " | ".join(d for _, d in found)
    assert "'b', which is not to its left" in text
    assert "references itself" in text and "unknown column 'zz'" in text


def test_every_problem_names_its_column_and_field() -> None:
    found = problems(table(
        ColumnSchema("q"),
        ColumnSchema("a", "int", LLMGenConfig(temperature=2.5, max_tokens=0, top_p=0.0,
                                              rag_params=RAGParams("kb", k=0))),
        ColumnSchema("p", "embedding", PythonGenConfig("x = (")),
        ColumnSchema("bad dtype", "json")))
    fields = [f for f, _ in found]
    assert fields == [
        "cols[a].dtype", "cols[a].gen_config.llm.temperature",
        "cols[a].gen_config.llm.max_tokens", "cols[a].gen_config.llm.top_p",
        "cols[a].gen_config.llm.rag_params.k", "cols[p].dtype", "cols[p].dtype",
        "cols[p].gen_config.python.python_code", "cols[bad dtype].dtype"]
    assert all(d.startswith("column '") for _, d in found)
    syntax = dict(found)["cols[p].gen_config.python.python_code"]
    assert syntax.startswith("column 'p': line 1:")


def test_python_syntax_error_reports_the_line() -> None:
    code = "x = 1\ny = 2\nif x\n    pass\n"
    [(field, description)] = problems(table(ColumnSchema("p", gen_config=PythonGenConfig(code))))
    assert field == "cols[p].gen_config.python.python_code" and "line 3" in description
    [(_, description)] = problems(table(ColumnSchema("p", gen_config=PythonGenConfig("a\x00"))))
    assert "compile" in description or "null" in description.lower()


def test_missing_models_and_knowledge_tables_are_not_found() -> None:
    with pytest.raises(NotFound) as err:
        validate_table(table(ColumnSchema("a", gen_config=LLMGenConfig(model="nope/x"))), CTX)
    assert err.value.reason == "MODEL_NOT_FOUND" and "'a'" in err.value.message
    with pytest.raises(NotFound) as err:
        validate_table(table(ColumnSchema("a", gen_config=LLMGenConfig(
            rag_params=RAGParams("missing")))), CTX)
    assert err.value.reason == "KNOWLEDGE_TABLE_NOT_FOUND"
    # A model without the capability is a bad argument, not a missing resource.
    found = problems(table(ColumnSchema("a", gen_config=LLMGenConfig(model="rowforge/embed"))))
    assert "cannot chat" in found[0][1]
    found = problems(table(ColumnSchema("a", gen_config=LLMGenConfig(
        rag_params=RAGParams("kb", reranking_model="rowforge/chat")))))
    assert "cannot rerank" in found[0][1]


def test_chat_and_knowledge_rules() -> None:
    ai = ColumnSchema("AI", gen_config=LLMGenConfig())
    validate_table(table(ColumnSchema("User"), ai, kind="chat"), CTX)
    assert problems(table(ColumnSchema("User"), kind="chat"))
    assert problems(table(ai, ColumnSchema("User"), kind="chat"))
    assert problems(table(ColumnSchema("User", "int"), ai, kind="chat"))
    validate_table(table(*[c.__class__(**{**c.__dict__}) for c in knowledge_columns(
        "rowforge/embed")], kind="knowledge"), CTX)
    assert problems(table(*knowledge_columns("rowforge/embed")[:4], kind="knowledge"))
    # Users cannot declare embedding columns.
    assert problems(table(ColumnSchema("q"), ColumnSchema(
        "e", "embedding", EmbedGenConfig("rowforge/embed", "q"))))


def test_limits() -> None:
    many = [ColumnSchema(f"c{i}") for i in range(201)]
    assert problems(table(*many))
    assert problems(table(ColumnSchema("a", gen_config=LLMGenConfig(prompt="x" * 100_001))))
    assert problems(table(ColumnSchema("p", gen_config=PythonGenConfig("   "))))
