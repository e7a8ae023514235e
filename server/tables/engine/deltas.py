"""Coalescing of token deltas: fewer, larger stream messages without a visible delay.

A model streams a token every few milliseconds; one gRPC message per token would cost more
than the tokens. Per cell, the first text goes out on the next event-loop iteration (the user
sees the cell start at once, and tokens that arrived together share the message); later text
is buffered and flushed when ``max_chars`` are waiting or ``interval_s`` has passed since the
last flush (a timer makes sure buffered text never waits longer than that for the next
token).
"""

from __future__ import annotations

import asyncio

from rowforge.server.tables.engine.events import CellDelta, EventSink

#: Flush buffered text at least this often (seconds) ...
DEFAULT_INTERVAL_S = 0.03
#: ... or as soon as this many characters are waiting.
DEFAULT_MAX_CHARS = 512


class DeltaCoalescer:
    """Buffers one cell's deltas and emits :class:`CellDelta` events.

    Call :meth:`push` per token and :meth:`close` when the cell ends (also on failure or
    cancellation: it flushes what is buffered and cancels the timer).
    """

    __slots__ = ("_buffer", "_column", "_interval", "_last", "_loop", "_max_chars", "_row_id",
                 "_sink", "_size", "_timer", "emitted")

    def __init__(self, sink: EventSink, row_id: str, column: str, *,
                 interval_s: float = DEFAULT_INTERVAL_S,
                 max_chars: int = DEFAULT_MAX_CHARS) -> None:
        self._sink = sink
        self._row_id = row_id
        self._column = column
        self._interval = interval_s
        self._max_chars = max_chars
        self._buffer: list[str] = []
        self._size = 0
        self._loop = asyncio.get_running_loop()
        self._last = 0.0
        self._timer: asyncio.Handle | None = None
        #: Delta events sent so far (the next event's ``index``).
        self.emitted = 0

    def push(self, text: str) -> None:
        if not text:
            return
        self._buffer.append(text)
        self._size += len(text)
        if self._size >= self._max_chars:
            self.flush()
        elif self._timer is None:
            if self.emitted == 0:
                # The first text goes out on the next loop iteration: tokens that arrive
                # together (a fast or built-in model) still share one message.
                self._timer = self._loop.call_soon(self.flush)
                return
            now = self._loop.time()
            if now - self._last >= self._interval:
                self.flush()
            else:
                self._timer = self._loop.call_at(self._last + self._interval, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buffer:
            return
        text = self._buffer[0] if len(self._buffer) == 1 else "".join(self._buffer)
        self._buffer.clear()
        self._size = 0
        self._last = self._loop.time()
        self._sink(CellDelta(self._row_id, self._column, text, self.emitted))
        self.emitted += 1

    def discard(self) -> None:
        """Drop buffered text that was never sent (a failed attempt about to be retried)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._buffer.clear()
        self._size = 0

    def close(self) -> None:
        self.flush()
