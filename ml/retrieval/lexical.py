"""Lexical retrieval: BM25 over item texts, from the ``bm25s`` library.

Texts and queries go through one tokenizer (lower case, English stop words, Snowball English
stemming via PyStemmer, so "shampoos" finds "shampoo"). Scores come back for every item, so a
caller can mask (filters) before taking the top.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import bm25s
import numpy as np
import Stemmer

STOPWORDS = "en"


def _stemmer() -> Any:
    return Stemmer.Stemmer("english")


class LexicalIndex:
    """A BM25 index over texts (one row per text, in order).

    Args:
        texts: the documents, e.g. item texts.
        k1: BM25 term-frequency saturation.
        b: BM25 length normalisation.
    """

    def __init__(self, texts: Sequence[str], k1: float = 1.5, b: float = 0.75) -> None:
        self.size = len(texts)
        self._stem = _stemmer()
        self._tokenizer = bm25s.tokenization.Tokenizer(stopwords=STOPWORDS, stemmer=self._stem)
        corpus = self._tokenizer.tokenize(list(texts), show_progress=False, return_as="tuple")
        self._bm25 = bm25s.BM25(k1=k1, b=b)
        self._bm25.index(corpus, show_progress=False)
        self._vocab: dict[str, int] = self._tokenizer.get_vocab_dict()

    def query_tokens(self, query: str) -> list[int]:
        """The vocabulary ids of a query's (stemmed) words; words no document has are dropped."""
        words = self._tokenizer.tokenize(
            [query], update_vocab=False, show_progress=False, return_as="string"
        )[0]
        return [self._vocab[w] for w in words if w in self._vocab]

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every text for ``query`` (zeros when no query word is in the index)."""
        ids = self.query_tokens(query)
        if not ids:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self._bm25.get_scores(ids), dtype=np.float32)
