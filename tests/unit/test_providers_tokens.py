"""Token estimates, history trimming and message conversion."""

from __future__ import annotations

import base64

import pytest

from rowforge.server.errors import InvalidArgument
from rowforge.server.providers import (
    Attachment,
    Message,
    coerce_messages,
    estimate_tokens,
    trim_history,
)
from rowforge.server.providers.text import count_tokens, pieces, stem


def test_estimate_grows_with_text_and_attachments() -> None:
    short = estimate_tokens([Message("user", "hello")])
    long = estimate_tokens([Message("user", "hello " * 100)])
    with_image = estimate_tokens([Message("user", "hello", attachments=(
        Attachment("image/png", data=b"1"),))])
    assert 0 < short < long
    assert 90 <= long - short <= 110
    assert with_image - short == 85
    assert estimate_tokens([{"role": "user", "content": "hello"}]) == short


def test_estimate_rejects_bad_messages() -> None:
    with pytest.raises(InvalidArgument):
        estimate_tokens([{"role": "nobody", "content": "x"}])


def test_trim_history_drops_oldest_turns_but_keeps_system_and_last() -> None:
    system = Message("system", "You are helpful.")
    turns = [Message("user" if i % 2 == 0 else "assistant", f"turn {i} " + "word " * 50)
             for i in range(10)]
    messages = [system, *turns]
    kept = trim_history(messages, context_length=400, reserve_output=100)
    assert kept[0] == system and kept[-1] == turns[-1]
    assert estimate_tokens(kept) <= 300
    assert kept[1:] == turns[len(turns) - (len(kept) - 1):]  # a suffix: oldest went first
    assert trim_history(messages, context_length=10**6, reserve_output=100) == messages


def test_trim_history_cannot_drop_the_last_message() -> None:
    huge = [Message("user", "old"), Message("user", "word " * 1000)]
    assert trim_history(huge, context_length=100, reserve_output=10) == huge[1:]


def test_cheap_tokenizer_and_pieces() -> None:
    assert count_tokens("Hello, world!") == 4
    assert "".join(pieces("  Hello,  world!\n")) == "  Hello,  world!\n"
    assert stem("running") == stem("runs") == "run"
    assert stem("computers") == stem("computing") == stem("compute")


def test_openai_round_trip_of_attachments() -> None:
    message = Message("user", "see", attachments=(
        Attachment("image/png", data=b"\x89PNG"), Attachment("audio/mpeg", data=b"ID3"),
        Attachment("image/jpeg", url="https://example.com/a.jpg")))
    wire = message.to_openai()
    assert wire["content"][2] == {"type": "input_audio", "input_audio": {
        "data": base64.b64encode(b"ID3").decode(), "format": "mp3"}}
    back = Message.from_openai(wire)
    assert back.content == "see"
    assert [(a.content_type, a.data, a.url) for a in back.attachments] == [
        ("image/png", b"\x89PNG", None), ("audio/mp3", b"ID3", None),
        ("image/*", None, "https://example.com/a.jpg")]
    assert Message("user", "plain").to_openai() == {"role": "user", "content": "plain"}


def test_coerce_accepts_openai_content_parts_and_base64_text() -> None:
    parts = [{"role": "user", "content": [
        {"type": "text", "text": "hi"},
        {"type": "image_url", "image_url": {"url": "data:image/gif;base64,R0lG"}}]}]
    [message] = coerce_messages(parts)
    assert message.attachments[0].content_type == "image/gif"
    [encoded] = coerce_messages([{"role": "user", "content": "x", "attachments": [
        {"content_type": "image/png", "data": base64.b64encode(b"abc").decode()}]}])
    assert encoded.attachments[0].data == b"abc"
