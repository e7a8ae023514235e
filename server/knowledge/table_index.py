"""The indexes of one knowledge table (vectors and BM25): open, catch up, build, search,
persist.

Lifecycle:

1. **Open**: make sure the table's change triggers exist (:mod:`.changes`), then load the
   saved graphs from ``<dir>/<column>.hnsw`` (each carries the watermark it includes) and the
   BM25 index from ``<dir>/lexical/`` (:mod:`.lexical_index`, with its own watermark). Missing,
   corrupt or mismatched files mean a rebuild of that side: a full scan of the rows' stored
   vectors and texts, taken after the triggers exist and after reading the feed's head, so no
   change is missed. The cursor starts at the oldest watermark; the side that is ahead
   replays a few changes, which is harmless.
2. **Catch up**: read the feed after the cursor, read those rows' current vectors and texts,
   stage the vectors as one part per column (searchable at once, exactly) and index the
   texts (committed, so searchable, before the catch-up returns).
3. **Build** (background task, in one low-priority thread shared by all tables, so that
   requests and ingestion come first): move parts into the graphs, oldest first; the
   *built* watermark follows.
4. **Save** (background, and on stop): graphs with the built watermark, plus a manifest for
   columns that never had a vector. A half-done rebuild is never saved: a graph saved with
   watermark N must include every row written up to change N. (The BM25 index is saved by
   each of its commits.)

The database is the truth; these files are a cache that can be lost at any time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from rowforge import fastcore
from rowforge.server.errors import FailedPrecondition
from rowforge.server.knowledge.lexical_index import DEFAULT_ANALYZER, LexicalIndex
from rowforge.server.knowledge.reader import Reader
from rowforge.server.knowledge.vector_index import ColumnIndex, Part, Result, unit_rows
from rowforge.server.storage.db import Database
from rowforge.server.tables import row_reads
from rowforge.server.tables.change_feed import ChangeFeed, embedding_columns
from rowforge.server.tables.model import TableSchema

log = logging.getLogger("rowforge.knowledge")

MANIFEST = "manifest.json"
FORMAT = "rowforge.knowledge-index/1"
#: Rows per page of a rebuild scan, and feed entries per catch-up read.
SCAN_BATCH = 5000
CHANGE_BATCH = 5000
#: Seconds a background catch-up waits after a write notification (searches never wait:
#: they catch up themselves first).
REFRESH_DELAY_S = 0.1
#: Watermark of a graph that does not yet hold every row (mid-rebuild): never saved.
INCOMPLETE = -1
#: Rows a rebuild of the BM25 index indexes between two commits (each commit makes what it
#: holds searchable; fewer commits, fewer segments to merge).
LEXICAL_REBUILD_COMMIT = 50_000


class TableIndex:
    """One knowledge table's column indexes (see the module docstring).

    Args:
        schema: The table (its ``storage_id`` names the files; embedding columns define the
            column indexes).
        db: The database.
        feed: The change feed.
        directory: Where this table's files live (``<data_dir>/indexes/<storage_id>``).
        reader: Runs the catch-up reads.
        analyzer: The BM25 index's text analyzer (:data:`.lexical_index.ANALYZERS`).
        build_turn: Held while this index's graphs are being built: shared by the tables of
            one process, so that they are built one after the other (each done and saveable
            soon) instead of all slowly at once on the one builder thread.
    """

    def __init__(self, schema: TableSchema, db: Database, feed: ChangeFeed,
                 directory: Path, reader: Reader, analyzer: str = DEFAULT_ANALYZER, *,
                 build_turn: asyncio.Lock | None = None) -> None:
        self.schema = schema
        self.reader = reader
        self.storage_id = schema.storage_id
        self.db = db
        self.feed = feed
        self.directory = directory
        self.columns: dict[str, ColumnIndex] = {
            name: ColumnIndex(name) for name in embedding_columns(schema)}
        self.lexical = LexicalIndex(directory / "lexical", analyzer=analyzer)
        #: Loop time of the last write to the BM25 index (its writer is dropped when idle).
        self.written_at = float("-inf")
        #: Last change id staged (read from the feed).
        self.cursor = 0
        #: Last change id every graph includes (INCOMPLETE while rebuilding).
        self.built = 0
        #: Watermark of the files on disk (None: nothing saved by this process yet).
        self.saved: int | None = None
        #: Pending (watermark, changed row ids), oldest first; one part per column each.
        self.segments: list[tuple[int, list[str]]] = []
        #: Set when rows of this table may have changed (in-process writes).
        self.dirty = True
        self.synced_at = float("-inf")
        #: The builder failed: the manager reopens (rebuilds) the index.
        self.broken = False
        self.changes_since_compact = 0
        self.skipped_vectors = 0
        #: Users of the index right now (a search between its awaits, the upkeep loop): a
        #: pinned index is never evicted.
        self.pins = 0

        self._sync_lock = asyncio.Lock()
        self._build_lock = asyncio.Lock()
        self._build_turn = build_turn or asyncio.Lock()
        self._builder: asyncio.Task[None] | None = None
        self._syncer: asyncio.Task[None] | None = None

    # -- open ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Load or rebuild the graphs and the BM25 index, then catch up with the feed."""
        await self.feed.track(self.schema)
        loaded = await asyncio.to_thread(self._load)
        lexical = await asyncio.to_thread(self.lexical.open)
        last = await self.feed.last_id()
        if loaded is not None and max((c.watermark for c in loaded.values()), default=0) > last:
            log.warning("saved index of knowledge table %s is ahead of the database (a restored "
                        "backup?): rebuilding it", self.schema.id)
            loaded = None
        if lexical is not None and lexical > last:
            lexical = None  # the rebuild resets it
        if loaded is not None:
            self.columns = loaded
            self.built = self.cursor = min((c.watermark for c in loaded.values()), default=0)
            self.saved = self.built
        if loaded is None or lexical is None:
            head = await self._rebuild(vectors=loaded is None, texts=lexical is None)
            self.cursor = min(head, self.cursor if loaded is not None else head,
                              lexical if lexical is not None else head)
        else:
            self.cursor = min(self.cursor, lexical)
        self.dirty = True
        await self.refresh(0.0)

    def _load(self) -> dict[str, ColumnIndex] | None:
        """The saved column indexes, or None when they must be rebuilt."""
        try:
            with open(self.directory / MANIFEST, encoding="utf-8") as f:
                manifest = json.load(f)
            if manifest.get("format") != FORMAT or manifest.get("storage_id") != self.storage_id:
                raise ValueError("manifest of another table or format")
            entries = manifest["columns"]
            columns: dict[str, ColumnIndex] = {}
            for name in self.columns:
                entry = entries[name]
                if entry["ann"]:
                    ann = fastcore.AnnIndex.load(self.directory / f"{name}.hnsw", space="ip")
                    if not isinstance(ann.watermark, int) or ann.watermark < 0:
                        raise ValueError(f"bad watermark {ann.watermark!r}")
                    columns[name] = ColumnIndex(name, ann, ann.watermark)
                else:
                    columns[name] = ColumnIndex(name, None, int(entry["watermark"]))
            return columns
        except FileNotFoundError:
            log.info("no saved index for knowledge table %s: building it", self.schema.id)
        except (fastcore.IndexCorrupt, OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("saved index of knowledge table %s is unusable (%s): rebuilding it",
                        self.schema.id, exc)
        return None

    async def _rebuild(self, *, vectors: bool = True, texts: bool = True) -> int:
        """Stage every stored vector (``vectors``) and index every row's texts (``texts``)
        from pages of a full scan; returns the feed's head the scan started from."""
        if vectors:
            self.columns = {name: ColumnIndex(name) for name in self.columns}
            self.segments = []
            self.built = INCOMPLETE
            self.saved = None
        if texts:
            await asyncio.to_thread(self.lexical.reset)
        # The head is read after the triggers exist and before the scan: a row written
        # meanwhile is in the scan, in the feed after the head, or both (applied twice).
        head = await self.feed.head(self.storage_id)
        after = 0
        uncommitted = 0
        while True:
            # One row more than a page tells the last page from a full one: the last part
            # must carry the head (a table of exactly N pages ended with an empty page
            # before, its graphs never became complete, so never saved: every load rebuilt).
            rows = await self.reader.scan(row_reads.scan_rows, self.schema, after,
                                           SCAN_BATCH + 1)
            last = len(rows) <= SCAN_BATCH
            del rows[SCAN_BATCH:]
            if rows:
                after = rows[-1][0]
                if vectors:
                    self._stage(head if last else INCOMPLETE,
                                {row_id: vecs for _, row_id, vecs, _ in rows})
            if texts:
                uncommitted += len(rows)
                commit = last or uncommitted >= LEXICAL_REBUILD_COMMIT
                await asyncio.to_thread(
                    self.lexical.apply, {row_id: txts for _, row_id, _, txts in rows},
                    head if last else None, commit=commit)
                if commit:
                    uncommitted = 0
            if last:
                break
        if vectors and not self.segments:
            self.built = head
        return head

    # -- catch up --------------------------------------------------------------------------

    async def refresh(self, max_age: float) -> None:
        """Catch up with the feed if rows may have changed, or the last look is older than
        ``max_age`` seconds (other replicas' writes)."""
        loop = asyncio.get_running_loop()
        # A catch-up in flight may be staging what this caller must see: wait for it.
        if not self.dirty and not self._sync_lock.locked() and \
                loop.time() - self.synced_at < max_age:
            return
        async with self._sync_lock:
            if not self.dirty and loop.time() - self.synced_at < max_age:
                return
            self.dirty = False
            started = loop.time()
            try:
                await self._catch_up()
            except BaseException:
                self.dirty = True
                raise
            self.synced_at = started

    def schedule_refresh(self) -> None:
        """Catch up soon in the background (after in-process writes)."""
        if self._syncer is None or self._syncer.done():
            self._syncer = asyncio.get_running_loop().create_task(
                self._background_refresh(), name=f"rowforge-knowledge-sync-{self.storage_id}")

    async def _background_refresh(self) -> None:
        # Let the writer's transaction end, and gather a burst of writes into one read.
        await asyncio.sleep(REFRESH_DELAY_S)
        while self.dirty:
            try:
                await self.refresh(0.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next search retries (and reports) it
                log.warning("catching up knowledge table %s failed: %s", self.schema.id, exc)
                return

    async def _catch_up(self) -> None:
        while True:
            # The feed joined to the rows: each entry with its row's current vectors and
            # texts (a row changed twice in the batch is staged once, as it is now).
            entries = await self.reader.run(row_reads.changed_rows, self.schema,
                                            self.cursor, CHANGE_BATCH)
            if not entries:
                return
            upto = entries[-1][0]
            # Changes the BM25 index already holds are not applied again: a replaced
            # document would still count in its statistics until a merge.
            lexical_mark = self.lexical.watermark or 0
            rows: dict[str, row_reads.Vectors | None] = {}
            texts: dict[str, row_reads.Texts | None] = {}
            for change, row_id, vectors, row_texts in entries:
                rows.pop(row_id, None)
                rows[row_id] = vectors
                if change > lexical_mark:
                    texts[row_id] = row_texts
            self._stage(upto, rows)
            try:
                await asyncio.to_thread(self.lexical.apply, texts, upto)
            except (ValueError, OSError, RuntimeError):
                # tantivy's writer failed (it is then unusable): reopen from the files.
                self.broken = True
                raise
            self.written_at = asyncio.get_running_loop().time()
            self.cursor = upto
            self.changes_since_compact += len(entries)
            if len(entries) < CHANGE_BATCH:
                return

    def _stage(self, upto: int, rows: dict[str, row_reads.Vectors | None]) -> None:
        """One part per column from ``rows`` (row id -> stored vectors, None: row gone)."""
        changed = list(rows)
        for i, column in enumerate(self.columns.values()):
            raw: list[bytes] = []
            ids: list[str] = []
            for row_id, vectors in rows.items():
                value = vectors[i] if vectors is not None else None
                if value is None:
                    continue
                if column.dim is None:
                    column.dim = len(value) // 4
                if len(value) != 4 * column.dim:
                    self._skip(row_id, column, len(value) // 4)
                    continue
                raw.append(value)
                ids.append(row_id)
            if column.dim is None:
                column.stage(changed, Part.empty(None))
                continue
            matrix, usable = unit_rows(raw, column.dim)
            if not usable.all():
                keep = np.flatnonzero(usable)
                ids = [ids[k] for k in keep.tolist()]
                matrix = matrix[keep]
            column.stage(changed, Part(ids, matrix))
        self.segments.append((upto, changed))
        self._kick()

    def _skip(self, row_id: str, column: ColumnIndex, dim: int) -> None:
        self.skipped_vectors += 1
        if self.skipped_vectors == 1:
            log.warning("knowledge table %s: row %s has a %d-d vector in %s, the index holds "
                        "%d-d vectors; such rows are left out of vector search",
                        self.schema.id, row_id, dim, column.name, column.dim)

    # -- build -----------------------------------------------------------------------------

    def _kick(self) -> None:
        if self._builder is None or self._builder.done():
            self._builder = asyncio.get_running_loop().create_task(
                self._build(), name=f"rowforge-knowledge-build-{self.storage_id}")

    async def _build(self) -> None:
        try:
            async with self._build_turn:
                while self.segments:
                    upto, changed = self.segments[0]
                    async with self._build_lock:
                        for column in self.columns.values():
                            await column.commit_oldest(changed, upto)
                        self.segments.pop(0)
                        if upto != INCOMPLETE:
                            self.built = upto
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("building the index of knowledge table %s failed; it will be "
                          "rebuilt", self.schema.id)
            self.broken = True

    @property
    def building(self) -> bool:
        """Parts are waiting for the graphs."""
        return bool(self.segments)

    async def wait_built(self) -> None:
        """Until every staged part is in the graphs (tests and benchmarks)."""
        while self.segments and not self.broken:
            self._kick()
            builder = self._builder
            assert builder is not None
            await asyncio.wait([builder])

    # -- search ----------------------------------------------------------------------------

    def memory_bytes(self) -> int:
        """Estimated memory of the graphs and pending parts, plus the BM25 writer's heap while
        one is held (the BM25 index itself is memory-mapped from disk and not counted)."""
        writer = self.lexical.writer_heap if self.lexical.writing else 0
        return writer + sum(c.memory_bytes() for c in self.columns.values())

    @property
    def dim(self) -> int | None:
        """Vector dimension (None until the first vector)."""
        return next((c.dim for c in self.columns.values() if c.dim is not None), None)

    def __len__(self) -> int:
        return max((len(c) for c in self.columns.values()), default=0)

    def check_query(self, query: Any) -> None:
        """Raise FAILED_PRECONDITION when the query's dimension cannot match the vectors."""
        dims = {c.dim for c in self.columns.values() if c.dim is not None}
        if dims and len(query) not in dims:
            raise FailedPrecondition(
                f"knowledge table {self.schema.id!r} holds {'/'.join(map(str, sorted(dims)))}-d "
                f"vectors but its embedding model now returns {len(query)}-d ones; re-embed the "
                "table", reason="EMBEDDING_DIMENSION_MISMATCH",
                metadata={"tableId": self.schema.id, "queryDimension": len(query)})

    def search_text(self, query: str, n: int,
                    allowed: Collection[str] | None = None) -> list[Result]:
        """The ``n`` best rows by BM25 over every word of ``query`` (scores, higher is
        better). Runs in a worker thread."""
        return self.lexical.search(query, n, allowed)

    def search(self, query: Any, n: int, allowed: Collection[str] | None = None) -> list[Result]:
        """Nearest ``n`` rows over every embedding column (each row at its closest column).

        Runs in a worker thread; ``query`` must be unit length.
        """
        lists = [c.search(query, n, allowed) for c in self.columns.values()
                 if c.dim == len(query)]
        if len(lists) == 1:
            return lists[0]
        return fastcore.AnnIndex.merge(lists, n) if lists else []

    # -- persistence -----------------------------------------------------------------------

    async def save(self) -> bool:
        """Write the graphs and the manifest if the built state is complete and unsaved.

        Returns whether anything was written.
        """
        async with self._build_lock:
            if self.built == INCOMPLETE or self.built == self.saved:
                return False
            watermark = self.built
            await asyncio.to_thread(self._write, watermark)
            self.saved = watermark
            return True

    def _write(self, watermark: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        entries: dict[str, Any] = {}
        for name, column in self.columns.items():
            if column.ann is not None:
                column.ann.save(self.directory / f"{name}.hnsw", watermark=watermark)
            entries[name] = {"ann": column.ann is not None, "watermark": watermark,
                             "dim": column.dim}
        manifest = {"format": FORMAT, "storage_id": self.storage_id, "table_id": self.schema.id,
                    "watermark": watermark, "columns": entries}
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".manifest.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(manifest, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.directory / MANIFEST)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    async def close(self, *, save: bool) -> None:
        """Stop the background tasks (saving the built state first when ``save``)."""
        for task in (self._syncer, self._builder):
            if task is not None and not task.done():
                task.cancel()
        tasks = [t for t in (self._syncer, self._builder) if t is not None]
        if tasks:
            await asyncio.wait(tasks)
        if save and not self.broken:
            try:
                await self.save()
            except OSError as exc:
                log.warning("could not save the index of knowledge table %s: %s",
                            self.schema.id, exc)
        await asyncio.to_thread(self.lexical.close)

    def remove_files(self) -> None:
        """Delete this table's index files (the table is gone)."""
        shutil.rmtree(self.directory, ignore_errors=True)
