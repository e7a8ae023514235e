"""Reciprocal Rank Fusion: both implementations, and compiled == the Python oracle."""

from __future__ import annotations

import math
import sys
import types
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rowforge import fastcore
from rowforge.fastcore._py import rrf as py_rrf

try:
    from rowforge.fastcore import _rrf as compiled_rrf
except ImportError:  # pragma: no cover - depends on the build
    compiled_rrf = None

NOT_BUILT = "rowforge.fastcore._rrf is not built (pip install --no-build-isolation -e .)"
IMPLS = [
    pytest.param(py_rrf, id="py"),
    pytest.param(
        compiled_rrf,
        id="compiled",
        marks=pytest.mark.skipif(compiled_rrf is None, reason=NOT_BUILT),
    ),
]

Rrf = Callable[..., list[tuple[Any, float]]]


@pytest.fixture(params=IMPLS)
def rrf(request: pytest.FixtureRequest) -> Rrf:
    return request.param.rrf


def test_scores_follow_the_formula(rrf: Rrf) -> None:
    result = rrf([["a", "b", "c"], ["b", "a"]], k=60, top_k=None)
    expected = {
        "a": 1 / 61 + 1 / 62,
        "b": 1 / 62 + 1 / 61,
        "c": 1 / 63,
    }
    assert {i: s for i, s in result} == pytest.approx(expected, rel=1e-15)
    assert [i for i, _ in result][2] == "c"


def test_best_first_and_top_k(rrf: Rrf) -> None:
    lists = [["a", "b", "c", "d"], ["c", "a", "e"]]
    full = rrf(lists, top_k=None)
    assert [i for i, _ in full] == ["a", "c", "b", "e", "d"]
    assert rrf(lists, top_k=2) == full[:2]
    assert rrf(lists) == full  # default top_k=10 covers all five
    assert rrf(lists, top_k=100) == full
    scores = [s for _, s in full]
    assert scores == sorted(scores, reverse=True)


def test_weights(rrf: Rrf) -> None:
    lists = [["a", "b"], ["b", "a"]]
    assert [i for i, _ in rrf(lists, weights=[2.0, 1.0])] == ["a", "b"]
    assert [i for i, _ in rrf(lists, weights=[1.0, 2.0])] == ["b", "a"]
    (top, score), _ = rrf(lists, weights=[2, 1], k=0)
    assert top == "a" and score == pytest.approx(2 / 1 + 1 / 2)


def test_zero_weight_list_still_contributes_ids_with_zero_score(rrf: Rrf) -> None:
    assert rrf([["a"], ["z"]], weights=[1.0, 0.0], top_k=None) == [("a", 1 / 61), ("z", 0.0)]


def test_k_zero_is_one_over_rank(rrf: Rrf) -> None:
    assert rrf([["a", "b"]], k=0, top_k=None) == [("a", 1.0), ("b", 0.5)]


def test_repeated_id_in_one_list_counts_its_best_rank_once(rrf: Rrf) -> None:
    assert rrf([["a", "b", "a", "a"]], top_k=None) == [("a", 1 / 61), ("b", 1 / 62)]


def test_ties_break_on_best_rank_then_first_appearance(rrf: Rrf) -> None:
    # Identical scores and best ranks: first appearance decides.
    assert [i for i, _ in rrf([["p", "q"], ["q", "p"]])] == ["p", "q"]
    assert [i for i, _ in rrf([["q", "p"], ["p", "q"]])] == ["q", "p"]
    tie = [["t1", "u"], ["u", "t2"], ["t2", "t1"]]  # every id at ranks 1 and 2
    assert [i for i, _ in rrf(tie, top_k=None)] == ["t1", "u", "t2"]
    # Exactly equal scores (k=0): x = 1/1, y = 0/2 + 2/2. x has the better best rank (1 vs 2)
    # and wins although y appears first.
    lists = [["q", "y"], ["x"], ["w", "y"]]
    result = rrf(lists, k=0, weights=[0, 1, 2], top_k=None)
    assert result == [("w", 2.0), ("x", 1.0), ("y", 1.0), ("q", 0.0)]


def test_mixed_hashable_ids(rrf: Rrf) -> None:
    result = rrf([[1, "1", (1, 2)], [(1, 2), 1]], top_k=None)
    assert [i for i, _ in result] == [1, (1, 2), "1"]
    # Equal keys are one id, reported as first seen: 1 == 1.0 == True.
    assert rrf([[1], [1.0], [True]], top_k=None) == [(1, 3 / 61)]


def test_accepts_any_iterables(rrf: Rrf) -> None:
    gen = (x for x in ["a", "b"])
    assert rrf(iter([gen, ("b",), range(2)]), top_k=None) == rrf(
        [["a", "b"], ["b"], [0, 1]], top_k=None
    )


