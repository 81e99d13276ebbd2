"""Ranking metrics and the evaluation protocol.

The metric functions are pure: they take the truth and the predictions (or the rank of the truth)
and ``k``, and import no model. :func:`evaluate` applies the protocol of the published Beauty
tables to anything that scores histories: every target is ranked against the FULL catalog (no
sampled negatives), with the items already in the user's history excluded, except the target
itself when the user comes back to it.

Ties count against the target (a scorer that gives every item the same score ranks every target
last), so a constant or coarse scorer cannot look better than it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from ml.modeling.datasets import EvalCases, Split, TrainingData
from ml.modeling.datasets import Protocol as SplitProtocol

DEFAULT_KS = (5, 10, 20)
Histories = Sequence["np.ndarray | Sequence[int]"]
"""Item-index histories, oldest first."""


@runtime_checkable
class Scorer(Protocol):
    """Anything that scores the whole catalog for item-index histories."""

    def score(self, histories: Histories) -> np.ndarray:
        """``len(histories) x num_items`` scores; column 0 is padding."""
        ...


# -- metrics on top-k lists (truth: the relevant items of each case) ---------------------------
def _as_sets(truth: Iterable[object]) -> list[set[object]]:
    return [set(t) if isinstance(t, set | frozenset | list | tuple | np.ndarray) else {t} for t in truth]


def recall_at_k(truth: Sequence[object], predictions: Sequence[Sequence[object]], k: int) -> float:
    """Mean share of each case's relevant items found in its top k (hit rate for one target)."""
    sets = _as_sets(truth)
    if not sets:
        return 0.0
    return float(
        np.mean(
            [len(t & set(list(p)[:k])) / len(t) if t else 0.0 for t, p in zip(sets, predictions, strict=True)]
        )
    )


def hit_rate_at_k(truth: Sequence[object], predictions: Sequence[Sequence[object]], k: int) -> float:
    """Share of cases with at least one relevant item in the top k."""
    sets = _as_sets(truth)
    if not sets:
        return 0.0
    return float(np.mean([bool(t & set(list(p)[:k])) for t, p in zip(sets, predictions, strict=True)]))


def ndcg_at_k(truth: Sequence[object], predictions: Sequence[Sequence[object]], k: int) -> float:
    """Mean normalised discounted cumulative gain at k (binary relevance)."""
    sets = _as_sets(truth)
    if not sets:
        return 0.0
    values = []
    for t, p in zip(sets, predictions, strict=True):
        dcg = sum(1.0 / np.log2(rank + 2) for rank, item in enumerate(list(p)[:k]) if item in t)
        ideal = sum(1.0 / np.log2(rank + 2) for rank in range(min(len(t), k)))
        values.append(dcg / ideal if ideal else 0.0)
    return float(np.mean(values))


def mrr(truth: Sequence[object], predictions: Sequence[Sequence[object]], k: int | None = None) -> float:
    """Mean reciprocal rank of the first relevant item (0 when absent from the top k)."""
    sets = _as_sets(truth)
    if not sets:
        return 0.0
    values = []
    for t, p in zip(sets, predictions, strict=True):
        ranked = list(p) if k is None else list(p)[:k]
        values.append(next((1.0 / (r + 1) for r, item in enumerate(ranked) if item in t), 0.0))
    return float(np.mean(values))


def catalog_coverage(predictions: Sequence[Sequence[object]], catalog_size: int, k: int) -> float:
    """Share of the catalog that appears in at least one top-k list."""
    if catalog_size <= 0:
        return 0.0
    seen: set[object] = set()
    for p in predictions:
        seen.update(list(p)[:k])
    return len(seen) / catalog_size


# -- metrics on ranks (one target per case, rank 1 = best) -------------------------------------
def hit_rate_from_ranks(ranks: np.ndarray, k: int) -> float:
    """Share of targets ranked within the top k (= recall@k with one target)."""
    return float(np.mean(np.asarray(ranks) <= k)) if len(ranks) else 0.0


def ndcg_from_ranks(ranks: np.ndarray, k: int) -> float:
    """NDCG@k with one relevant item: 1/log2(rank + 1) inside the top k, else 0."""
    r = np.asarray(ranks, dtype=np.float64)
    if not len(r):
        return 0.0
    return float(np.mean(np.where(r <= k, 1.0 / np.log2(r + 1.0), 0.0)))


def mrr_from_ranks(ranks: np.ndarray) -> float:
    """Mean reciprocal rank over the full catalog."""
    r = np.asarray(ranks, dtype=np.float64)
    return float(np.mean(1.0 / r)) if len(r) else 0.0


