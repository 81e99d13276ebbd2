"""User sequences cut into left-padded training windows and shuffled batches of next-item targets."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ml.modeling.datasets import PAD


@dataclass
class Batch:
    """Left-padded inputs and next-item targets of some user sequences."""

    inputs: torch.Tensor
    targets: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def positions(self) -> int:
        return int((self.targets != PAD).sum())


def windows(sequences: list[np.ndarray], max_len: int) -> Iterator[np.ndarray]:
    """Cut sequences longer than ``max_len + 1`` into windows whose targets do not overlap.

    Truncating to the last ``max_len`` items would throw away the early targets of long
    histories; windows keep every target while bounding the attention length.
    """
    for seq in sequences:
        end = len(seq)
        while end >= 2:
            yield seq[max(0, end - max_len - 1) : end]
            end -= max_len


def make_batches(
    sequences: list[np.ndarray], batch_size: int, max_len: int, rng: np.random.Generator
) -> Iterator[Batch]:
    """Shuffled batches of similar-length sequences (dynamic padding wastes little)."""
    sequences = list(windows(sequences, max_len))
    lengths = np.asarray([len(s) for s in sequences])
    # Sort by length with random tie-breaks, cut into batches, shuffle the batches.
    order = np.lexsort((rng.random(len(sequences)), lengths))
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for c in rng.permutation(len(chunks)):
        rows = [sequences[i] for i in chunks[c]]
        length = max(len(r) for r in rows) - 1
        inputs = torch.zeros(len(rows), length, dtype=torch.long)
        targets = torch.zeros(len(rows), length, dtype=torch.long)
        for j, r in enumerate(rows):
            n = len(r) - 1
            inputs[j, length - n :] = torch.as_tensor(r[:-1])
            targets[j, length - n :] = torch.as_tensor(r[1:])
        yield Batch(inputs, targets)
