"""Knowledge domain: knowledge tables' documents, vectors and search.

* documents to rows: :mod:`.parsing` (file -> title and sections), :mod:`.chunking`
  (sections -> chunks), :mod:`.embed_file` (EmbedFile: chunks -> embedded rows);
* indexes: :mod:`.changes` (the change feed the database triggers fill), :mod:`.vector_index`
  (one column's HNSW graph plus an exact delta), :mod:`.lexical_index` (the table's BM25
  index, on tantivy), :mod:`.table_index` (a table's indexes: open, catch up, build,
  persist), :mod:`.indexes` (all of them, ``app.knowledge.indexes``);
* search: :mod:`.search` (hybrid search with RRF and reranking), :mod:`.row_reads` and
  :mod:`.reader` (the reads of the hot path);
* :mod:`.rag` (the row engine's RAG hook) and :mod:`.base` (``app.knowledge``).
"""
