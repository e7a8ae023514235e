"""All knowledge tables' indexes (vectors and BM25) of this process
(``KnowledgeSearch.indexes``).

Indexes open lazily (first search) and, in the background, when the server starts. Freshness:

* writes of this process notify :meth:`KnowledgeIndexes.notify` (through
  ``RowStore.change_listeners``): the index catches up in the background at once, and the
  next search catches up first if it has not yet, so a row is searchable as soon as its write
  returned (read-your-writes);
* other replicas' writes (PostgreSQL) are picked up by a poll of the change feed at most
  ``max_age`` seconds old, by searches and by a background loop alike.

The background loop also saves indexes that changed (every ``save_interval_s``), compacts the
change feed, and forgets tables that were deleted (their files too).

Memory: the graphs of every knowledge table would otherwise all stay in memory. Under a
budget (``knowledge_index_memory_mb``), once the resident indexes' estimated size passes it,
the least recently searched ones are saved and evicted; a later search loads the table again
(the saved files, then a catch-up from the change feed), with its load time logged and in
``rowforge_knowledge_index_load_seconds``; room for the size it left with (or, on its first
open, the size its saved graphs will take) is made before it loads, and the warm-up at start
opens only the tables that fit. An index still building counts at the size it grows into,
and tables' graphs are built one table at a time, so each completes (and can be saved)
soon. An index in use (a search between its awaits, the upkeep loop) is never evicted; one
still building its graph only when evicting complete ones is not enough (its unfinished graph
is dropped, not saved: a half-built graph never is).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from rowforge.server.errors import NotFound
from rowforge.server.knowledge.lexical_index import DEFAULT_ANALYZER
from rowforge.server.knowledge.reader import Reader
from rowforge.server.knowledge.table_index import TableIndex
from rowforge.server.knowledge.vector_index import Result, saved_graph_bytes
from rowforge.server.metrics import DISABLED, Metrics
from rowforge.server.storage.db import Database
from rowforge.server.tables import row_reads
from rowforge.server.tables.change_feed import ChangeFeed, embedding_columns
from rowforge.server.tables.model import TableSchema
from rowforge.server.tables.schema_store import table_not_found

log = logging.getLogger("rowforge.knowledge")

_STORAGE_DIR = re.compile(r"ut_[0-9a-f]{1,36}")


class KnowledgeIndexes:
    """Opens, refreshes, searches, saves and forgets the per-table :class:`TableIndex` es.

    Args:
        db: The database.
        root: Directory of the index files (``<data_dir>/indexes``).
        reader: Runs the catch-up reads (default: one of its own, closed on stop).
    """

    #: Seconds between background passes (saves, polls, sweeps).
    poll_interval_s = 1.0
    #: An index that changed is saved at most this often (and when the server stops).
    save_interval_s = 30.0
    #: Feed entries read since the last compaction that trigger the next one.
    compact_after = 20_000
    #: Seconds without writes after which a table's BM25 writer (threads, arena) is dropped.
    writer_idle_s = 30.0

    def __init__(self, db: Database, root: Path, reader: Reader | None = None, *,
                 memory_budget: int = 0, metrics: Metrics = DISABLED) -> None:
        self.db = db
        self.root = root
        #: Bytes of graphs this process keeps resident (0: no limit).
        self.memory_budget = memory_budget
        self.metrics = metrics
        metrics.index_memory_from(self.memory_bytes)
        #: Indexes evicted so far, and the storage ids evicted and not yet loaded again.
        self.evictions = 0
        self._evicted: set[str] = set()
        self._used_at: dict[str, float] = {}
        #: Estimated bytes of each index at its next load (its size when last evicted, or
        #: of its saved graphs): room made before it loads.
        self._sizes: dict[str, int] = {}
        self._closing: dict[str, asyncio.Task[None]] = {}
        self._own_reader = reader is None
        self.reader = reader or Reader(db)
        self.feed = ChangeFeed(db)
        #: Oldest acceptable view of the feed for a search: SQLite has one writer (this
        #: process, which notifies), PostgreSQL may have other replicas.
        self.max_age = 1.0 if db.is_postgres else 30.0
        self._indexes: dict[str, TableIndex] = {}
        self._opening: dict[str, asyncio.Task[TableIndex]] = {}
        self._saved_at: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: One table's graphs are built at a time (see :class:`TableIndex`).
        self._build_turn = asyncio.Lock()
        #: Called with the storage id of each table forgotten (deleted): per-table caches.
        self.forget_hooks: list[Callable[[str], None]] = []

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Drop leftovers of deleted tables, then warm up and poll in the background."""
        self.root.mkdir(parents=True, exist_ok=True)
        await self.sweep()
        self._spawn(self._warm_up(), "rowforge-knowledge-warm-up")
        self._spawn(self._loop(), "rowforge-knowledge-loop")

    async def stop(self) -> None:
        """Stop background work and save every index (of tables that still exist)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        for opening in self._opening.values():
            opening.cancel()
        if self._closing:
            await asyncio.gather(*self._closing.values(), return_exceptions=True)
        try:
            await self.sweep()
        except Exception as exc:  # the database may be gone already: save what we have
            log.warning("knowledge sweep on stop failed: %s", exc)
        for index in list(self._indexes.values()):
            await index.close(save=True)
        self._indexes.clear()
        if self._own_reader:
            self.reader.close()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- access ----------------------------------------------------------------------------

    def notify(self, storage_ids: Iterable[str]) -> None:
        """Rows of these tables were written by this process (called around each write)."""
        for storage_id in storage_ids:
            index = self._indexes.get(storage_id)
            if index is not None:
                index.dirty = True
                index.schedule_refresh()

    async def get(self, schema: TableSchema) -> TableIndex:
        """The table's index, opened and caught up.

        Raises:
            NotFound: the table was deleted meanwhile.
        """
        index = await self._resident(schema, pin=False)
        if schema.version > index.schema.version:
            index.schema = schema
        try:
            await index.refresh(self.max_age)
        except sa.exc.DBAPIError:
            await self.check_exists(schema)
            raise
        return index

    async def _resident(self, schema: TableSchema, *, pin: bool) -> TableIndex:
        """The table's open index (opened if needed), pinned when ``pin`` before anything
        else runs: an index opened for us may be evicted before we resume, then we open it
        again."""
        while True:
            index = self._indexes.get(schema.storage_id)
            if index is None or index.broken:
                opened = await self._open(schema)
                index = self._indexes.get(schema.storage_id)
                if index is not opened:
                    continue
            if pin:
                index.pins += 1
            return index

    @contextlib.asynccontextmanager
    async def using(self, schema: TableSchema) -> AsyncIterator[TableIndex]:
        """The table's index (as :meth:`get`), pinned in memory for the block: a search
        holds it across its awaits. Marks it recently searched and keeps the memory budget."""
        index = await self._resident(schema, pin=True)
        try:
            self._used_at[schema.storage_id] = time.monotonic()
            if schema.version > index.schema.version:
                index.schema = schema
            try:
                await index.refresh(self.max_age)
            except sa.exc.DBAPIError:
                await self.check_exists(schema)
                raise
            await self._keep_budget()
            yield index
        finally:
            index.pins -= 1

    async def search(self, schema: TableSchema, query: object, n: int,
                     allowed: Collection[str] | None = None) -> list[Result]:
        """Nearest ``n`` rows to a unit ``query`` vector, among ``allowed`` ids if given."""
        async with self.using(schema) as index:
            index.check_query(query)
            return await asyncio.to_thread(index.search, query, n, allowed)

    def memory_bytes(self) -> int:
        """Estimated memory of the resident indexes' graphs."""
        return sum(index.memory_bytes() for index in list(self._indexes.values()))

    async def _keep_budget(self, incoming: int = 0) -> None:
        """While over the budget (with ``incoming`` bytes about to be loaded), drop idle
        BM25 writers, then evict the least recently searched indexes: first those whose
        graphs are complete (saved, then reloaded from their files), then, if that is not
        enough, those still building (their unfinished graph work is dropped: a later load
        rebuilds it), so that many tables opened at once cannot outgrow the budget."""
        if not self.memory_budget:
            return
        used = self.memory_bytes() + incoming
        if used <= self.memory_budget:
            return
        by_age = sorted(self._indexes, key=lambda s: self._used_at.get(s, 0.0))
        # BM25 writers (tens of MB each, kept a while for the next writes) go first.
        for storage_id in by_age:
            if used <= self.memory_budget:
                return
            index = self._indexes.get(storage_id)
            if index is None or index.pins or not index.lexical.writing:
                continue
            used -= index.lexical.writer_heap
            await asyncio.to_thread(index.lexical.release_writer)
        for building in (False, True):
            for storage_id in by_age:
                if used <= self.memory_budget:
                    return
                index = self._indexes.get(storage_id)
                if (index is None or index.pins or index.building != building
                        or storage_id in self._opening):
                    continue
                used -= index.memory_bytes()
                self._evict(storage_id)

    def _evict(self, storage_id: str) -> None:
        index = self._indexes.pop(storage_id)
        self._saved_at.pop(storage_id, None)
        self._evicted.add(storage_id)
        self._sizes[storage_id] = index.memory_bytes()
        self.evictions += 1
        self.metrics.index_evicted()
        log.info("evicted a knowledge index under the memory budget", extra={
            "table": index.schema.id, "bytes": index.memory_bytes(),
            "budgetBytes": self.memory_budget})
        task = asyncio.get_running_loop().create_task(
            index.close(save=True), name=f"rowforge-knowledge-evict-{storage_id}")
        self._closing[storage_id] = task
        task.add_done_callback(lambda t: self._closing.pop(storage_id, None)
                               if self._closing.get(storage_id) is t else None)

    async def _open(self, schema: TableSchema) -> TableIndex:
        task = self._opening.get(schema.storage_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self._load(schema), name=f"rowforge-knowledge-open-{schema.storage_id}")
            self._opening[schema.storage_id] = task
            task.add_done_callback(lambda _t: self._opening.pop(schema.storage_id, None))
        # Shielded: one caller giving up must not abort the open others wait for.
        return await asyncio.shield(task)

    async def _load(self, schema: TableSchema) -> TableIndex:
        old = self._indexes.pop(schema.storage_id, None)
        if old is not None:
            await old.close(save=False)
        closing = self._closing.get(schema.storage_id)
        if closing is not None:  # an evicted copy is still saving its files
            await asyncio.gather(closing, return_exceptions=True)
        # Room first, then the load: an index evicted before comes back at about the size
        # it left with; a first open at the size of its saved graphs (a table with no saved
        # graphs is measured once open, and evicts then).
        incoming = self._sizes.get(schema.storage_id)
        if incoming is None and self.memory_budget:
            incoming = await asyncio.to_thread(self._saved_bytes, schema)
        await self._keep_budget(incoming or 0)
        started = time.perf_counter()
        index = TableIndex(schema, self.db, self.feed, self.root / schema.storage_id,
                           self.reader, analyzer=schema.text_analyzer or DEFAULT_ANALYZER,
                           build_turn=self._build_turn)
        try:
            await index.open()
        except BaseException as exc:
            await index.close(save=False)
            if isinstance(exc, sa.exc.DBAPIError):
                await self.check_exists(schema)
            raise
        self._indexes[schema.storage_id] = index
        self._used_at[schema.storage_id] = time.monotonic()
        seconds = time.perf_counter() - started
        evicted = schema.storage_id in self._evicted
        self._evicted.discard(schema.storage_id)
        self.metrics.index_loaded(seconds, evicted=evicted)
        log.info("opened a knowledge index", extra={
            "table": schema.id, "seconds": round(seconds, 4), "rows": len(index),
            "wasEvicted": evicted})
        return index

    def _saved_bytes(self, schema: TableSchema) -> int:
        """Estimated memory of the table's saved graphs once loaded (from the files'
        headers; 0 when there are none)."""
        directory = self.root / schema.storage_id
        return sum(saved_graph_bytes(directory / f"{name}.hnsw")
                   for name in embedding_columns(schema))

    async def check_exists(self, schema: TableSchema) -> None:
        """Raise NOT_FOUND (and forget the index) if the table was deleted; call it when a
        read of the table failed, to tell that from a real database error."""
        if not await row_reads.storage_exists(self.db, schema.storage_id):
            await self._forget(schema.storage_id)
            raise table_not_found(schema.table_type, schema.id)

    def opened(self, storage_id: str) -> TableIndex | None:
        """The open index of a table, if any (no I/O)."""
        return self._indexes.get(storage_id)

    # -- background ------------------------------------------------------------------------

    async def _warm_up(self) -> None:
        for schema in await row_reads.knowledge_schemas(self.db):
            if schema.storage_id in self._indexes:
                continue
            if self.memory_budget:
                # Only what fits: the rest load on their first search (a warm-up that
                # evicted to load would only trade one table for another).
                saved = await asyncio.to_thread(self._saved_bytes, schema)
                if self.memory_bytes() + saved >= self.memory_budget:
                    break
                self._sizes[schema.storage_id] = saved  # what its load makes room for
            try:
                await self._open(schema)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("could not open the index of knowledge table %s: %s", schema.id, exc)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        passes = 0
        while True:
            await asyncio.sleep(self.poll_interval_s)
            passes += 1
            for storage_id, index in list(self._indexes.items()):
                if self._indexes.get(storage_id) is not index:
                    continue  # evicted or forgotten meanwhile
                index.pins += 1
                try:
                    await self._tend(index, loop.time())
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("knowledge index upkeep of %s failed: %s", index.schema.id, exc)
                    with contextlib.suppress(NotFound):
                        await self.check_exists(index.schema)
                finally:
                    index.pins -= 1
                if index.broken and self._indexes.get(storage_id) is index:
                    with contextlib.suppress(Exception):
                        await self._open(index.schema)
            # Graphs that finished building since the last search count now.
            await self._keep_budget()
            if passes % 60 == 0:
                await self.sweep()

    async def _tend(self, index: TableIndex, now: float) -> None:
        await index.refresh(self.max_age)
        if index.lexical.writing and now - index.written_at >= self.writer_idle_s:
            await asyncio.to_thread(index.lexical.release_writer)
        if index.building:
            return
        last = self._saved_at.get(index.storage_id, float("-inf"))
        if now - last >= self.save_interval_s and await index.save():
            self._saved_at[index.storage_id] = now
            if index.changes_since_compact >= self.compact_after and index.saved is not None:
                index.changes_since_compact = 0
                await self.feed.compact(index.storage_id, index.saved)

    async def sweep(self) -> None:
        """Forget indexes, files and feed entries of tables that no longer exist."""
        existing = await row_reads.knowledge_storage_ids(self.db)
        for storage_id in list(self._indexes):
            if storage_id not in existing:
                await self._forget(storage_id)
        if self.root.is_dir():
            for entry in self.root.iterdir():
                if _STORAGE_DIR.fullmatch(entry.name) and entry.name not in existing:
                    shutil.rmtree(entry, ignore_errors=True)
        await self.feed.purge_orphans()

    async def _forget(self, storage_id: str) -> None:
        index = self._indexes.pop(storage_id, None)
        self._saved_at.pop(storage_id, None)
        self._used_at.pop(storage_id, None)
        self._sizes.pop(storage_id, None)
        self._evicted.discard(storage_id)
        closing = self._closing.get(storage_id)
        if closing is not None:
            await asyncio.gather(closing, return_exceptions=True)
        self.feed.forget(storage_id)
        for hook in self.forget_hooks:
            hook(storage_id)
        if index is not None:
            await index.close(save=False)
            index.remove_files()
