"""Baselines trained and evaluated on the same split, with the same :func:`ml.modeling.evaluate.evaluate`.

* :class:`Popularity`: the most frequent training items, for everyone.
* :class:`ItemKNN`: item-item cosine similarity over the user-item matrix (sparse, scipy), a
  user's score the recency-weighted sum of the similarities of the items in their history.
* SASRec (ID-only): the recommender's own user encoder without text, trained with the same loss
  (:func:`train_sasrec`), so a gain of the full model is the gain of the text.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ml.modeling.config import TrainConfig, TrainResult
from ml.modeling.datasets import PAD, Protocol, Split, TrainingData
from ml.modeling.evaluate import Histories, evaluate
from ml.modeling.fit import train


class Popularity:
    """Scores every item by its number of training interactions."""

    def __init__(self) -> None:
        self.counts = np.zeros(1, dtype=np.float32)

    def fit(self, data: TrainingData, protocol: Protocol = "loo") -> Popularity:
        self.counts = data.item_counts(protocol).astype(np.float32)
        return self

    def score(self, histories: Histories) -> np.ndarray:
        out = np.broadcast_to(self.counts, (len(histories), len(self.counts))).copy()
        out[:, PAD] = -np.inf
        return out


class ItemKNN:
    """Item-based collaborative filtering with cosine similarity.

    Args:
        neighbours: similarities kept per item (the rest are zero), as in classic item-kNN.
        recency: weight of the i-th most recent history item is ``recency ** i`` (1 = no decay);
            in sequential data the last item says most about the next.
        shrink: added to the cosine denominator so pairs seen together once count less.
    """

    def __init__(self, neighbours: int = 200, recency: float = 1.0, shrink: float = 0.0) -> None:
        self.neighbours = neighbours
        self.recency = recency
        self.shrink = shrink
        self.similarity: Any = None
        self.num_items = 0

    def fit(self, data: TrainingData, protocol: Protocol = "loo") -> ItemKNN:
        from scipy import sparse

        seqs = data.train_sequences(protocol)
        rows = np.concatenate([np.full(len(s), u) for u, s in enumerate(seqs)]) if seqs else np.zeros(0)
        cols = np.concatenate(seqs) if seqs else np.zeros(0, dtype=np.int64)
        self.num_items = data.num_items
        users_items = sparse.csr_matrix(
            (np.ones(len(cols), dtype=np.float32), (rows, cols)), shape=(len(seqs), data.num_items)
        )
        users_items.data[:] = 1.0  # repeated interactions count once
        co = (users_items.T @ users_items).tocsr()
        co.setdiag(0)
        co.eliminate_zeros()
        norms = np.sqrt(np.asarray(users_items.sum(axis=0)).ravel())
        co = co.tocoo()
        values = co.data / (norms[co.row] * norms[co.col] + self.shrink + 1e-12)
        sim = sparse.csr_matrix((values.astype(np.float32), (co.row, co.col)), shape=co.shape)
        self.similarity = _top_per_row(sim, self.neighbours)
        return self

    def score(self, histories: Histories) -> np.ndarray:
        from scipy import sparse

        rows, cols, weights = [], [], []
        for r, history in enumerate(histories):
            h = np.asarray(history, dtype=np.int64)
            rows.append(np.full(len(h), r))
            cols.append(h)
            weights.append(self.recency ** np.arange(len(h) - 1, -1, -1, dtype=np.float64))
        query = sparse.csr_matrix(
            (np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
            shape=(len(histories), self.num_items),
        )
        out = np.asarray((query @ self.similarity).todense(), dtype=np.float32)
        out[:, PAD] = -np.inf
        return out


def _top_per_row(matrix: Any, k: int) -> Any:
    """Keep the k largest entries of each row of a CSR matrix."""
    from scipy import sparse

    indptr, indices, data = matrix.indptr, matrix.indices, matrix.data
    keep_rows, keep_cols, keep_vals = [], [], []
    for r in range(matrix.shape[0]):
        lo, hi = indptr[r], indptr[r + 1]
        if hi - lo == 0:
            continue
        vals = data[lo:hi]
        idx = indices[lo:hi]
        if hi - lo > k:
            top = np.argpartition(-vals, k - 1)[:k]
            vals, idx = vals[top], idx[top]
        keep_rows.append(np.full(len(idx), r))
        keep_cols.append(idx)
        keep_vals.append(vals)
    if not keep_rows:
        return sparse.csr_matrix(matrix.shape, dtype=np.float32)
    return sparse.csr_matrix(
        (np.concatenate(keep_vals), (np.concatenate(keep_rows), np.concatenate(keep_cols))),
        shape=matrix.shape,
    )


def train_sasrec(
    data: TrainingData, config: TrainConfig | None = None, out_dir: Path | str = "sasrec"
) -> TrainResult:
    """SASRec (ID-only): the same user encoder and loss as the recommender, without text."""
    config = (config or TrainConfig()).override(use_text=False, use_id_embedding=True, mode="frozen")
    return train(data, config, out_dir)


def tune_item_knn(
    data: TrainingData,
    protocol: Protocol = "loo",
    recencies: Sequence[float] = (1.0, 0.8, 0.6, 0.4, 0.2),
    max_cases: int | None = 5000,
    neighbours: Sequence[int] = (200,),
) -> tuple[ItemKNN, float]:
    """Item-kNN with the neighbour count and recency decay best on validation NDCG@10 (never test)."""
    best: tuple[ItemKNN, float] | None = None
    for n in neighbours:
        base = ItemKNN(neighbours=n).fit(data, protocol)
        for recency in recencies:
            knn = ItemKNN(neighbours=n, recency=recency)
            knn.similarity, knn.num_items = base.similarity, base.num_items
            ndcg = evaluate(knn, data, "validation", protocol, max_cases=max_cases, coverage=False)["ndcg@10"]
            if best is None or ndcg > best[1]:
                best = (knn, ndcg)
    assert best is not None
    return best


def evaluate_baselines(
    data: TrainingData,
    split: Split = "test",
    protocol: Protocol = "loo",
    out_dir: Path | str = "baselines",
    sasrec: TrainConfig | None = None,
    include: Sequence[str] = ("popularity", "item_knn", "sasrec"),
) -> dict[str, dict[str, float]]:
    """Fit each baseline on the training events and evaluate it on ``split``.

    Returns:
        Per baseline, the metrics of :func:`ml.modeling.evaluate.evaluate` plus ``train_seconds``.
    """
    results: dict[str, dict[str, float]] = {}
    for name in include:
        start = time.perf_counter()
        model: Any
        if name == "popularity":
            model = Popularity().fit(data, protocol)
        elif name == "item_knn":
            model, _ = tune_item_knn(data, protocol)
        elif name == "sasrec":
            config = (sasrec or TrainConfig()).override(protocol=protocol)
            model = train_sasrec(data, config, Path(out_dir) / "sasrec").model
        else:
            raise ValueError(f"unknown baseline {name!r} (popularity, item_knn, sasrec)")
        seconds = time.perf_counter() - start
        results[name] = {**evaluate(model, data, split, protocol), "train_seconds": seconds}
    return results
