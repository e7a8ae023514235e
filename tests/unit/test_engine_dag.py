"""The column DAG: references per column kind, layers, cycles, regeneration targets."""

from __future__ import annotations

import pytest

from rowforge.server.errors import InvalidArgument
from rowforge.server.tables.engine import DagError, build_dag, column_references, regen_targets
from rowforge.server.tables.engine.dag import topological_layers
from rowforge.server.tables.engine.plan import build_plan
from rowforge.server.tables.model import EmbedGenConfig, RAGParams
from tests.unit.engine_memory import col, llm, python, table


def diamond():
    return table(
        col("a"),
        col("b", gen=llm("B from ${a}")),
        col("c", gen=llm("C from ${a}", system_prompt="sys")),
        col("d", gen=llm("${b} and ${c}")),
        col("e", gen=python('row["e"] = 1')),
        col("f", gen=llm("only ${a}")),
    )


def test_independent_columns_share_a_layer_and_dependants_wait():
    dag = build_dag(diamond())
    assert dag.layers == (("b", "c", "f"), ("d",), ("e",))
    assert dag.deps["d"] == ("b", "c")
    assert dag.deps["b"] == ()
    # A Python column reads every column to its left.
    assert dag.deps["e"] == ("b", "c", "d")
    assert dag.order == ("b", "c", "f", "d", "e")


def test_references_by_column_kind():
    schema = table(
        col("q"), col("ctx"),
        col("ans", gen=llm("${q}", system_prompt="Use ${ctx}",
                           rag_params=RAGParams(table_id="kb", search_query="${ctx} ${q}"))),
        col("vec", "embedding", gen=EmbedGenConfig("rowforge/embed", "q")),
    )
    assert column_references(schema, schema.columns[2]) == ["ctx", "q"]
    assert column_references(schema, schema.columns[3]) == ["q"]
    assert column_references(schema, schema.columns[0]) == []


def test_chat_ai_column_without_prompt_answers_the_user_column():
    schema = table(col("User"), col("AI", gen=llm("")), table_type="chat")
    assert column_references(schema, schema.columns[1]) == ["User"]
    plan = build_plan(schema)
    assert plan.sequential
    assert plan.columns["AI"].multi_turn
    assert plan.columns["AI"].prompt.render({"User": "hi"}) == "hi"


def test_multi_turn_column_makes_rows_sequential():
    assert not build_plan(diamond()).sequential
    schema = table(col("q"), col("a", gen=llm("${q}", multi_turn=True)))
    assert build_plan(schema).sequential


def test_unknown_reference_names_the_column():
    schema = table(col("a"), col("b", gen=llm("${nope}")))
    with pytest.raises(DagError) as err:
        build_dag(schema)
    assert err.value.reason == "UNKNOWN_REFERENCE"
    assert err.value.column == "b"
    assert "'nope'" in err.value.message
    assert err.value.code == "FAILED_PRECONDITION"


def test_cycles_are_refused():
    # Validation keeps references to the left, so only a corrupt schema gets here.
    schema = table(col("a"), col("b", gen=llm("${c}")), col("c", gen=llm("${b}")))
    with pytest.raises(DagError) as err:
        build_dag(schema)
    assert err.value.reason == "COLUMN_CYCLE"
    assert "'b'" in err.value.message and "'c'" in err.value.message

    selfish = table(col("a", gen=llm("${a}")))
    with pytest.raises(DagError, match="references itself"):
        build_dag(selfish)


def test_topological_layers_report_the_cycle_path():
    with pytest.raises(DagError) as err:
        topological_layers(["x", "a", "b", "c"], {"a": ["c"], "b": ["a"], "c": ["b"], "x": []})
    assert "'a' -> 'c' -> 'b' -> 'a'" in err.value.message
    assert topological_layers(["a", "b"], {"b": ["a", "outside"]}) == [["a"], ["b"]]


def test_dependants_and_closure_for_upstream_failure_and_regeneration():
    dag = build_dag(diamond())
    assert dag.dependants("b") == ["d", "e"]
    assert dag.dependants("f") == []  # e is left of f: Python reads only its left
    assert dag.closure(["d"]) == ["b", "c", "d"]


@pytest.mark.parametrize(("strategy", "pivot", "expected"), [
    ("run_all", "", ["b", "c", "f", "d", "e"]),
    ("run_all", "d", ["b", "c", "f", "d", "e"]),
    ("run_selected", "d", ["d"]),
    ("run_before", "d", ["b", "c", "d"]),
    # by table position (f is the last column), in dependency order
    ("run_after", "d", ["f", "d", "e"]),
    ("run_after", "f", ["f"]),
])
def test_regen_strategies(strategy, pivot, expected):
    assert regen_targets(build_plan(diamond()), strategy, pivot) == expected


@pytest.mark.parametrize(("strategy", "pivot", "message"), [
    ("run_selected", "", "is required"),
    ("run_after", "zzz", "unknown column 'zzz'"),
    ("run_before", "a", "is an input column"),
    ("run_all", "a", "is an input column"),
    ("sideways", "b", "unknown strategy"),
])
def test_regen_strategy_errors(strategy, pivot, message):
    with pytest.raises(InvalidArgument) as err:
        regen_targets(build_plan(diamond()), strategy, pivot)
    assert message in err.value.message
