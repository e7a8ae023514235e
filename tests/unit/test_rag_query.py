"""RAG query writing: the messages a column's model gets, how its answer becomes the query,
and the built-in offline model's answer (the request's key terms)."""

from __future__ import annotations

import pytest

from rowforge.server.knowledge.rag import (
    MAX_QUERY_CHARS,
    MAX_QUERY_PROMPT_CHARS,
    clean_query,
    formulate_query,
    query_messages,
)
from rowforge.server.providers import builtin_chat, prompts


def test_query_messages_carry_the_instruction_and_the_prompt() -> None:
    system, user = query_messages("  What pulls the sea?  ")
    assert system.role == "system" and system.content == prompts.QUERY_INSTRUCTION
    assert user.role == "user"
    assert prompts.request_text(user.content) == "What pulls the sea?"


def test_long_prompts_keep_their_two_ends() -> None:
    prompt = "Question: where is Paris? " + "filler " * 2000 + "Answer in French."
    request = prompts.request_text(query_messages(prompt)[1].content)
    assert len(request) <= MAX_QUERY_PROMPT_CHARS + 1
    assert request.startswith("Question: where is Paris?") and request.endswith("French.")


@pytest.mark.parametrize(("answer", "query"), [
    ("tides moon gravity", "tides moon gravity"),
    ('"tides moon gravity"\n', "tides moon gravity"),
    ("Search query: why do tides happen?\nThis finds documents about tides.",
     "why do tides happen?"),
    ("\n\n  Query:   `ocean   tides`  ", "ocean tides"),
    ("", ""),
    ("   \n  ", ""),
])
def test_the_answers_first_line_is_the_query(answer: str, query: str) -> None:
    assert clean_query(answer) == query


def test_the_query_is_bounded() -> None:
    assert len(clean_query("word " * 1000)) <= MAX_QUERY_CHARS


def test_the_builtin_model_answers_with_the_key_terms() -> None:
    def ask(prompt: str) -> str:
        return builtin_chat.answer_text(query_messages(prompt), None)

    assert ask("Why does the sea rise and fall?") == "sea rise fall"
    assert ask("<user-query>Please explain what my name is</user-query>") == "name"
    long = " ".join(f"term{i}" for i in range(40))
    assert ask(long).split() == [f"term{i}" for i in range(builtin_chat.QUERY_TERMS)]
    # Not asked for a query: the usual answer.
    assert builtin_chat.answer_text(
        [query_messages("What pulls the sea?")[1]], None).startswith("You wrote")


def test_prompt_as_query_strips_markup_and_keeps_both_ends() -> None:
    assert formulate_query("<q>Why   the\nsea?</q>") == "Why the sea?"
    long = "start " + "x " * 1000 + "end"
    out = formulate_query(long)
    assert out.startswith("start") and out.endswith("end") and len(out) <= MAX_QUERY_CHARS + 1
