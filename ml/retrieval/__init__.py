"""Search over the catalog: lexical (BM25) and dense retrieval, their fusion, and query intent.

Frames, arrays and configs in, ranked item indices out: this package never reads the settings or
the warehouse (an import contract checks), so the Bento, the benchmark and the tests search the
same way.

* :mod:`ml.retrieval.facts`: brand, category path and price range of each item, from a catalog
  frame or parsed back from the encoder's item text.
* :mod:`ml.retrieval.lexical`: a BM25 index (the ``bm25s`` library, English stemming).
* :mod:`ml.retrieval.intent`: a query's price limits, brand, category and remaining words.
* :mod:`ml.retrieval.hybrid`: reciprocal-rank fusion of the rankings, intent as filters and boosts.
"""
