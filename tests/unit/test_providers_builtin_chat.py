"""The built-in chat model through the public API: streaming, memory, limits, JSON, RAG."""

from __future__ import annotations

import json

import pytest

from rowforge.server.errors import FailedPrecondition, InvalidArgument
from rowforge.server.providers import (
    Attachment,
    ChatChunk,
    Message,
    ModelRegistry,
    chat,
    json_schema_format,
    prompts,
    stream_chat,
)

REGISTRY = ModelRegistry.from_config([])
CHAT = REGISTRY.get("rowforge/chat")


async def collect(messages: list, **options: object) -> list[ChatChunk]:
    return [c async for c in stream_chat(CHAT, messages, **options)]


async def test_streams_pieces_then_one_final_chunk() -> None:
    chunks = await collect([Message("user", "Tell me about the ocean tides please.")])
    *deltas, final = chunks
    assert len(deltas) > 5 and all(c.text and not c.is_final for c in deltas)
    assert final.text == "" and final.finish_reason == "stop"
    assert final.model == "rowforge/chat" and final.cost_usd == 0.0
    text = "".join(c.text for c in deltas)
    assert "ocean" in text and "tides" in text
    assert final.usage is not None
    assert final.usage.completion_tokens == len(deltas)
    assert final.usage.total_tokens == final.usage.prompt_tokens + final.usage.completion_tokens


async def test_deterministic_and_temperature_ignored() -> None:
    messages = [Message("system", "Be brief."), Message("user", "Describe a quiet forest.")]
    first = await chat(CHAT, messages, temperature=0.0)
    second = await chat(CHAT, messages, temperature=1.9, top_p=0.5)
    assert first == second


async def test_different_prompts_get_different_answers() -> None:
    a = await chat(CHAT, [Message("user", "Describe a quiet forest.")])
    b = await chat(CHAT, [Message("user", "Explain compound interest.")])
    assert a.text != b.text


async def test_remembers_the_name_from_history() -> None:
    history = [{"role": "system", "content": "You are helpful."},
               {"role": "user", "content": "My name is Alice"},
               {"role": "assistant", "content": "Nice to meet you!"},
               {"role": "user", "content": "What's my name?"}]
    result = await chat(CHAT, history)
    assert "Alice" in result.text
    alone = await chat(CHAT, history[-1:])
    assert "Alice" not in alone.text


@pytest.mark.parametrize(("fact", "question", "expected"), [
    ("I'm Bob Smith, nice to meet you", "what is my name?", "Bob Smith"),
    ("My favourite colour is green.", "What is my favourite colour?", "green"),
    ("my dog's name is irrelevant. My city is Lisbon", "what's my city?", "Lisbon"),
])
async def test_recalls_simple_facts(fact: str, question: str, expected: str) -> None:
    result = await chat(CHAT, [Message("user", fact), Message("assistant", "OK."),
                               Message("user", question)])
    assert expected in result.text


async def test_max_tokens_cuts_with_finish_reason_length() -> None:
    messages = [Message("user", "Write a long explanation of how rainbows form in the sky.")]
    full = await chat(CHAT, messages)
    cut = await chat(CHAT, messages, max_tokens=3)
    assert cut.finish_reason == "length" and full.finish_reason == "stop"
    assert cut.usage.completion_tokens == 3
    assert full.text.startswith(cut.text) and len(cut.text) < len(full.text)


async def test_stop_sequence_ends_the_answer() -> None:
    messages = [Message("user", "Explain how rainbows form in the sky.")]
    full = await chat(CHAT, messages)
    word = "rainbows"
    assert word in full.text
    cut = await chat(CHAT, messages, stop=[word, "zzz"])
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[:full.text.index(word)]


async def test_acknowledges_attachments_by_type_and_size() -> None:
    image = Attachment("image/png", data=b"\x89PNG" + b"\0" * 12341)
    audio = Attachment("audio/wav", data=b"RIFF" + b"\0" * 96)
    result = await chat(CHAT, [Message("user", "What is in these?", attachments=(image, audio))])
    assert "image (image/png, 12345 bytes)" in result.text
    assert "audio clip (audio/wav, 100 bytes)" in result.text


async def test_dict_messages_with_attachment_dicts() -> None:
    result = await chat(CHAT, [{"role": "user", "content": "Look",
                                "attachments": [{"content_type": "image/jpeg",
                                                 "url": "https://example.com/cat.jpg"}]}])
    assert "image (image/jpeg, at https://example.com/cat.jpg)" in result.text


async def test_rag_answer_quotes_and_cites_the_references() -> None:
    refs = prompts.format_references([
        "Title: Paris\nParis is the capital of France. It is on the Seine.",
        "Berlin is the capital of Germany.",
        "Bananas are yellow."])
    system = f"Answer from the references.\n{refs}\n{prompts.CITATION_INSTRUCTION}"
    result = await chat(CHAT, [Message("system", system),
                               Message("user", "What is the capital of France?")])
    assert "Paris is the capital of France [@0]" in result.text
    assert prompts.parse_citations(result.text) == [0, 1]
    uncited = await chat(CHAT, [Message("system", f"Answer from the references.\n{refs}"),
                                Message("user", "What is the capital of France?")])
    assert "Paris is the capital of France" in uncited.text
    assert prompts.parse_citations(uncited.text) == []


