"""Conversation history for multi-turn LLM columns and chat tables.

One table is one conversation: every row before the current one becomes a user turn (the
column's prompt rendered with that row's values; for a chat table's AI column, the User
message) followed by an assistant turn (the column's value in that row). The oldest turns are
dropped until the prompt fits the model's context length minus the output reserve (the
system prompt and the current turn are always kept). Earlier turns are sent as text only:
files attached to old rows are not re-sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from rowforge.fastcore import MissingReferenceError, Template
from rowforge.server.providers import Message, ModelSpec, trim_history
from rowforge.server.tables.model import CellStatus, Row, TableSchema

#: At most this many earlier rows are read (trimming usually keeps far fewer).
MAX_HISTORY_ROWS = 1000


class HistorySource(Protocol):
    async def history(self, schema: TableSchema, *, before_row_id: str | None,
                      columns: list[str], limit: int = ...) -> list[Row]: ...


def turns(rows: Sequence[Row], column: str, prompt: Template) -> list[Message]:
    """User/assistant turns from earlier rows (oldest first).

    A row whose prompt renders empty adds no user turn; a row whose ``column`` has no DONE
    value (failed, skipped, still pending) adds no assistant turn.
    """
    out: list[Message] = []
    for row in rows:
        values: dict[str, Any] = {name: cell.value for name, cell in row.cells.items()}
        try:
            text = prompt.render(values)
        except MissingReferenceError:  # a referenced column was dropped since
            text = ""
        if text:
            out.append(Message("user", text))
        cell = row.cells.get(column)
        if cell is not None and cell.status == CellStatus.DONE and cell.value not in (None, ""):
            out.append(Message("assistant", str(cell.value)))
    return out


def output_reserve(spec: ModelSpec, max_tokens: int | None) -> int:
    """Tokens kept free for the answer: ``max_tokens``, else the model's default output cap,
    never more than half the context (so history always gets the other half)."""
    wanted = max_tokens if max_tokens is not None else spec.max_output_tokens
    return max(1, min(wanted, spec.context_length // 2))


async def conversation(source: HistorySource, schema: TableSchema, *, row_id: str, column: str,
                       prompt: Template, spec: ModelSpec, max_tokens: int | None,
                       system: Message | None, current: Message) -> list[Message]:
    """The messages to send: system prompt, earlier turns (trimmed), the current turn."""
    columns = list(dict.fromkeys([*prompt.references, column]))
    rows = await source.history(schema, before_row_id=row_id, columns=columns,
                                limit=MAX_HISTORY_ROWS)
    messages = [system] if system is not None else []
    messages += turns(rows, column, prompt)
    messages.append(current)
    if len(messages) <= 2:
        return messages
    return trim_history(messages, spec.context_length, output_reserve(spec, max_tokens))
