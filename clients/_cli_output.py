"""Output of the ``rowforge`` command: aligned text tables for people, JSON for scripts, and
progress bars (tqdm when installed, plain lines otherwise)."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, TextIO

from pydantic import BaseModel

from rowforge.clients._convert import iso_utc

MAX_CELL = 60


def to_jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return iso_utc(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def print_json(value: Any, out: TextIO | None = None, *, lines: bool = False) -> None:
    """One JSON document, or (``lines``) one JSON document per line."""
    out = out or sys.stdout
    if lines:
        for item in value:
            out.write(json.dumps(to_jsonable(item), ensure_ascii=False, default=str) + "\n")
    else:
        out.write(json.dumps(to_jsonable(value), ensure_ascii=False, indent=2, default=str)
                  + "\n")
    out.flush()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return iso_utc(value)
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(str(value).split())
    return text if len(text) <= MAX_CELL else text[:MAX_CELL - 1] + "…"


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]],
                out: TextIO | None = None) -> None:
    """An aligned text table (long cells are shortened)."""
    out = out or sys.stdout
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out.write(line.rstrip() + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                  + "\n")
    out.flush()


class Progress:
    """A progress bar on stderr: tqdm on a terminal; elsewhere (a log, a CI job) a plain line
    only when the state changes, every ``PLAIN_EVERY`` seconds, and at the end; ``quiet``
    shows nothing. Bars still open when a command fails are taken down first
    (:func:`abandon_progress`), so an error never lands on a bar's line."""

    PLAIN_EVERY = 10.0
    active: ClassVar[set[Progress]] = set()

    def __init__(self, total: int | None, desc: str, unit: str = "it", *,
                 quiet: bool = False, unit_scale: bool = False, eta: bool = False) -> None:
        """``eta``: plain lines show the rate and the time left too (tqdm always does)."""
        self.total, self.desc, self.unit, self.quiet = total, desc, unit, quiet
        self.eta, self._started = eta, time.monotonic()
        self.n = 0
        self._bar: Any = None
        self._postfix = ""
        self._printed: tuple[int, str] | None = None
        self._printed_at = 0.0
        if quiet:
            return
        Progress.active.add(self)
        if sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:  # optional (the `client` extra installs it)
                tqdm = None  # type: ignore[assignment,misc]
            if tqdm is not None:
                self._bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale,
                                 file=sys.stderr, leave=True)

    def update_to(self, n: int, total: int | None = None, postfix: str = "") -> None:
        if total is not None:
            self.total = total
        delta, self.n = n - self.n, n
        self._postfix = postfix or self._postfix
        if self.quiet:
            return
        if self._bar is not None:
            if total is not None and self._bar.total != total:
                self._bar.total = total
            if postfix:
                self._bar.set_postfix_str(postfix, refresh=False)
            self._bar.update(delta)
            return
        changed = self._printed is None or bool(postfix and postfix != self._printed[1])
        if changed or time.monotonic() - self._printed_at >= self.PLAIN_EVERY:
            self._print_line()

    def _print_line(self) -> None:
        if self._printed == (self.n, self._postfix):
            return
        of = f"/{self.total}" if self.total else ""
        tail = f" ({self._postfix})" if self._postfix else ""
        elapsed = time.monotonic() - self._started
        if self.eta and self.n and elapsed > 0:
            rate = self.n / elapsed
            tail += f", {rate:.1f} {self.unit}/s"
            if self.total and self.n < self.total:
                tail += f", ETA {dt.timedelta(seconds=round((self.total - self.n) / rate))}"
        sys.stderr.write(f"{self.desc}: {self.n}{of} {self.unit}{tail}\n")
        sys.stderr.flush()
        self._printed, self._printed_at = (self.n, self._postfix), time.monotonic()

    def close(self) -> None:
        Progress.active.discard(self)
        if self._bar is not None:
            self._bar.close()
        elif not self.quiet and (self._printed is not None or self.n):
            self._print_line()  # where it ended

    def abandon(self) -> None:
        """Take the bar off the screen (the command failed; its error follows)."""
        Progress.active.discard(self)
        if self._bar is not None:
            self._bar.leave = False
            self._bar.close()  # clears its line


def abandon_progress() -> None:
    """Take down every open progress bar before an error is printed."""
    for progress in list(Progress.active):
        progress.abandon()
