"""Hybrid search: BM25 and dense rankings fused by reciprocal rank, with the query's intent.

Methods (``mode``), so a benchmark compares them through the same code:

* ``dense``: cosine of the query's encoder vector to each item's text vector.
* ``bm25``: :class:`~ml.retrieval.lexical.LexicalIndex` scores.
* ``hybrid``: reciprocal-rank fusion (RRF, Cormack et al. 2009) of the two: an item's score is
  ``sum_r w_r / (RRF_K + rank_r)`` over the rankings it is in (each ranking's top
  :data:`CANDIDATES`). RRF needs no score calibration between BM25 and cosine.
* ``hybrid_intent``: the query's intent (:mod:`ml.retrieval.intent`) applied first: price limits
  and brand are filters (every spelling of the brand in the catalog, and items of no recorded
  brand whose title names it), the category a boost (as if one more ranking put every candidate
  of the category first, weight :data:`CATEGORY_WEIGHT`); BM25 reads the query without its price
  phrase.
* ``hybrid_intent_personal``: as ``hybrid_intent``, plus the recommender's ranking for the user
  (scores of the user vector against the item table) fused in with weight :data:`PERSONAL_WEIGHT`.

Price filters keep an item whose price may lie in the asked range: with exact prices that is the
price itself; with a price band only (what a model version keeps), an item is kept when its band
overlaps the range ("under $15" keeps the 10-25 band), so some results may cost more than asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ml.retrieval.facts import CATEGORY_SEPARATOR, CatalogFacts
from ml.retrieval.intent import IntentParser, QueryIntent, brand_base, key
from ml.retrieval.lexical import LexicalIndex

MODES = ("dense", "bm25", "hybrid", "hybrid_intent", "hybrid_intent_personal")
DEFAULT_MODE = "hybrid_intent"
PERSONAL_MODE = "hybrid_intent_personal"
RRF_K = 60
"""RRF's rank offset (the value of the original paper): damps the weight of the very top ranks."""
CANDIDATES = 200
"""How deep each ranking is read before fusion."""
CATEGORY_WEIGHT = 0.5
"""Half a ranking: a category read from loose words ("coconut oil pure" → Oils) is often not the
item's; at 1.0 such boosts cost title-word queries 0.10 recall@10, at 0.5 0.06 (full Beauty
catalog, 200 queries), while brand + category queries gain as much either way."""
PERSONAL_WEIGHT = 0.5
"""The user's ranking counts half as much as each text ranking: the query says what is wanted."""


@dataclass(frozen=True)
class SearchResult:
    """Ranked rows of the catalog for one query.

    Attributes:
        indices: catalog rows, best first.
        scores: each row's score (cosine, BM25 or fused RRF score, by mode).
        intent: the parsed query (returned in every mode, applied only in the ``*intent*`` modes).
        mode: the method that ranked.
        note: why the answer is empty, when the intent's filters leave no item.
    """

    indices: list[int]
    scores: list[float]
    intent: QueryIntent
    mode: str
    note: str | None = None


