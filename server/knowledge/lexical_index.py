"""The BM25 side of hybrid search: one tantivy index per knowledge table.

tantivy (the engine behind lancedb's full-text search) scores a disjunction of terms with
block-max WAND over its postings, so the top ``n`` rows by BM25 over *every* query word are
exact while reading a small part of the postings of common words: no word is dropped, however
common (the FTS5/tsvector side scored every row holding any query word).

The index is derived data, kept like the HNSW graphs (see :mod:`.table_index`, which feeds it
from the change feed): one document per row holding the row's Title and Text, keyed by the row
id; an upsert is a delete of the id plus an add, so applying a change twice is harmless.

Freshness and durability: :meth:`LexicalIndex.apply` adds the changed rows and commits, then
reloads the searcher, so a change is searchable once ``apply`` returns (a search catches up,
and so waits for that commit, before it runs: a row acknowledged is findable, and scores are
exact at every moment rather than estimated for a pending part). A commit costs ~10-30 ms
here (tantivy fsyncs its segment files and ``meta.json``), paid by the background catch-up
after in-process writes and by a search that races one. The watermark (last change id
included) goes to ``lexical.json`` after the commit it describes: a crash in between leaves
an older watermark, and replaying from it is harmless.

Memory: a committed index is memory-mapped segments (the OS page cache holds what searches
touch). The writer (an indexing thread, merge threads, and an arena of up to
:data:`WRITER_HEAP` bytes) exists only while rows are being written: :meth:`release_writer`
drops it after a quiet period, and :meth:`close` drops everything (:meth:`open` reopens).

Threads: :meth:`apply` and :meth:`search` run in worker threads (tantivy releases the GIL
while it indexes, commits and searches); writes are serialised by a lock, searches use the
searcher of the last commit and never wait for a write.

BM25 as tantivy computes it (k1 = 1.2, b = 0.75; Lucene's formula): a query's score is the
sum over its distinct terms ``t`` of ``idf(t) * (k1 + 1) * tf / (tf + k1 * (1 - b + b * dl /
avgdl))`` with ``idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))``; ``dl`` is the document's
token count rounded down to tantivy's one-byte scale (exact up to 40 tokens), ``N``, ``df``
and ``avgdl`` include deleted documents until a merge drops them, as in Lucene.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import tantivy

from rowforge.server.errors import InvalidArgument
from rowforge.server.tables.model import DEFAULT_TEXT_ANALYZER, TEXT_ANALYZERS

log = logging.getLogger("rowforge.knowledge")

FORMAT = "rowforge.lexical-index/1"
MANIFEST = "lexical.json"
FIELD_ID, FIELD_TEXT = "id", "text"
#: Name the text field's tokenizer is registered under (the manifest says which analyzer).
TOKENIZER = "rowforge"
#: Writer arena: a segment is flushed when it is full (tantivy's minimum is 15 MB).
WRITER_HEAP = 48_000_000
#: Indexing threads of a writer (this runs beside requests and the HNSW builder).
WRITER_THREADS = 1
#: A filtered search over-fetches unfiltered hits (then keeps the allowed ones, which is
#: exact) while it expects to read at most this many; past it, the filter becomes part of
#: the query (a set of row ids).
OVERFETCH_MAX = 4096

Result = tuple[str, float]

# -- analyzers ------------------------------------------------------------------------------

#: CJK scripts are written without spaces: each ideograph / kana / hangul syllable is a token
#: (unigrams, as Lucene's StandardAnalyzer does), so any CJK word of a query is found and
#: BM25 ranks rows holding more of its characters first.
_CJK = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}"
#: Unicode words (letters, digits, combining marks, "_") and single CJK characters.
WORDS = rf"[{_CJK}]|[[\p{{L}}\p{{N}}\p{{M}}_]--[{_CJK}]]+"
#: Longer tokens are dropped (tantivy's default tokenizer does the same).
MAX_TOKEN_BYTES = 40
#: Stemmer languages tantivy ships (Snowball), by the analyzer name's prefix (the table
#: model lists the analyzers: :data:`~rowforge.server.tables.model.TEXT_ANALYZERS`).
STEMMERS = {
    "ar": "arabic", "da": "danish", "nl": "dutch", "en": "english", "fi": "finnish",
    "fr": "french", "de": "german", "el": "greek", "hu": "hungarian", "it": "italian",
    "no": "norwegian", "pt": "portuguese", "ro": "romanian", "ru": "russian", "es": "spanish",
    "sv": "swedish", "ta": "tamil", "tr": "turkish",
}
DEFAULT_ANALYZER = DEFAULT_TEXT_ANALYZER
#: ``simple``: words lowercased, no stemming; ``<lang>_stem``: plus that language's stemmer;
#: ``ngram``: lowercased character 1- and 2-grams of the whole text (any script, no word
#: boundaries needed; CJK words ranked by their character pairs; a larger index).
ANALYZERS = TEXT_ANALYZERS


def check_analyzer(name: str, field: str = "text_analyzer") -> str:
    """``name`` ("" means the default), or INVALID_ARGUMENT naming the choices."""
    name = name or DEFAULT_ANALYZER
    if name not in ANALYZERS:
        raise InvalidArgument.field(field, f"unknown text analyzer {name!r}; one of "
                                           f"{', '.join(ANALYZERS)}", reason="UNKNOWN_ANALYZER")
    return name


def build_analyzer(name: str) -> tantivy.TextAnalyzer:
    """The tantivy analyzer called ``name`` (see :data:`ANALYZERS`)."""
    check_analyzer(name)
    if name == "ngram":
        return (tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.ngram(1, 2))
                .filter(tantivy.Filter.lowercase()).build())
    builder = (tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.regex(WORDS))
               .filter(tantivy.Filter.remove_long(MAX_TOKEN_BYTES))
               .filter(tantivy.Filter.lowercase()))
    if name != "simple":
        builder = builder.filter(tantivy.Filter.stemmer(STEMMERS[name.removesuffix("_stem")]))
    return builder.build()


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field(FIELD_ID, stored=True, tokenizer_name="raw", index_option="basic")
    builder.add_text_field(FIELD_TEXT, tokenizer_name=TOKENIZER, index_option="freq")
    return builder.build()


# -- the index ------------------------------------------------------------------------------

class LexicalIndex:
    """A knowledge table's BM25 index (see the module docstring).

    Args:
        directory: Where the index lives (created on demand; removed by a rebuild).
        analyzer: The text analyzer's name (:data:`ANALYZERS`).
        writer_heap: Bytes of the writer's arena.
        writer_threads: Indexing threads of the writer.
    """

    def __init__(self, directory: Path, *, analyzer: str = DEFAULT_ANALYZER,
                 writer_heap: int = WRITER_HEAP, writer_threads: int = WRITER_THREADS) -> None:
        self.directory = directory
        self.analyzer_name = check_analyzer(analyzer)
        self.analyzer = build_analyzer(self.analyzer_name)
        self.writer_heap = writer_heap
        self.writer_threads = writer_threads
        self.schema = _schema()
        #: Last change id the committed index includes (None: incomplete or not open).
        self.watermark: int | None = None
        self._index: tantivy.Index | None = None
        self._searcher: tantivy.Searcher | None = None
        self._writer: tantivy.IndexWriter | None = None
        #: The writer holds changes not yet committed.
        self._pending = False
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> int | None:
        """Open the saved index; returns its watermark, or None when it was missing, corrupt
        or built otherwise (then the index is empty and must be rebuilt)."""
        with self._lock:
            try:
                manifest = json.loads((self.directory / MANIFEST).read_text("utf-8"))
                if manifest.get("format") != FORMAT:
                    raise ValueError(f"format {manifest.get('format')!r}")
                if manifest.get("analyzer") != self.analyzer_name:
                    raise ValueError(f"built with analyzer {manifest.get('analyzer')!r}")
                watermark = manifest["watermark"]
                if not isinstance(watermark, int) or watermark < 0:
                    raise ValueError(f"bad watermark {watermark!r}")
                index = tantivy.Index.open(str(self.directory))
                self._attach(index)
                self.watermark = watermark
                return watermark
            except FileNotFoundError:
                log.info("no saved lexical index in %s: building it", self.directory)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("lexical index in %s is unusable (%s): rebuilding it",
                            self.directory, exc)
            self._reset()
            return None

    def reset(self) -> None:
        """Start over from an empty index (a rebuild follows)."""
        with self._lock:
            self._reset()

    def _reset(self) -> None:
        self._drop()
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._attach(tantivy.Index(self.schema, path=str(self.directory), reuse=False))
        self.watermark = None

    def _attach(self, index: tantivy.Index) -> None:
        index.register_tokenizer(TOKENIZER, self.analyzer)
        index.config_reader("manual")
        self._index = index
        self._searcher = index.searcher()

    def _drop(self) -> None:
        self._writer = None  # dropping it stops its threads and frees its arena
        self._pending = False
        self._searcher = None
        self._index = None

    def release_writer(self) -> None:
        """Drop the writer (it is made again by the next write), after its merges end."""
        with self._lock:
            writer, self._writer = self._writer, None
            if writer is not None:
                with contextlib.suppress(ValueError, RuntimeError):
                    writer.wait_merging_threads()

    def close(self) -> None:
        """Free everything (writer, searcher, mapped segments); :meth:`open` reopens."""
        with self._lock:
            self._drop()
            self.watermark = None

    @property
    def is_open(self) -> bool:
        return self._index is not None

    @property
    def writing(self) -> bool:
        """A writer is held (memory and threads)."""
        return self._writer is not None

    def __len__(self) -> int:
        searcher = self._searcher
        return searcher.num_docs if searcher is not None else 0

    # -- writes ----------------------------------------------------------------------------

    def apply(self, rows: Mapping[str, Sequence[str | None] | None], watermark: int | None,
              *, commit: bool = True) -> None:
        """Index ``rows`` (row id -> its texts; None: the row is gone), then (``commit``)
        commit, make them searchable and record ``watermark`` (None: the index does not yet
        hold every row up to some change: record nothing).

        Raises:
            RuntimeError: the index is closed. ValueError / OSError: tantivy failed (the
                caller reopens the index from its files).
        """
        with self._lock:
            if self._index is None:
                raise RuntimeError("the lexical index is closed")
            if rows:
                writer = self._writer
                if writer is None:
                    writer = self._writer = self._index.writer(
                        heap_size=self.writer_heap, num_threads=self.writer_threads)
                for row_id, texts in rows.items():
                    writer.delete_documents_by_term(FIELD_ID, row_id)
                    if texts is None:
                        continue
                    values = [t for t in texts if t]
                    if not values:
                        continue
                    doc = tantivy.Document()
                    doc.add_text(FIELD_ID, row_id)
                    for value in values:
                        doc.add_text(FIELD_TEXT, value)
                    writer.add_document(doc)
                self._pending = True
            if not commit:
                return
            if self._writer is not None and self._pending:
                self._writer.commit()
                self._pending = False
                self._index.reload()
                self._searcher = self._index.searcher()
            if watermark is not None:
                self._write_manifest(watermark)
                self.watermark = watermark

    def _write_manifest(self, watermark: int) -> None:
        # No fsync: tantivy has made the commit durable; a manifest lost in a crash leaves an
        # older watermark (replaying from it is harmless) or none (a rebuild).
        manifest = {"format": FORMAT, "analyzer": self.analyzer_name, "watermark": watermark}
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".lexical.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(manifest, f)
            os.replace(tmp, self.directory / MANIFEST)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    # -- search ----------------------------------------------------------------------------

    def terms(self, query: str) -> list[str]:
        """The distinct terms of ``query``, in order, as the index holds them."""
        return list(dict.fromkeys(self.analyzer.analyze(query)))

    def search(self, query: str, n: int, allowed: Collection[str] | None = None,
               ) -> list[Result]:
        """The ``n`` best rows by BM25 over every term of ``query`` (only ``allowed`` row
        ids when given), best first, with their scores. Thread-safe."""
        searcher = self._searcher
        terms = self.terms(query)
        if searcher is None or not terms or n <= 0 or (allowed is not None and not allowed):
            return []
        query_ = tantivy.Query.boolean_query([
            (tantivy.Occur.Should, tantivy.Query.term_query(self.schema, FIELD_TEXT, term))
            for term in terms])
        if allowed is None:
            return self._hits(searcher, query_, n)
        total = searcher.num_docs
        expected = n * total / len(allowed)
        if 2 * expected <= OVERFETCH_MAX:
            # The hits come in score order: the first n allowed ones are the answer.
            limit = max(2 * n, math.ceil(2 * expected))
            while True:
                hits = self._hits(searcher, query_, limit)
                kept = [h for h in hits if h[0] in allowed]
                if len(kept) >= n or len(hits) < limit:
                    return kept[:n]
                if limit >= OVERFETCH_MAX:
                    break
                limit = min(4 * limit, OVERFETCH_MAX)
        only = tantivy.Query.const_score_query(
            tantivy.Query.term_set_query(self.schema, FIELD_ID, list(allowed)), 0.0)
        filtered = tantivy.Query.boolean_query([(tantivy.Occur.Must, only),
                                                (tantivy.Occur.Must, query_)])
        return self._hits(searcher, filtered, n)

    @staticmethod
    def _hits(searcher: tantivy.Searcher, query: tantivy.Query, limit: int) -> list[Result]:
        found = searcher.search(query, limit, count=False).hits
        return [(str(searcher.doc(address).get_first(FIELD_ID)), float(score))
                for score, address in found]


def stats(index: LexicalIndex) -> dict[str, Any]:
    """Documents and segments of an open index (benchmarks, logs)."""
    searcher = index._searcher
    if searcher is None:
        return {"docs": 0, "segments": 0}
    return {"docs": searcher.num_docs, "segments": searcher.num_segments}
