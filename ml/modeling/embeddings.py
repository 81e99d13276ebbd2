"""The frozen encoder's item vectors, computed once per catalog and encoder and cached on disk."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import torch

from ml.modeling.datasets import PAD, TrainingData
from ml.modeling.model import TextEncoder


def cache_path(data: TrainingData, encoder: TextEncoder, cache_dir: Path) -> Path:
    """The cache file of a catalog's vectors under an encoder (see :func:`item_embeddings`)."""
    key_src = f"{encoder.name}|{encoder.path}|{encoder.max_tokens}|{data.texts_hash()}"
    key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
    return cache_dir / f"items-{key}.pt"


def item_embeddings(
    data: TrainingData, encoder: TextEncoder, cache_dir: Path | None, progress: bool = False
) -> tuple[torch.Tensor, float]:
    """Pooled encoder output of every item text, from the disk cache when present.

    The cache key covers the encoder (name and resolved path), the token limit and a hash of the
    vocabulary and texts: a changed title or catalog computes afresh.

    Returns:
        The embeddings (``num_items x dim``) and the seconds spent encoding (0 on a hit).
    """
    path = cache_path(data, encoder, cache_dir) if cache_dir is not None else None
    if path is not None and path.exists():
        cached = torch.load(path, map_location="cpu", weights_only=True)
        if tuple(cached.shape) == (data.num_items, encoder.dim):
            return cached, 0.0
    start = time.perf_counter()
    emb = encoder.encode(data.item_texts, progress=progress)
    emb[PAD] = 0.0
    seconds = time.perf_counter() - start
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A name of this process's own: parallel runs may encode the same catalog at once.
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(emb, tmp)
        tmp.replace(path)
    return emb, seconds