def top_indices(scores: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """The rows of the ``k`` highest finite scores among ``allowed`` ones, best first (ties: lower
    row first)."""
    masked = np.where(allowed, scores, -np.inf) if allowed is not None else scores.astype(float)
    finite = np.flatnonzero(np.isfinite(masked))
    if finite.size == 0 or k <= 0:
        return np.empty(0, dtype=np.int64)
    part = finite[np.argpartition(-masked[finite], k - 1)[:k]] if finite.size > k else finite
    order = np.lexsort((part, -masked[part]))
    return np.asarray(part[order], dtype=np.int64)


def rrf(rankings: Sequence[np.ndarray], weights: Sequence[float], size: int, k0: int = RRF_K) -> np.ndarray:
    """Reciprocal-rank fusion: ``sum_r w_r / (k0 + rank)`` per row (rank from 1; 0 if unranked)."""
    fused = np.zeros(size, dtype=np.float64)
    for ranking, weight in zip(rankings, weights, strict=True):
        fused[np.asarray(ranking, dtype=np.int64)] += weight / (k0 + np.arange(1, len(ranking) + 1))
    return fused


class HybridSearcher:
    """BM25, dense and fused search over one catalog, with query intent.

    Args:
        facts: the catalog's facts, row-aligned with ``item_vectors`` and the BM25 index's texts.
        texts: the item texts BM25 indexes (one per row).
        item_vectors: L2-normalised text vectors per row (None: no dense search).
        searchable: rows that may be returned (e.g. not the padding row); all when None.
    """

    def __init__(
        self,
        facts: CatalogFacts,
        texts: Sequence[str],
        item_vectors: np.ndarray | None = None,
        searchable: np.ndarray | None = None,
    ) -> None:
        if len(texts) != len(facts) or (item_vectors is not None and len(item_vectors) != len(facts)):
            raise ValueError(
                f"{len(facts)} facts, {len(texts)} texts and "
                f"{None if item_vectors is None else len(item_vectors)} vectors: they must align"
            )
        self.facts = facts
        self.lexical = LexicalIndex(texts)
        self.parser = IntentParser(facts)
        self.item_vectors = item_vectors
        self.searchable = np.ones(len(facts), dtype=bool) if searchable is None else searchable.astype(bool)
        self._brands = np.array([brand_base(b) if b else "" for b in facts.brands], dtype=object)
        self._unbranded = np.array([not b for b in facts.brands], dtype=bool)
        self._title_keys = [f" {key(t)} " for t in facts.titles]
        self._paths = [set(c.split(CATEGORY_SEPARATOR)) if c else set() for c in facts.categories]

    def in_category(self, category: str) -> np.ndarray:
        """Rows whose category path has ``category`` at some level."""
        return np.array([category in p for p in self._paths], dtype=bool)

    def allowed(self, intent: QueryIntent) -> np.ndarray:
        """Searchable rows that pass the intent's filters (brand, price range)."""
        keep = self.searchable.copy()
        if intent.brand is not None:
            # Every spelling of the brand, and items of no recorded brand whose title names it (a
            # sixth of the Beauty catalog has no brand, though its titles often say it).
            named = self._unbranded & np.array([f" {key(intent.brand)} " in t for t in self._title_keys])
            keep &= (self._brands == brand_base(intent.brand)) | named
        low, high = self.facts.price_low, self.facts.price_high
        with np.errstate(invalid="ignore"):
            if intent.max_price is not None:
                keep &= low < intent.max_price
            if intent.min_price is not None:
                keep &= (high > intent.min_price) | (low >= intent.min_price)
        return keep

    def search(
        self,
        query: str,
        k: int = 10,
        mode: str = DEFAULT_MODE,
        query_vector: np.ndarray | None = None,
        user_scores: np.ndarray | None = None,
    ) -> SearchResult:
        """Rank the catalog for ``query`` with one method (see the module docstring).

        Args:
            query: the shopper's text.
            k: how many rows to return.
            mode: one of :data:`MODES`.
            query_vector: the query's L2-normalised encoder vector (needed by every mode but bm25).
            user_scores: the recommender's score of each row for the user (personal mode; ignored
                when None, which makes it ``hybrid_intent``).
        """
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}: use one of {', '.join(MODES)}")
        intent = self.parser.parse(query)
        use_intent = mode.startswith("hybrid_intent")
        allowed = self.allowed(intent) if use_intent else self.searchable
        if not allowed.any():
            return SearchResult([], [], intent, mode, note=_nothing_fits(intent))

        rankings: list[np.ndarray] = []
        weights: list[float] = []
        if mode != "bm25":
            if query_vector is None or self.item_vectors is None:
                raise ValueError(f"mode {mode!r} needs item vectors and the query's vector")
            dense = self.item_vectors @ np.asarray(query_vector, dtype=self.item_vectors.dtype)
            if mode == "dense":
                return self._result(top_indices(dense, k, allowed), dense, intent, mode)
            rankings.append(top_indices(dense, CANDIDATES, allowed))
            weights.append(1.0)
        bm25 = self.lexical.scores(intent.text if use_intent else query)
        if mode == "bm25":
            return self._result(top_indices(bm25, k, allowed & (bm25 > 0)), bm25, intent, mode)
        rankings.append(top_indices(bm25, CANDIDATES, allowed & (bm25 > 0)))
        weights.append(1.0)
        fused = rrf(rankings, weights, len(self.facts))
        if use_intent and intent.category is not None:
            # The category's candidates count as ranked first by one more retriever (all alike).
            candidates = np.flatnonzero(fused > 0)
            boosted = candidates[self.in_category(intent.category)[candidates]]
            fused[boosted] += CATEGORY_WEIGHT / (RRF_K + 1)
        if mode == PERSONAL_MODE and user_scores is not None:
            fused += rrf([top_indices(user_scores, CANDIDATES, allowed)], [PERSONAL_WEIGHT], len(self.facts))
        return self._result(top_indices(fused, k, allowed & (fused > 0)), fused, intent, mode)

    @staticmethod
    def _result(rows: np.ndarray, scores: np.ndarray, intent: QueryIntent, mode: str) -> SearchResult:
        return SearchResult([int(i) for i in rows], [float(scores[i]) for i in rows], intent, mode)


def _nothing_fits(intent: QueryIntent) -> str:
    asked = []
    if intent.brand:
        asked.append(f"brand {intent.brand}")
    if intent.min_price is not None:
        asked.append(f"price at least ${intent.min_price:g}")
    if intent.max_price is not None:
        asked.append(f"price under ${intent.max_price:g}")
    return f"no item in the catalog has {' and '.join(asked)}"
