"""Constructed search queries with known answers, and recall, for comparing search methods.

The shop has no search logs, so queries are built from real item attributes: a held-out sample of
items (every item stays in the index) each gives the query ``"<brand> <leaf category>"``, and the
relevant answers are every item of that brand family and leaf category. This shows whether a
method finds what a catalog-literate shopper names; it cannot show how real shoppers phrase
things (their typos, vague wishes), so the intent parser's hand-written tests cover those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ml.retrieval.facts import CatalogFacts
from ml.retrieval.intent import brand_base


@dataclass(frozen=True)
class LabelledQuery:
    """A constructed query and the catalog rows that answer it."""

    text: str
    relevant: frozenset[int]
    source: int
    """The sampled row the query was built from."""


def brand_category_queries(
    facts: CatalogFacts,
    n: int,
    seed: int = 0,
    rows: np.ndarray | None = None,
) -> list[LabelledQuery]:
    """Up to ``n`` queries "<brand> <leaf category>" from a random sample of items, one per
    (brand family, leaf) pair; relevant: every row of that brand family and leaf.

    Args:
        facts: the catalog searched.
        n: how many queries at most.
        seed: the sample's random state.
        rows: the rows that may be sampled (all when None), e.g. not a padding row.
    """
    leaves = [facts.leaf(i) for i in range(len(facts))]
    bases = [brand_base(b) if b else None for b in facts.brands]
    groups: dict[tuple[str, str], set[int]] = {}
    candidates = range(len(facts)) if rows is None else rows
    for i in candidates:
        base, leaf = bases[i], leaves[i]
        if base and leaf:
            groups.setdefault((base, leaf), set()).add(int(i))
    order = np.random.default_rng(seed).permutation(np.fromiter(candidates, dtype=np.int64))
    queries: list[LabelledQuery] = []
    seen: set[tuple[str, str]] = set()
    for i in order:
        base, leaf, brand = bases[i], leaves[i], facts.brands[i]
        if not (base and leaf and brand) or (base, leaf) in seen:
            continue
        seen.add((base, leaf))
        queries.append(LabelledQuery(f"{brand} {leaf}", frozenset(groups[(base, leaf)]), int(i)))
        if len(queries) == n:
            break
    return queries


def recall_at_k(ranked: Sequence[int], relevant: frozenset[int] | set[int], k: int) -> float:
    """Share of the relevant rows found in the top ``k``, out of as many as fit (``min(k, |rel|)``)."""
    if not relevant:
        return 0.0
    return len(set(list(ranked)[:k]) & relevant) / min(k, len(relevant))
