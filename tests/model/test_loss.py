"""The next-item losses against hand computations on tiny cases (ml.modeling.losses)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ml.modeling.losses import full_softmax_loss, proposal, sampled_softmax_loss


def _ce(logits: list[float], target: int) -> float:
    """Cross-entropy by hand: log-sum-exp minus the target's logit."""
    return math.log(sum(math.exp(x) for x in logits)) - logits[target]


def test_full_softmax_is_cross_entropy_over_the_catalog_without_padding() -> None:
    hidden = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    # Row 0 is padding: a huge score there must not count.
    table = torch.tensor([[100.0, 100.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    targets = torch.tensor([1, 3])
    # logits of the two positions over items 1..3: [1, 0, 0.5] and [0, 2, 1]
    expected = (_ce([1.0, 0.0, 0.5], 0) + _ce([0.0, 2.0, 1.0], 2)) / 2
    assert float(full_softmax_loss(hidden, table, targets)) == pytest.approx(expected, rel=1e-6)


def test_sampled_softmax_with_logq_matches_the_hand_computation() -> None:
    hidden = torch.tensor([[1.0, 2.0]])
    target_reps = torch.tensor([[0.5, 0.5]])
    negative_reps = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    log_q_t = torch.tensor([math.log(0.2)])
    log_q_n = torch.tensor([math.log(0.5), math.log(1.5)])
    loss = sampled_softmax_loss(
        hidden, target_reps, negative_reps, torch.tensor([7]), torch.tensor([3, 4]), log_q_t, log_q_n
    )
    logits = [1.5 - math.log(0.2), 1.0 - math.log(0.5), 2.0 - math.log(1.5)]
    assert float(loss) == pytest.approx(_ce(logits, 0), rel=1e-6)


def test_an_accidental_hit_leaves_the_denominator() -> None:
    hidden = torch.tensor([[1.0, 0.0]])
    target_reps = torch.tensor([[2.0, 0.0]])
    # The first negative is the target itself: it must not compete with itself.
    negative_reps = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    loss = sampled_softmax_loss(hidden, target_reps, negative_reps, torch.tensor([5]), torch.tensor([5, 6]))
    assert float(loss) == pytest.approx(_ce([2.0, 0.0], 0), rel=1e-6)


def test_the_loss_is_lower_when_the_user_points_at_the_target() -> None:
    table = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    targets = torch.tensor([1])
    right, wrong = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    assert float(full_softmax_loss(right, table, targets)) < float(full_softmax_loss(wrong, table, targets))
    negatives = torch.tensor([2, 3])
    args = (table[targets], table[negatives], targets, negatives)
    assert float(sampled_softmax_loss(right, *args)) < float(sampled_softmax_loss(wrong, *args))


def test_a_uniform_proposal_makes_the_correction_a_no_op() -> None:
    # log(K q) is the same constant for every item under a uniform q: softmax is shift-invariant.
    gen = torch.Generator().manual_seed(0)
    hidden, target_reps = torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen)
    negative_reps = torch.randn(5, 3, generator=gen)
    targets, negatives = torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6, 7, 8, 9])
    const = math.log(5 / 9)
    args = (hidden, target_reps, negative_reps, targets, negatives)
    plain = sampled_softmax_loss(*args)
    corrected = sampled_softmax_loss(*args, torch.full((4,), const), torch.full((5,), const))
    assert float(corrected) == pytest.approx(float(plain), rel=1e-6)


def test_proposal_is_uniform_at_power_zero_and_follows_counts_at_one() -> None:
    counts = np.array([0, 3, 0, 1])  # index 0 is padding
    uniform = proposal(counts, 0.0)
    assert uniform.tolist() == pytest.approx([0.0, 1 / 3, 1 / 3, 1 / 3])
    popular = proposal(counts, 1.0)
    # (count + 1): 4, 1, 2 over 7; an unseen item stays drawable, padding never.
    assert popular.tolist() == pytest.approx([0.0, 4 / 7, 1 / 7, 2 / 7])
