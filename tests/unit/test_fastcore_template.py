"""Templates: both implementations, and the compiled one proven equal to the Python oracle."""

from __future__ import annotations

import collections
import pickle
import sys
import types
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rowforge import fastcore
from rowforge.fastcore import MissingReferenceError, rename_references
from rowforge.fastcore._py import template as py_template

try:
    from rowforge.fastcore import _template as compiled_template
except ImportError:  # pragma: no cover - depends on the build
    compiled_template = None

NOT_BUILT = "rowforge.fastcore._template is not built (pip install --no-build-isolation -e .)"
IMPLS = [
    pytest.param(py_template, id="py"),
    pytest.param(
        compiled_template,
        id="compiled",
        marks=pytest.mark.skipif(compiled_template is None, reason=NOT_BUILT),
    ),
]


@pytest.fixture(params=IMPLS)
def Template(request: pytest.FixtureRequest) -> type:
    return request.param.Template


def test_references_in_first_appearance_order_without_duplicates(Template: type) -> None:
    t = Template("${b} and ${a}, again ${b} then ${c}")
    assert t.references == ["b", "a", "c"]
    assert t.text == "${b} and ${a}, again ${b} then ${c}"


def test_references_returns_a_copy(Template: type) -> None:
    t = Template("${a}")
    t.references.append("x")
    assert t.references == ["a"]


def test_render_substitutes_every_occurrence(Template: type) -> None:
    t = Template('Translate "${input}" into ${lang}; again: ${input}.')
    row = {"input": "hello", "lang": "Italian", "unused": 1}
    assert t.render(row) == 'Translate "hello" into Italian; again: hello.'


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text", "text"),
        ("", ""),
        (None, ""),
        (42, "42"),
        (1.5, "1.5"),
        (True, "True"),
        (False, "False"),
        ([1, "a"], "[1, 'a']"),
    ],
)
def test_value_conversion(Template: type, value: Any, expected: str) -> None:
    assert Template("<${v}>").render({"v": value}) == f"<{expected}>"


def test_str_subclass_rendered_as_is(Template: type) -> None:
    class Loud(str):
        def __str__(self) -> str:
            return "NOT USED"

    assert Template("${v}").render({"v": Loud("quiet")}) == "quiet"


def test_no_references_returns_text(Template: type) -> None:
    t = Template("plain text, $ { } \\ only")
    assert t.references == []
    assert t.render({}) == "plain text, $ { } \\ only"
    assert Template("").render({}) == ""


@pytest.mark.parametrize(
    ("text", "row", "expected"),
    [
        ("\\${a}", {}, "${a}"),  # escape renders a literal ${
        ("\\\\${a}", {}, "\\${a}"),  # a backslash cannot be escaped: \ then the escape
        ("x \\${a} ${a}", {"a": "1"}, "x ${a} 1"),
        ("${abc", {}, "${abc"),  # unterminated
        ("${", {}, "${"),
        ("$", {}, "$"),
        ("${}", {}, "${}"),  # empty
        ("${a{b}", {}, "${a{b}"),  # brace inside the name
        ("${a${b}}", {"b": "B"}, "${aB}"),  # the inner reference wins
        ("${a}}", {"a": "A"}, "A}"),
        ("$${a}", {"a": "A"}, "$A"),
        ("\\${", {}, "${"),
        ("\\", {}, "\\"),
        ("\\$", {}, "\\$"),
        ("${ a }", {" a ": "spaced"}, "spaced"),  # the braces' content is the name, exactly
        ("${a\\}", {"a\\": "bs"}, "bs"),
    ],
)
def test_syntax_edge_cases(Template: type, text: str, row: dict[str, str], expected: str) -> None:
    assert Template(text).render(row) == expected


def test_whitespace_in_name_is_not_trimmed(Template: type) -> None:
    with pytest.raises(MissingReferenceError) as info:
        Template("${ a }").render({"a": "x"})
    assert info.value.column == " a "


def test_missing_reference_error(Template: type) -> None:
    t = Template("${present} ${absent}")
    with pytest.raises(MissingReferenceError) as info:
        t.render({"present": "x"})
    err = info.value
    assert isinstance(err, KeyError)
    assert err.column == "absent"
    assert "absent" in str(err)
    # No chained KeyError traceback: the error itself says what is missing.
    assert err.__cause__ is None
    assert err.__suppress_context__ or err.__context__ is None


def test_missing_reference_is_first_in_template_order(Template: type) -> None:
    with pytest.raises(MissingReferenceError) as info:
        Template("${b} ${a}").render({})
    assert info.value.column == "b"


def test_unicode_of_every_width(Template: type) -> None:
    t = Template("é ${latin} Ω ${bmp} 𝄞 ${astral} ${ascii} 名前 ${名前}")
    row = {"latin": "ñ", "bmp": "中文", "astral": "😀", "ascii": "a", "名前": "ü"}
    assert t.render(row) == "é ñ Ω 中文 𝄞 😀 a 名前 ü"
    # ASCII template, wide values: the output widens to the widest piece.
    assert Template("${a}-${b}").render({"a": "x", "b": "😀"}) == "x-😀"
    assert Template("${a}-${b}").render({"a": "ÿ", "b": "x"}) == "ÿ-x"


def test_many_distinct_references(Template: type) -> None:
    names = [f"c{i}" for i in range(100)]  # more than the compiled renderer's stack buffer
    t = Template(" ".join(f"${{{n}}}" for n in names))
    row = {n: n.upper() for n in names}
    assert t.render(row) == " ".join(n.upper() for n in names)


