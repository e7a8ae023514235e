"""The words a hybrid search sends to the full-text index (the BM25 side).

The full-text indexes (SQLite FTS5, PostgreSQL tsvector) score *every* row that contains a
query word, with no top-k pruning: a word found in half of a 50,000-row table costs 25,000
scored rows (about 20 ms here) while BM25 gives it almost no weight. So, like a search engine's
"common terms" rule:

* English stopwords are dropped;
* the remaining words are kept rarest first while their estimated document frequencies add up
  to at most :data:`POSTINGS_BUDGET` rows; a word more common than that is left out.

Tables with at most :data:`POSTINGS_BUDGET` rows keep every word (scanning them all is cheap).
Document frequencies are estimated from a sample of the rows' text, refreshed in the background
when the table has grown or shrunk by a fifth. The chosen words then go through the table
store's escaping (each word a quoted token: user text never becomes query syntax).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Sequence

from rowforge.server.knowledge import row_reads
from rowforge.server.providers.text import STOPWORDS
from rowforge.server.storage.db import Database
from rowforge.server.tables.fulltext import tokens
from rowforge.server.tables.model import TableSchema

log = logging.getLogger("rowforge.knowledge")

#: Most rows (sum of the kept words' document frequencies) one BM25 query may score.
POSTINGS_BUDGET = 3000
#: Rows read to estimate document frequencies.
SAMPLE_ROWS = 2000
#: Relative change of the table's size that makes the estimate stale.
STALE_AFTER = 0.2
#: Words seen fewer times in the sample are not kept (they count as rare).
MIN_SAMPLE_COUNT = 2

_WORD = re.compile(r"\w+")


class TermStats:
    """Estimated document frequencies of one table's words."""

    def __init__(self, rows: int, sampled: int, counts: Counter[str]) -> None:
        self.rows = rows
        self.sampled = max(1, sampled)
        self.counts = counts

    def df(self, word: str) -> float:
        """Estimated number of rows containing ``word``."""
        return self.counts.get(word, 0) * self.rows / self.sampled

    def stale(self, rows: int) -> bool:
        return abs(rows - self.rows) > STALE_AFTER * max(self.rows, 1)


def count_documents(texts: Sequence[tuple[str | None, ...]]) -> Counter[str]:
    """Document frequency of each lowercased word over ``texts`` (one tuple per row)."""
    counts: Counter[str] = Counter()
    for row in texts:
        words: set[str] = set()
        for value in row:
            if value:
                words.update(_WORD.findall(value.lower()))
        counts.update(words)
    return counts


class LexicalPlanner:
    """Chooses the BM25 query words per table (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._stats: dict[str, TermStats] = {}
        self._refreshing: dict[str, asyncio.Task[TermStats]] = {}

    async def plan(self, schema: TableSchema, query: str, table_rows: int) -> list[str]:
        """The words of ``query`` to search for (possibly none).

        Args:
            schema: The knowledge table.
            query: The user's query.
            table_rows: About how many rows the table has.
        """
        words = [w for w in tokens(query) if w not in STOPWORDS]
        if not words or table_rows <= POSTINGS_BUDGET:
            return words
        stats = self._stats.get(schema.storage_id)
        if stats is None:
            stats = await self._refresh(schema, table_rows)
        elif stats.stale(table_rows):
            self._schedule(schema, table_rows)
        kept: list[str] = []
        total = 0.0
        for word in sorted(words, key=stats.df):
            total += stats.df(word)
            if total > POSTINGS_BUDGET:
                break
            kept.append(word)
        return kept

    def _schedule(self, schema: TableSchema, rows: int) -> None:
        self._start(schema, rows)

    async def _refresh(self, schema: TableSchema, rows: int) -> TermStats:
        return await asyncio.shield(self._start(schema, rows))

    def _start(self, schema: TableSchema, rows: int) -> asyncio.Task[TermStats]:
        task = self._refreshing.get(schema.storage_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._estimate(schema, rows))
            self._refreshing[schema.storage_id] = task

            def done(t: asyncio.Task[TermStats]) -> None:
                self._refreshing.pop(schema.storage_id, None)
                if not t.cancelled() and t.exception() is not None:
                    log.warning("term statistics of %s failed: %s", schema.id, t.exception())

            task.add_done_callback(done)
        return task

    async def _estimate(self, schema: TableSchema, rows: int) -> TermStats:
        columns = row_reads.searchable_text_columns(schema)
        every = max(1, rows // SAMPLE_ROWS)
        sample = await row_reads.sample_texts(self.db, schema, columns, every, SAMPLE_ROWS)
        counts = await asyncio.to_thread(count_documents, sample)
        # Only common words matter to the budget: a word seen once in the sample stands for
        # about rows / sample rows, far below it, like a word never seen. Keeping the rest
        # would hold most of the vocabulary in memory for nothing.
        common = Counter({w: c for w, c in counts.items() if c >= MIN_SAMPLE_COUNT})
        # The sample is one row in ``every`` (row sequence numbers have gaps after deletes,
        # so scale by what was actually read rather than by ``every``).
        stats = TermStats(rows, len(sample), common)
        self._stats[schema.storage_id] = stats
        return stats

    def forget(self, storage_id: str) -> None:
        self._stats.pop(storage_id, None)
