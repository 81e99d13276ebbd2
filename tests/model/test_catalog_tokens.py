"""A fine-tuning step takes its items' rows of the catalog tokenized once: the very batch that
tokenizing those texts again would build (so the figures of CPU runs do not move), and the
per-epoch re-encoding of the catalog from those rows equals encoding its texts."""

from __future__ import annotations

import pytest
import torch

from ml.modeling.model import TextEncoder

TEXTS = [
    "",  # padding's text
    "red lipstick by Maybelline",
    "argan oil shampoo for dry and damaged hair, sulfate free, 250 ml, with keratin and vitamin E "
    "from a brand that sells it in three sizes",  # longer than max_tokens: truncated
    "nail polish remover",
    "SPF 50 sunscreen",
]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(max_tokens=16)


@pytest.mark.parametrize("picked", [[1, 3], [3, 2, 1], [4]])
def test_rows_of_the_catalog_equal_tokenizing_those_texts(encoder: TextEncoder, picked: list[int]) -> None:
    catalog, counts = encoder.tokenize_catalog(TEXTS)
    assert counts.tolist() == catalog["attention_mask"].sum(1).tolist()
    assert counts[2] == 16  # truncated at max_tokens

    rows = torch.tensor(picked)
    taken = encoder.rows(catalog, rows, int(counts[picked].max()))
    fresh = encoder.tokenize([TEXTS[i] for i in picked])
    assert taken.keys() == fresh.keys()
    for key in fresh:
        assert torch.equal(taken[key], fresh[key]), key
    with torch.no_grad():
        assert torch.allclose(encoder.pool(taken), encoder.pool(fresh))


def test_encoding_the_held_catalog_equals_encoding_its_texts(encoder: TextEncoder) -> None:
    """The trainer's per-epoch refresh re-encodes from the held rows: same vectors, same order."""
    catalog, counts = encoder.tokenize_catalog(TEXTS)
    held = encoder.encode_catalog(catalog, counts, batch_size=2)
    fresh = encoder.encode(TEXTS, batch_size=2)
    assert held.shape == (len(TEXTS), encoder.dim)
    assert torch.allclose(held, fresh, atol=1e-5)
    assert not torch.allclose(held[1], held[3])  # rows kept their own texts' vectors
