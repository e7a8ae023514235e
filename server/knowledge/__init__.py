"""Knowledge domain: knowledge tables' documents, vectors and search.

* documents to rows: :mod:`.parsing` (file -> title and sections), :mod:`.chunking`
  (sections -> chunks), :mod:`.embed_file` (EmbedFile: chunks -> embedded rows);
* indexes: :mod:`.vector_index` (one column's HNSW graph plus an exact delta),
  :mod:`.lexical_index` (the table's BM25 index, on tantivy), :mod:`.table_index` (a table's
  indexes: open, catch up from the tables' change feed, build, persist), :mod:`.indexes`
  (all of them);
* search: :mod:`.search` (hybrid search with RRF and reranking), :mod:`.reader` (the reads of
  the hot path, in a worker thread on SQLite);
* :mod:`.rag` (the row engine's retriever) and :mod:`.base` (``KnowledgeSearch`` and
  ``Knowledge``).

Rows are read only through the tables domain's public reads
(:mod:`rowforge.server.tables.row_reads`, :mod:`rowforge.server.tables.change_feed`), never
through its SQL layout.
"""
