"""Search methods compared over the full Beauty catalog (slow: encodes 12k items, ~11 min on 2 cores).

200 queries "<brand> <leaf category>" built from a random sample of items (ml.retrieval.evaluate);
relevant: every item of that brand family and leaf; every catalog item stays in the index. Dense
vectors are the packaged MiniLM's (frozen, 64 tokens: the recommender's default text space).

Measured (2026-12-02): bm25 0.966, dense 0.829, hybrid 0.925, hybrid_intent 0.984 recall@10. These
queries repeat the indexed brand and category words verbatim, BM25's best case: plain RRF fusion
with the weaker dense ranking loses to BM25 alone, and only the intent (brand filter, category
boost) beats both.
"""

from __future__ import annotations

import numpy as np
import pytest

from ml.core.settings import PROJECT_DIR
from ml.retrieval.evaluate import brand_category_queries, recall_at_k
from ml.retrieval.facts import CatalogFacts
from ml.retrieval.hybrid import HybridSearcher

N_QUERIES = 200


@pytest.mark.slow
def test_hybrid_intent_beats_each_single_retriever_on_the_full_catalog() -> None:
    import torch

    from ml.modeling.datasets import shipped_frames
    from ml.modeling.model import TextEncoder

    _, items = shipped_frames(PROJECT_DIR / "data")
    texts = items["item_text"].tolist()
    encoder = TextEncoder(max_tokens=64)
    with torch.inference_mode():
        vectors = encoder.encode(texts).numpy()
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    facts = CatalogFacts.from_frame(items)
    searcher = HybridSearcher(facts, texts, vectors)
    queries = brand_category_queries(facts, N_QUERIES, seed=0)
    query_vectors = encoder.encode([q.text for q in queries]).numpy()
    query_vectors /= np.linalg.norm(query_vectors, axis=1, keepdims=True)
    recall = {}
    for mode in ("bm25", "dense", "hybrid", "hybrid_intent"):
        recall[mode] = float(
            np.mean(
                [
                    recall_at_k(searcher.search(q.text, 10, mode, query_vector=v).indices, q.relevant, 10)
                    for q, v in zip(queries, query_vectors, strict=True)
                ]
            )
        )
    print(f"\n{len(queries)} queries over {len(facts)} items, recall@10: {recall}")
    assert len(queries) == N_QUERIES
    assert recall["hybrid_intent"] > recall["bm25"]
    assert recall["hybrid_intent"] > recall["dense"]
    assert recall["hybrid"] > recall["dense"]
