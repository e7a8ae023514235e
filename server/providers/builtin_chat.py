"""``rowforge/chat``: an offline, deterministic chat model that answers from its prompt.

Not a language model: a handful of rules that give plausible, testable answers in
microseconds, so the engine, RAG and batch paths can be exercised and benchmarked offline.
In order, the answer is built from:

1. Structured output: with a ``json_schema`` response format, JSON valid for the schema
   (:mod:`json_generator`, values drawn from the prompt); with ``json_object``, an object.
2. Attachments of the last user turn, acknowledged by type and size:
   ``I received an image (image/png, 12345 bytes).``
3. Remembered facts: earlier user turns saying ``my name is Alice`` / ``I am Alice`` /
   ``call me Alice`` or ``my <thing> is <value>`` answer ``what's my name?`` /
   ``what is my <thing>?`` (``Your name is Alice.``).
4. RAG: asked for a search query (:data:`prompts.QUERY_INSTRUCTION`), the request's key terms
   in their order (stopwords and instruction verbs left out, at most 12); when the prompt
   lists references (:mod:`prompts`), the answer quotes the first sentence of the first two
   references; with :data:`prompts.CITATION_INSTRUCTION` in the prompt it cites them inline
   (``... [@0]``).
5. Otherwise a greeting reply, or a short restatement of the last user message plus its key
   terms.

``temperature`` and ``top_p`` are ignored: the output depends only on the messages,
``max_tokens``, ``stop`` and ``response_format``. Tokens are :func:`text.pieces` (each word or
punctuation mark with the whitespace before it); usage counts them with :func:`text.count_tokens`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rowforge.server.providers import prompts
from rowforge.server.providers import text as textutil
from rowforge.server.providers.json_generator import generate_json
from rowforge.server.providers.messages import Message
from rowforge.server.providers.results import FINISH_LENGTH, FINISH_STOP, Usage

TOKENS_PER_MESSAGE = 3
TOKENS_PER_ATTACHMENT = 85

_NAME_FACT = re.compile(
    r"\b(?i:my name is|my name's|i am|i'm|call me)\s+([A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)?)")
_FACT = re.compile(r"\bmy ([a-z][a-z ]{0,30}?) (?:is|are) ([^.!?\n,;]+)", re.IGNORECASE)
_NAME_QUESTION = re.compile(r"\b(?:what(?:'s| is) my name|who am i|do you (?:know|remember) "
                            r"my name)\b", re.IGNORECASE)
_FACT_QUESTION = re.compile(r"\bwhat(?:'s| is| are) my ([a-z][a-z ]{0,30}?)\s*\??$",
                            re.IGNORECASE | re.MULTILINE)
_GREETING = re.compile(r"^\s*(hi|hello|hey|good (morning|afternoon|evening)|greetings)\b[\s!.,]*"
                       r"(there)?[\s!.,]*$", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
# Instruction verbs are not what a prompt is about.
_NOT_KEYWORDS = frozenset({"explain", "describe", "tell", "write", "generate", "give", "list",
                           "summarize", "summarise", "analyze", "analyse", "please", "create",
                           "show", "make", "following", "help", "need", "want", "like"})


@dataclass(frozen=True)
class Completion:
    """A whole built-in answer, already cut by ``stop`` / ``max_tokens``."""

    pieces: list[str]
    finish_reason: str
    usage: Usage

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def prompt_tokens(messages: Sequence[Message]) -> int:
    """The built-in tokenizer's count of a prompt (framing and attachments included)."""
    return sum(TOKENS_PER_MESSAGE + textutil.count_tokens(m.content)
               + TOKENS_PER_ATTACHMENT * len(m.attachments) for m in messages) + 3


def complete(messages: Sequence[Message], *, max_tokens: int | None = None,
             stop: Sequence[str] | str | None = None,
             response_format: Mapping[str, Any] | None = None) -> Completion:
    """The answer to ``messages``, cut at the first ``stop`` sequence or after ``max_tokens``."""
    answer = answer_text(messages, response_format)
    finish = FINISH_STOP
    stops = [stop] if isinstance(stop, str) else [s for s in (stop or ()) if s]
    cut = min((i for i in (answer.find(s) for s in stops) if i >= 0), default=-1)
    if cut >= 0:
        answer = answer[:cut]
    pieces = textutil.pieces(answer)
    if max_tokens is not None and len(pieces) > max_tokens:
        pieces, finish = pieces[:max_tokens], FINISH_LENGTH
    usage = Usage(prompt_tokens=prompt_tokens(messages),
                  # a piece is one token, or whitespace only (at a stop sequence)
                  completion_tokens=sum(1 for p in pieces if not p.isspace()))
    return Completion(pieces=pieces, finish_reason=finish, usage=usage)