def test_empty_inputs(rrf: Rrf) -> None:
    assert rrf([]) == []
    assert rrf([[], []]) == []
    assert rrf([], weights=[]) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": -1}, "k must be"),
        ({"k": math.nan}, "k must be"),
        ({"k": math.inf}, "k must be"),
        ({"weights": [1.0]}, "2 ranked lists"),
        ({"weights": [1.0, 2.0, 3.0]}, "2 ranked lists"),
        ({"weights": [1.0, -0.5]}, "weights must be"),
        ({"weights": [1.0, math.nan]}, "weights must be"),
        ({"top_k": 0}, "top_k must be"),
        ({"top_k": -3}, "top_k must be"),
    ],
)
def test_bad_arguments(rrf: Rrf, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        rrf([["a"], ["b"]], **kwargs)


def test_bad_argument_types(rrf: Rrf) -> None:
    with pytest.raises(TypeError):
        rrf([["a"]], top_k=2.5)
    with pytest.raises(TypeError, match="k must be"):
        rrf([["a"]], k="60")
    with pytest.raises(TypeError, match="weights must be"):
        rrf([["a"]], weights=[True])
    with pytest.raises(TypeError):
        rrf([[["unhashable"]]])
    with pytest.raises(TypeError):
        rrf([5])  # a ranked list must be iterable


def test_id_with_raising_eq_propagates(rrf: Rrf) -> None:
    class Collide:
        def __hash__(self) -> int:
            return 1

        def __eq__(self, other: object) -> bool:
            raise RuntimeError("eq failed")

    with pytest.raises(RuntimeError, match="eq failed"):
        rrf([[Collide(), Collide()]])


def test_id_eq_mutating_the_input_list_is_safe(rrf: Rrf) -> None:
    victim: list[Any] = []

    class Mutator:
        def __hash__(self) -> int:
            return 7

        def __eq__(self, other: object) -> bool:
            victim.clear()  # frees the caller's list storage mid-call
            return False

    victim.extend([Mutator(), Mutator(), "a", Mutator()])
    result = rrf([victim], top_k=None)
    assert len(result) == 4
    # A list of plain str ids, compared against a Mutator with a colliding hash.
    plain = ["x", "y", "z"]

    class Collider:
        def __hash__(self) -> int:
            return hash("y")

        def __eq__(self, other: object) -> bool:
            plain.clear()
            return False

    assert len(rrf([[Collider()], plain], top_k=None)) == 4


@pytest.mark.skipif(compiled_rrf is None, reason=NOT_BUILT)
def test_compiled_keeps_reference_counts() -> None:
    ident = "".join(["row", "-1"])
    before = sys.getrefcount(ident)
    for _ in range(1000):
        compiled_rrf.rrf([[ident, "x"], ["x", ident]])
    for _ in range(100):
        with pytest.raises(ValueError):
            compiled_rrf.rrf([[ident]], top_k=0)
    assert sys.getrefcount(ident) == before


def test_public_api_picks_one_implementation() -> None:
    expected = compiled_rrf.rrf if fastcore.COMPILED else py_rrf.rrf
    assert fastcore.rrf is expected


# --- compiled == oracle ------------------------------------------------------------------------

_ids = st.one_of(st.integers(0, 12), st.sampled_from(["a", "b", "c", "d", "e", "é", "中"]))
_lists = st.lists(st.lists(_ids, max_size=15), max_size=4)


def _same(module: types.ModuleType, other: types.ModuleType, *args: Any, **kwargs: Any) -> None:
    mine = module.rrf(*args, **kwargs)
    ref = other.rrf(*args, **kwargs)
    assert [i for i, _ in mine] == [i for i, _ in ref]
    assert [type(i) for i, _ in mine] == [type(i) for i, _ in ref]
    for (_, a), (_, b) in zip(mine, ref, strict=True):
        assert abs(a - b) <= 1e-12
        assert a == b  # same summation order: in fact bit-identical


@pytest.mark.skipif(compiled_rrf is None, reason=NOT_BUILT)
@settings(max_examples=500, deadline=None)
@given(
    lists=_lists,
    k=st.one_of(st.integers(0, 100), st.floats(0, 1000)),
    top_k=st.one_of(st.none(), st.integers(1, 20)),
    data=st.data(),
)
def test_compiled_equals_oracle(
    lists: list[list[Any]], k: float, top_k: int | None, data: st.DataObject
) -> None:
    weights = data.draw(
        st.one_of(
            st.none(),
            st.lists(
                st.sampled_from([0.0, 0.5, 1.0, 1.0, 2.0, 1 / 3]),
                min_size=len(lists),
                max_size=len(lists),
            ),
        )
    )
    _same(compiled_rrf, py_rrf, lists, k=k, weights=weights, top_k=top_k)


@pytest.mark.skipif(compiled_rrf is None, reason=NOT_BUILT)
@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 4), size=st.integers(0, 300), pool=st.integers(1, 400), seed=st.integers())
def test_compiled_equals_oracle_on_larger_lists(n: int, size: int, pool: int, seed: int) -> None:
    import random

    rng = random.Random(seed)
    lists = [[f"id{rng.randrange(pool)}" for _ in range(size)] for _ in range(n)]
    _same(compiled_rrf, py_rrf, lists, top_k=rng.choice([None, 1, 10]))


@pytest.mark.skipif(compiled_rrf is None, reason=NOT_BUILT)
@settings(max_examples=200, deadline=None)
@given(lists=_lists, top_k=st.one_of(st.none(), st.integers(1, 20)))
def test_compiled_errors_equal_oracle(lists: list[list[Any]], top_k: int | None) -> None:
    bad_weights = [1.0] * (len(lists) + 1)
    for kwargs in ({"weights": bad_weights}, {"k": -1}, {"top_k": 0}):
        with pytest.raises(ValueError) as mine:
            compiled_rrf.rrf(lists, **kwargs)
        with pytest.raises(ValueError) as ref:
            py_rrf.rrf(lists, **kwargs)
        assert str(mine.value) == str(ref.value)
