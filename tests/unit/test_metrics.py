"""Ranking metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ml.modeling.datasets import TrainingData
from ml.modeling.evaluate import (
    catalog_coverage,
    evaluate,
    hit_rate_at_k,
    hit_rate_from_ranks,
    metrics_from_ranks,
    mrr,
    mrr_from_ranks,
    ndcg_at_k,
    ndcg_from_ranks,
    rank_full_catalog,
    recall_at_k,
    top_k,
)


def test_list_metrics_single_target() -> None:
    truth = ["b", "z"]
    predictions = [["a", "b", "c"], ["a", "b", "c"]]
    assert recall_at_k(truth, predictions, 1) == 0.0
    assert recall_at_k(truth, predictions, 2) == pytest.approx(0.5)
    assert hit_rate_at_k(truth, predictions, 3) == pytest.approx(0.5)
    # "b" at rank 2: 1/log2(3); "z" absent.
    assert ndcg_at_k(truth, predictions, 3) == pytest.approx((1 / math.log2(3)) / 2)
    assert mrr(truth, predictions) == pytest.approx(0.25)
    assert mrr(truth, predictions, k=1) == 0.0


def test_list_metrics_several_relevant_items() -> None:
    truth = [{"a", "c"}]
    predictions = [["a", "b", "c", "d"]]
    assert recall_at_k(truth, predictions, 2) == pytest.approx(0.5)
    assert recall_at_k(truth, predictions, 3) == pytest.approx(1.0)
    ideal = 1 + 1 / math.log2(3)
    assert ndcg_at_k(truth, predictions, 3) == pytest.approx((1 + 1 / math.log2(4)) / ideal)
    assert ndcg_at_k(truth, [["a", "c", "b"]], 3) == pytest.approx(1.0)
    assert mrr(truth, predictions) == pytest.approx(1.0)


def test_empty_inputs_are_zero() -> None:
    assert recall_at_k([], [], 10) == 0.0
    assert ndcg_at_k([], [], 10) == 0.0
    assert mrr([], []) == 0.0
    assert hit_rate_from_ranks(np.array([]), 10) == 0.0
    assert catalog_coverage([], 0, 10) == 0.0


def test_coverage_counts_distinct_items_in_top_k() -> None:
    predictions = [[1, 2, 3], [2, 4, 5]]
    assert catalog_coverage(predictions, catalog_size=10, k=2) == pytest.approx(3 / 10)
    assert catalog_coverage(predictions, catalog_size=10, k=3) == pytest.approx(5 / 10)


def test_rank_metrics_match_list_metrics() -> None:
    ranks = np.array([1, 3, 11, 2])
    assert hit_rate_from_ranks(ranks, 10) == pytest.approx(0.75)
    expected = (1 + 1 / math.log2(4) + 0 + 1 / math.log2(3)) / 4
    assert ndcg_from_ranks(ranks, 10) == pytest.approx(expected)
    assert mrr_from_ranks(ranks) == pytest.approx((1 + 1 / 3 + 1 / 11 + 1 / 2) / 4)
    # The same cases as top-k lists: the target sits at its rank.
    lists = [[t if i + 1 == r else f"x{i}" for i in range(20)] for t, r in zip("abcd", ranks, strict=True)]
    assert ndcg_at_k(list("abcd"), lists, 10) == pytest.approx(ndcg_from_ranks(ranks, 10))
    assert recall_at_k(list("abcd"), lists, 10) == pytest.approx(hit_rate_from_ranks(ranks, 10))
    out = metrics_from_ranks(ranks, ks=(1, 10))
    assert out == {
        "recall@1": pytest.approx(0.25),
        "recall@10": pytest.approx(0.75),
        "ndcg@1": pytest.approx(0.25),
        "ndcg@10": pytest.approx(expected),
        "mrr": pytest.approx(mrr_from_ranks(ranks)),
    }


def test_rank_full_catalog_excludes_history_and_padding() -> None:
    #                  pad   1    2    3    4    5
    scores = np.array([[9.0, 0.9, 0.8, 0.7, 0.6, 0.5]])
    # Target 3 is behind 1 and 2; padding never competes.
    assert rank_full_catalog(scores, np.array([3])).tolist() == [3]
    # Items 1 and 2 were already seen: they are excluded, the target moves to rank 1.
    assert rank_full_catalog(scores, np.array([3]), [[1, 2]]).tolist() == [1]
    # A target that is also in the history still competes.
    assert rank_full_catalog(scores, np.array([3]), [[1, 3]]).tolist() == [2]


def test_rank_full_catalog_ties_count_against_the_target() -> None:
    scores = np.zeros((1, 6))
    assert rank_full_catalog(scores, np.array([2])).tolist() == [5]
    scores = np.array([[0.0, 1.0, 0.5, 0.5, 0.1, 0.5]])
    assert rank_full_catalog(scores, np.array([3])).tolist() == [4]


def test_top_k_orders_best_first_and_skips_excluded() -> None:
    scores = np.array([[9.0, 0.1, 0.9, 0.5, 0.7]])
    assert top_k(scores, 3).tolist() == [[2, 4, 3]]
    assert top_k(scores, 2, [[2]]).tolist() == [[4, 3]]


def _toy_data() -> TrainingData:
    item_ids = np.array(["<pad>", "a", "b", "c", "d"], dtype=object)
    seqs = [np.array([1, 2, 3, 4]), np.array([2, 3, 1]), np.array([4, 4, 2])]
    loo = [np.array([0, 0, 1, 2]), np.array([0, 1, 2]), np.array([0, 1, 2])]
    return TrainingData(
        source="toy",
        item_ids=item_ids,
        item_texts=["", "a", "b", "c", "d"],
        user_ids=np.array(["u1", "u2", "u3"], dtype=object),
        sequences=seqs,
        loo_split=loo,
        time_split=[np.zeros(len(s), dtype=np.int8) for s in seqs],
    )


def test_evaluate_with_a_fixed_scorer() -> None:
    data = _toy_data()

    def scorer(histories: list[np.ndarray]) -> np.ndarray:
        # Always prefers d > c > b > a.
        return np.tile(np.array([0.0, 1.0, 2.0, 3.0, 4.0]), (len(histories), 1))

    result = evaluate(scorer, data, "test", ks=(1, 2), short_history=2)
    # u1: history a b c -> d at rank 1. u2: history b c -> a; d ahead (c excluded) -> rank 2.
    # u3: history d d -> b; c ahead (d excluded) -> rank 2.
    assert result["n"] == 3.0
    assert result["recall@1"] == pytest.approx(1 / 3)
    assert result["recall@2"] == pytest.approx(1.0)
    assert result["ndcg@2"] == pytest.approx((1 + 2 / math.log2(3)) / 3)
    assert result["mrr"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    # Top-1 lists: d, d, c -> 2 distinct of 4 items.
    assert result["coverage@1"] == pytest.approx(2 / 4)
    # Training counts: a 1, b 2, c 0, d 1; the targets d, a, b were all seen (rarely).
    assert result["cold_target/n"] == 0.0
    assert result["rare_target/n"] == 3.0
    # Histories of 3, 2 and 2 items.
    assert result["short_history/n"] == 2.0
    assert result["short_history/recall@10"] == pytest.approx(1.0)
    assert result["short_history/ndcg@10"] == pytest.approx(1 / math.log2(3))


def test_evaluate_validation_uses_the_training_prefix() -> None:
    data = _toy_data()
    cases = data.cases("validation")
    assert [h.tolist() for h in cases.histories] == [[1, 2], [2], [4]]
    assert cases.targets.tolist() == [3, 3, 4]
