"""The item-vector cache is per text: a later catalog encodes only its new texts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from ml.modeling.embeddings import cache_path, item_embeddings
from ml.modeling.model import TextEncoder


@dataclass
class Catalog:
    item_texts: list[str]  # what item_embeddings reads of a TrainingData; index 0 is padding


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(max_tokens=32)


def test_a_grown_catalog_encodes_only_its_new_texts(encoder: TextEncoder, tmp_path: Path) -> None:
    first = Catalog(["", "red lipstick by Maybelline", "argan oil shampoo", "nail polish remover"])
    vectors, seconds = item_embeddings(first, encoder, tmp_path)
    assert seconds > 0 and vectors.shape == (4, encoder.dim)
    assert torch.equal(vectors[0], torch.zeros(encoder.dim))

    again, seconds = item_embeddings(first, encoder, tmp_path)
    assert seconds == 0.0 and torch.equal(again, vectors)

    # A later month: one new item, the others in another order (ids are reassigned per snapshot).
    grown = Catalog(["", "nail polish remover", "volumizing mascara", "red lipstick by Maybelline"])
    calls: list[int] = []
    original = encoder.encode

    def counting(texts: list[str], **kwargs: object) -> torch.Tensor:
        calls.append(len(texts))
        return original(texts, **kwargs)  # type: ignore[arg-type]

    encoder.encode = counting  # type: ignore[method-assign]
    try:
        later, seconds = item_embeddings(grown, encoder, tmp_path)
    finally:
        del encoder.encode
    assert calls == [1] and seconds > 0
    assert torch.equal(later[1], vectors[3]) and torch.equal(later[3], vectors[1])
    fresh = encoder.encode(["volumizing mascara"])[0]
    assert torch.allclose(later[2], fresh, atol=1e-5)


def test_another_token_limit_gets_its_own_cache(encoder: TextEncoder, tmp_path: Path) -> None:
    assert cache_path(encoder, tmp_path) != cache_path(TextEncoder(max_tokens=16), tmp_path)


def test_an_unreadable_cache_is_encoded_afresh(encoder: TextEncoder, tmp_path: Path) -> None:
    cache_path(encoder, tmp_path).write_bytes(b"not a torch file")
    vectors, seconds = item_embeddings(Catalog(["", "argan oil shampoo"]), encoder, tmp_path)
    assert seconds > 0 and vectors.shape == (2, encoder.dim)
