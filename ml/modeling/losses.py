"""Next-item losses: the full softmax over the catalog, and sampled softmax with logQ correction.

Both are pure functions of the user states, the item representations and the target indices, so
they are unit-tested on hand-computed cases and shared by every training mode.

* :func:`full_softmax_loss`: cross-entropy over every catalog item (the padding row left out).
  The recipe that closes most of SASRec's gap to the published Beauty rows (Klenitskiy &
  Vasilev, RecSys'23: SASRec+ with cross-entropy instead of one sampled negative).
* :func:`sampled_softmax_loss`: the target against ``K`` negatives shared by all positions of a
  step, drawn from a proposal ``q`` (uniform or popularity-shaped). Each logit is corrected by
  ``log(K q(i))`` (Yi et al., RecSys'19 "logQ correction"), which makes the sampled softmax an
  unbiased-in-the-limit estimate of the full one even when popular items are drawn more often;
  negatives that happen to equal a position's target are masked out (an "accidental hit" would
  push the target away from itself).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ml.modeling.datasets import PAD


def full_softmax_loss(hidden: torch.Tensor, table: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each position's target over the whole catalog.

    Args:
        hidden: user states, ``positions x hidden``.
        table: item representations of the whole vocabulary, ``num_items x hidden``; row 0 is
            padding and never a candidate.
        targets: item index (1 .. num_items-1) of each position.
    """
    logits = hidden @ table[1:].T
    return F.cross_entropy(logits.float(), targets - 1)


def sampled_softmax_loss(
    hidden: torch.Tensor,
    target_reps: torch.Tensor,
    negative_reps: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
    log_q_targets: torch.Tensor | None = None,
    log_q_negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of each target against shared sampled negatives, logQ-corrected.

    Args:
        hidden: user states, ``positions x hidden``.
        target_reps: the representation of each position's target, ``positions x hidden``.
        negative_reps: representations of the ``K`` shared negatives, ``K x hidden``.
        targets: item index of each position's target.
        negatives: item index of each negative (to mask accidental hits).
        log_q_targets: ``log(K q(target))`` per position; None for no correction.
        log_q_negatives: ``log(K q(negative))`` per negative; None for no correction.
    """
    pos = (hidden * target_reps).sum(-1).float()
    neg = (hidden @ negative_reps.T).float()
    if log_q_targets is not None:
        pos = pos - log_q_targets.float()
    if log_q_negatives is not None:
        neg = neg - log_q_negatives.float().unsqueeze(0)
    neg = neg.masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))
    logits = torch.cat([pos.unsqueeze(1), neg], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long, device=logits.device))


def proposal(counts: np.ndarray, power: float) -> torch.Tensor:
    """Sampling probabilities ``q(i) ∝ (count_i + 1) ** power`` over items (padding gets 0).

    ``power`` 0 is uniform; 1 follows popularity; in between (0.5-0.75, word2vec's habit) draws
    popular items often enough to be hard negatives without starving the long tail. The +1 keeps
    items unseen in training drawable (they are still catalog items that must rank low).
    """
    weights = (np.asarray(counts, dtype=np.float64) + 1.0) ** power
    weights[PAD] = 0.0
    return torch.as_tensor(weights / weights.sum(), dtype=torch.float32)