class _Row(Mapping[str, Any]):
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def test_any_mapping(Template: type) -> None:
    t = Template("${a}/${b}")
    assert t.render(_Row({"a": 1, "b": 2})) == "1/2"
    assert t.render(types.MappingProxyType({"a": 1, "b": 2})) == "1/2"
    assert t.render(collections.defaultdict(lambda: "dflt", a="A")) == "A/dflt"
    assert t.render(collections.OrderedDict(a="A", b="B")) == "A/B"
    with pytest.raises(MissingReferenceError):
        t.render(_Row({"a": 1}))


def test_value_str_failure_propagates(Template: type) -> None:
    class Bad:
        def __str__(self) -> str:
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        Template("${ok} ${bad}").render({"ok": "x", "bad": Bad()})


def test_not_a_mapping(Template: type) -> None:
    with pytest.raises(TypeError):
        Template("${a}").render(["a"])


def test_text_must_be_str(Template: type) -> None:
    with pytest.raises(TypeError, match="str"):
        Template(b"${a}")


def test_reinitialising_replaces_the_template(Template: type) -> None:
    t = Template("${a}")
    t.__init__("${b}!")
    assert t.references == ["b"] and t.render({"b": 1}) == "1!"


@pytest.mark.skipif(compiled_template is None, reason=NOT_BUILT)
def test_compiled_uninitialised_template_raises() -> None:
    t = compiled_template.Template.__new__(compiled_template.Template)
    with pytest.raises(ValueError, match="not initialised"):
        t.render({})


def test_pickle_and_repr(Template: type) -> None:
    t = Template("hi ${name}")
    clone = pickle.loads(pickle.dumps(t))
    assert type(clone) is Template
    assert clone.render({"name": "bob"}) == "hi bob"
    assert repr(t) == "Template('hi ${name}')"


@pytest.mark.skipif(compiled_template is None, reason=NOT_BUILT)
def test_compiled_renderer_keeps_reference_counts() -> None:
    value = "".join(["unique", "-value"])  # a fresh object whose count we can watch
    number = 10**30
    t = compiled_template.Template("${a} ${n} ${a} ${none}")
    row = {"a": value, "n": number, "none": None}
    before = sys.getrefcount(value), sys.getrefcount(number)
    for _ in range(1000):
        t.render(row)
    for _ in range(1000):  # error paths release what they held
        with pytest.raises(MissingReferenceError):
            compiled_template.Template("${a} ${n} ${missing}").render(row)
    assert (sys.getrefcount(value), sys.getrefcount(number)) == before


def test_public_api_picks_one_implementation() -> None:
    expected = compiled_template.Template if fastcore.COMPILED else py_template.Template
    assert fastcore.Template is expected
    assert fastcore.MissingReferenceError is MissingReferenceError


# --- compiled == oracle ------------------------------------------------------------------------

# Few distinct names and many syntax characters, so references, escapes and near misses collide.
_template_text = st.lists(
    st.sampled_from([*"ab $${}}\\x\n", "é", "中", "😀", "${", "\\${", "${a}"]), max_size=30
).map("".join)
_value = st.one_of(
    st.text(max_size=5),
    st.none(),
    st.integers(),
    st.booleans(),
    st.floats(allow_nan=False),
)
_row = st.dictionaries(
    st.sampled_from(["a", "b", "x", " ", "a}", "é", "中", "😀", "ab", ""]), _value, max_size=8
)


def _outcome(module: types.ModuleType, text: str, row: dict[str, Any]) -> tuple[str, Any]:
    t = module.Template(text)
    try:
        return ("ok", (t.references, t.render(row)))
    except MissingReferenceError as e:
        return ("missing", (t.references, e.column, str(e)))


@pytest.mark.skipif(compiled_template is None, reason=NOT_BUILT)
@settings(max_examples=600, deadline=None)
@given(text=_template_text, row=_row)
def test_compiled_equals_oracle(text: str, row: dict[str, Any]) -> None:
    assert _outcome(compiled_template, text, row) == _outcome(py_template, text, row)


@pytest.mark.skipif(compiled_template is None, reason=NOT_BUILT)
@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=60), row=_row)
def test_compiled_equals_oracle_on_arbitrary_text(text: str, row: dict[str, Any]) -> None:
    assert _outcome(compiled_template, text, row) == _outcome(py_template, text, row)


# --- rename_references ---------------------------------------------------------------------------


def test_rename_references_rewrites_only_references() -> None:
    text = "${old} \\${old} ${old ${other} ${old}} ${oldish}"
    renamed = rename_references(text, {"old": "new"})
    assert renamed == "${new} \\${old} ${old ${other} ${new}} ${oldish}"


def test_rename_references_swap_is_simultaneous() -> None:
    assert rename_references("${a}${b}", {"a": "b", "b": "a"}) == "${b}${a}"


@pytest.mark.parametrize("bad", ["", "x}", "{x", "}"])
def test_rename_references_rejects_unreferenceable_names(bad: str) -> None:
    with pytest.raises(ValueError, match="cannot reference"):
        rename_references("${a}", {"a": bad})


_name = st.text(alphabet=st.sampled_from(list("abxé中 $\\")), min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(text=_template_text, mapping=st.dictionaries(_name, _name, max_size=3))
def test_rename_then_render_equals_render_of_renamed_row(
    text: str, mapping: dict[str, str]
) -> None:
    before = py_template.Template(text)
    after = py_template.Template(rename_references(text, mapping))
    assert after.references == list(dict.fromkeys(mapping.get(n, n) for n in before.references))
    # Rendering with renamed columns gives the same output, whatever the names.
    row = {name: f"<{name}>" for name in before.references}
    renamed_row = {mapping.get(n, n): v for n, v in row.items()}
    if len(renamed_row) == len(row):  # a rename onto an existing name merges columns
        assert after.render(renamed_row) == before.render(row)