def test_prompt_helpers_round_trip() -> None:
    block = prompts.format_references(["one fact.", "two\nlines."])
    assert prompts.parse_references(block) == {0: "one fact.", 1: "two\nlines."}
    assert prompts.cite([0, 3]) == "[@0; @3]"
    assert prompts.parse_citations("a [@2] b [@0; @2] c [@1]") == [2, 0, 1]
    assert prompts.wants_citations("x " + prompts.CITATION_INSTRUCTION)
    assert not prompts.wants_citations("cite things")


async def test_json_object_format_gives_an_object() -> None:
    result = await chat(CHAT, [Message("user", "Summarise the weather report.")],
                        response_format={"type": "json_object"})
    assert isinstance(result.parsed, dict) and json.loads(result.text) == result.parsed


async def test_json_schema_format_parses_and_validates() -> None:
    schema = {"type": "object", "required": ["sentiment", "rating"],
              "properties": {"sentiment": {"enum": ["positive", "negative", "neutral"]},
                             "rating": {"type": "integer", "minimum": 1, "maximum": 5}}}
    result = await chat(CHAT, [Message("user", "A negative review: it broke in a day.")],
                        response_format=json_schema_format(schema))
    assert result.parsed["sentiment"] == "negative"  # the prompt names it
    assert 1 <= result.parsed["rating"] <= 5


async def test_json_cut_at_max_tokens_is_not_retryable() -> None:
    schema = {"type": "object", "properties": {"text": {"type": "string"}}}
    with pytest.raises(FailedPrecondition) as info:  # the same request would be cut again
        await chat(CHAT, [Message("user", "Write a long story about a dragon.")],
                   response_format=json_schema_format(schema), max_tokens=3)
    assert info.value.reason == "OUTPUT_TRUNCATED" and "raise max_tokens" in info.value.message


@pytest.mark.parametrize(("options", "field"), [
    ({"temperature": 2.5}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 10**6}, "max_tokens"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": [""]}, "stop"),
    ({"timeout": 0}, "timeout"),
    ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema.schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 5}}}},
     "response_format.json_schema.schema"),
])
async def test_bad_parameters_are_invalid_argument(options: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        await collect([Message("user", "hi")], **options)
    assert field in [v.field for v in info.value.field_violations]


@pytest.mark.parametrize(("messages", "field"), [
    ([], "messages"),
    ([{"role": "wizard", "content": "hi"}], "messages[0].role"),
    ([{"role": "user", "content": 42}], "messages[0].content"),
    ([{"role": "user", "content": "x", "attachments": [{"content_type": "png", "data": b"1"}]}],
     "messages[0].attachments[0].content_type"),
    ([{"role": "user", "content": "x", "attachments": [{"content_type": "image/png"}]}],
     "messages[0].attachments[0]"),
    ([Message("user", "x", attachments=(Attachment("application/pdf", data=b"%PDF"),))],
     "messages[0].attachments[0].content_type"),
])
async def test_bad_messages_are_invalid_argument(messages: list, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        await collect(messages)
    assert info.value.field_violations[0].field == field


async def test_capabilities_are_enforced() -> None:
    embedder = REGISTRY.get("rowforge/embed")
    with pytest.raises(InvalidArgument) as info:
        await chat(embedder, [Message("user", "hi")])
    assert info.value.reason == "MODEL_CAPABILITY_MISSING"
    text_only = ModelRegistry.from_config([{"id": "x/text", "route": "openai/x",
                                            "capabilities": ["chat"]}]).get("x/text")
    with pytest.raises(InvalidArgument) as info:
        await chat(text_only, [Message("user", "hi", attachments=(
            Attachment("image/png", data=b"1"),))])
    assert info.value.metadata["capability"] == "image"


async def test_prompt_longer_than_the_context_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as info:
        await chat(CHAT, [Message("user", "word " * 40000)])
    assert info.value.reason == "CONTEXT_WINDOW_EXCEEDED"


async def test_a_call_costs_microseconds() -> None:
    import time

    messages = [Message("system", "You are helpful."),
                Message("user", "Summarise the quarterly report for the board in one line.")]
    await chat(CHAT, messages)
    start = time.perf_counter()
    for _ in range(200):
        await chat(CHAT, messages)
    per_call = (time.perf_counter() - start) / 200
    assert per_call < 0.002, f"{per_call * 1e6:.0f} us per call"


@pytest.mark.parametrize("options", [
    {}, {"max_tokens": 4}, {"stop": ["the"]}, {"response_format": {"type": "json_object"}}])
async def test_whole_answer_equals_the_joined_stream(options: dict) -> None:
    messages = [Message("user", "Explain how the tides follow the moon.")]
    *deltas, final = await collect(messages, **options)
    result = await chat(CHAT, messages, **options)
    assert result.text == "".join(c.text for c in deltas)
    assert (result.finish_reason, result.usage) == (final.finish_reason, final.usage)