def answer_text(messages: Sequence[Message], response_format: Mapping[str, Any] | None) -> str:
    """The full answer before ``stop`` / ``max_tokens`` are applied."""
    last_user = next((m for m in reversed(messages) if m.role == "user"), None)
    question = last_user.content if last_user else ""
    prompt = "\n".join(m.content for m in messages if m.role in ("system", "developer", "user"))
    kind = (response_format or {}).get("type", "text")
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}  # type: ignore[union-attr]
        schema = spec.get("schema", spec) if isinstance(spec, Mapping) else {}
        return json.dumps(generate_json(schema, question or prompt), ensure_ascii=False)
    if kind == "json_object":
        return json.dumps({"answer": _plain_answer(messages, question, prompt),
                           "keywords": _keywords(question, 3)}, ensure_ascii=False)
    parts = [_acknowledge(last_user)] if last_user and last_user.attachments else []
    parts.append(_plain_answer(messages, question, prompt))
    return " ".join(p for p in parts if p)


# --- the rules ---------------------------------------------------------------------------

def _plain_answer(messages: Sequence[Message], question: str, prompt: str) -> str:
    if prompts.wants_search_query(prompt):
        return _search_query(prompts.request_text(question))
    remembered = _recall(messages, question)
    if remembered:
        return remembered
    references = prompts.parse_references(prompt)
    if references:
        return _from_references(references, prompts.wants_citations(prompt))
    if _GREETING.match(question):
        return "Hello! How can I help you today?"
    return _restate(question)


def _acknowledge(message: Message) -> str:
    parts = []
    for attachment in message.attachments:
        noun = {"image": "an image", "audio": "an audio clip"}.get(attachment.kind, "a file")
        where = f"{attachment.size} bytes" if attachment.size is not None \
            else f"at {attachment.url}"
        parts.append(f"{noun} ({attachment.content_type}, {where})")
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"I received {listed}."


def _recall(messages: Sequence[Message], question: str) -> str | None:
    earlier = [m.content for m in messages[:-1] if m.role == "user"]
    if _NAME_QUESTION.search(question):
        for content in reversed(earlier):
            match = _NAME_FACT.search(content) or re.search(
                r"\bmy name is\s+([\w'-]+)", content, re.IGNORECASE)
            if match:
                return f"Your name is {match.group(1).strip()}."
        return "You haven't told me your name yet."
    asked = _FACT_QUESTION.search(question)
    if asked:
        thing = asked.group(1).strip().lower()
        for content in reversed(earlier):
            for match in _FACT.finditer(content):
                if match.group(1).strip().lower() == thing:
                    return f"Your {thing} is {match.group(2).strip()}."
        return f"You haven't told me your {thing} yet."
    return None


def _from_references(references: Mapping[int, str], cite: bool) -> str:
    used = sorted(references)[:2]
    sentences = []
    for index in used:
        body = references[index]
        # A "Title: ..." first line is a label, not content.
        lines = [ln for ln in body.splitlines() if ln.strip()]
        if len(lines) > 1 and lines[0].lower().startswith("title:"):
            lines = lines[1:]
        first = _SENTENCE.split(" ".join(lines).strip())[0].strip() if lines else ""
        if not first:
            continue
        first = first.rstrip(".!?")
        sentences.append(first + (f" {prompts.cite([index])}" if cite else "") + ".")
    if not sentences:
        return "The references do not say."
    return "According to the references: " + " ".join(sentences)


def _restate(question: str) -> str:
    cleaned = " ".join(question.split())
    if not cleaned:
        return "I am ready when you are."
    words = cleaned.split(" ")
    gist = " ".join(words[:30]).rstrip(".!?,;:") + ("..." if len(words) > 30 else "")
    keywords = _keywords(cleaned, 3)
    opener = "You asked" if cleaned.endswith("?") else "You wrote"
    answer = f"{opener}: \"{gist}\"."
    if keywords:
        answer += f" The key points are {_join(keywords)}."
    return answer


#: Most terms of a search query the model writes.
QUERY_TERMS = 12
_MARKUP = re.compile(r"</?[A-Za-z][\w.:-]*(?:\s[^<>]*)?/?>")


def _search_query(request: str) -> str:
    """Key terms of a request, in order of first appearance (a keyword query)."""
    seen: dict[str, None] = {}
    for word in textutil.words(_MARKUP.sub(" ", request)):
        if word in textutil.STOPWORDS or word in _NOT_KEYWORDS or len(word) < 2:
            continue
        seen.setdefault(word)
        if len(seen) == QUERY_TERMS:
            break
    return " ".join(seen) or " ".join(request.split()[:QUERY_TERMS])


def _keywords(text: str, n: int) -> list[str]:
    all_words = textutil.words(text)
    counts = Counter(w for w in all_words
                     if w not in textutil.STOPWORDS and w not in _NOT_KEYWORDS and len(w) > 2
                     and not w.isdigit())
    order = {w: i for i, w in reversed(list(enumerate(all_words)))}
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], order[kv[0]]))[:n]]


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