def rank_full_catalog(
    scores: np.ndarray,
    targets: np.ndarray,
    exclude: Histories | None = None,
) -> np.ndarray:
    """1-based rank of each target among all catalog items.

    Args:
        scores: ``cases x num_items``; column 0 is padding and never competes.
        targets: the target item index of each case.
        exclude: per case, items that do not compete (the user's history); the target itself
            always competes.

    Returns:
        Integer ranks; items scoring the same as the target rank ahead of it.
    """
    scores = np.array(scores, dtype=np.float32, copy=True)
    rows = np.arange(len(targets))
    target_scores = scores[rows, targets].copy()
    scores[:, 0] = -np.inf
    if exclude is not None:
        for row, items in enumerate(exclude):
            if len(items):
                scores[row, np.asarray(items, dtype=np.int64)] = -np.inf
    scores[rows, targets] = -np.inf
    ahead = (scores >= target_scores[:, None]) & np.isfinite(scores)
    # A target scored -inf (an excluded or impossible item) is ranked behind the whole catalog.
    ranks = ahead.sum(axis=1) + 1
    ranks[~np.isfinite(target_scores)] = scores.shape[1]
    return np.asarray(ranks, dtype=np.int64)


def top_k(scores: np.ndarray, k: int, exclude: Histories | None = None) -> np.ndarray:
    """Indices of the k best items per row (best first), excluding padding and ``exclude``."""
    scores = np.array(scores, dtype=np.float32, copy=True)
    scores[:, 0] = -np.inf
    if exclude is not None:
        for row, items in enumerate(exclude):
            if len(items):
                scores[row, np.asarray(items, dtype=np.int64)] = -np.inf
    k = min(k, scores.shape[1] - 1)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def metrics_from_ranks(
    ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS, prefix: str = ""
) -> dict[str, float]:
    """recall@k, ndcg@k for each k, and mrr, from target ranks."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"{prefix}recall@{k}"] = hit_rate_from_ranks(ranks, k)
    for k in ks:
        out[f"{prefix}ndcg@{k}"] = ndcg_from_ranks(ranks, k)
    out[f"{prefix}mrr"] = mrr_from_ranks(ranks)
    return out


# -- the protocol ------------------------------------------------------------------------------
def evaluate(
    model: Scorer | Callable[[Histories], np.ndarray],
    data: TrainingData,
    split: Split = "test",
    protocol: SplitProtocol = "loo",
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 1024,
    max_cases: int | None = None,
    short_history: int = 5,
    rare_item: int = 10,
    seed: int = 0,
    coverage: bool = True,
) -> dict[str, float]:
    """Full-catalog ranking metrics of a scorer on a split.

    Args:
        model: an object with ``score(histories)`` or a callable doing the same.
        data: the training data the split comes from.
        split: ``validation`` or ``test``.
        protocol: ``loo`` (leave-one-out) or ``time`` (global time cut).
        ks: cut-offs for recall and NDCG.
        batch_size: cases scored at once (memory: batch x catalog floats).
        max_cases: evaluate a random subset of this many cases (quick validation); None = all.
        short_history: histories of at most this many items form the ``short_history`` slice.
        rare_item: targets seen at most this many times in training form the ``rare_target``
            slice; never-seen targets form ``cold_target``.
        seed: draws the subset when ``max_cases`` is set.
        coverage: compute ``coverage@k`` (each case's top-k list: a partial sort of the catalog;
            validation during training, which only needs the ranks, skips it).

    Returns:
        ``recall@k``, ``ndcg@k``, ``mrr``, ``coverage@k`` (share of the catalog in some top-k
        list), ``n``, and per slice ``<slice>/n``, ``<slice>/recall@10``, ``<slice>/ndcg@10``.
    """
    score = model.score if isinstance(model, Scorer) else model
    cases: EvalCases = data.cases(split, protocol)
    if max_cases is not None and len(cases) > max_cases:
        pick = np.zeros(len(cases), dtype=bool)
        pick[np.random.default_rng(seed).choice(len(cases), max_cases, replace=False)] = True
        cases = cases.subset(pick)
    ranks = np.empty(len(cases), dtype=np.int64)
    kmax = max(ks)
    tops = np.empty((len(cases), kmax), dtype=np.int64)
    for start in range(0, len(cases), batch_size):
        stop = min(start + batch_size, len(cases))
        histories = cases.histories[start:stop]
        scores = np.asarray(score(histories))
        ranks[start:stop] = rank_full_catalog(scores, cases.targets[start:stop], histories)
        if coverage:
            tops[start:stop] = top_k(scores, kmax, histories)

    result = metrics_from_ranks(ranks, ks)
    catalog = data.num_items - 1
    for k in ks if coverage else ():
        result[f"coverage@{k}"] = len(np.unique(tops[:, :k])) / catalog if len(cases) else 0.0
    result["n"] = float(len(cases))

    counts = data.item_counts(protocol)[cases.targets]
    lengths = np.asarray([len(h) for h in cases.histories])
    slices = {
        "cold_target": counts == 0,
        "rare_target": (counts > 0) & (counts <= rare_item),
        "short_history": lengths <= short_history,
    }
    for name, mask in slices.items():
        result[f"{name}/n"] = float(mask.sum())
        result[f"{name}/recall@10"] = hit_rate_from_ranks(ranks[mask], 10)
        result[f"{name}/ndcg@10"] = ndcg_from_ranks(ranks[mask], 10)
    return result
