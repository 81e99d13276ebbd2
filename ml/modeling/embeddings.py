"""The frozen encoder's item vectors, cached on disk per item text, so only new texts are encoded.

Encoding the catalog is most of a CPU training run (the demo's 11k Beauty items: ~320 s of its
~340 s on 2 cores). A later month adds a few hundred items; a cache keyed by the whole catalog
would encode all of them again, a cache keyed by each text encodes only the new ones.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ml.modeling.datasets import PAD, TrainingData
from ml.modeling.model import TextEncoder

log = logging.getLogger(__name__)


def cache_path(encoder: TextEncoder, cache_dir: Path) -> Path:
    """The cache file of one encoder's text vectors (see :func:`item_embeddings`).

    The key covers the encoder (name and resolved path) and its token limit: another encoder or
    limit gives other vectors, so it gets another file.
    """
    key_src = f"{encoder.name}|{encoder.path}|{encoder.max_tokens}"
    key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
    return cache_dir / f"texts-{key}.pt"


def text_keys(texts: Sequence[str]) -> torch.Tensor:
    """A 63-bit key per text (the first bytes of its sha256): what a cached vector is found by."""
    keys = [int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "big") >> 1 for t in texts]
    return torch.tensor(keys, dtype=torch.int64)


def _read(path: Path, dim: int) -> dict[int, torch.Tensor]:
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        return {}
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        log.warning("item vector cache %s unreadable (%s): encoding afresh", path, error)
        return {}
    if not isinstance(stored, dict) or not {"keys", "vectors"} <= stored.keys():
        return {}
    keys, vectors = stored["keys"], stored["vectors"]
    if vectors.ndim != 2 or vectors.shape[1] != dim or len(keys) != len(vectors):
        return {}
    return dict(zip(keys.tolist(), vectors, strict=True))


def _write(path: Path, known: dict[int, torch.Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = torch.tensor(list(known), dtype=torch.int64)
    vectors = torch.stack(list(known.values()))
    # A name of this process's own, then an atomic rename: parallel runs may encode at once, and
    # a killed one leaves the previous file whole.
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save({"keys": keys, "vectors": vectors}, tmp)
    tmp.replace(path)


def item_embeddings(
    data: TrainingData, encoder: TextEncoder, cache_dir: Path | None, progress: bool = False
) -> tuple[torch.Tensor, float]:
    """Pooled encoder output of every item text; texts seen before come from the disk cache.

    Returns:
        The embeddings (``num_items x dim``, the padding row zero) and the seconds spent encoding
        the texts the cache did not hold (0 when it held them all).
    """
    texts = list(data.item_texts)
    if cache_dir is None:
        start = time.perf_counter()
        emb = encoder.encode(texts, progress=progress)
        emb[PAD] = 0.0
        return emb, time.perf_counter() - start
    path = cache_path(encoder, cache_dir)
    known = _read(path, encoder.dim)
    keys = text_keys(texts).tolist()
    missing = sorted({i for i, key in enumerate(keys) if key not in known and i != PAD})
    seconds = 0.0
    if missing:
        start = time.perf_counter()
        fresh = encoder.encode([texts[i] for i in missing], progress=progress)
        seconds = time.perf_counter() - start
        known.update({keys[i]: vector for i, vector in zip(missing, fresh, strict=True)})
        _write(path, known)
    emb = torch.zeros(len(texts), encoder.dim)
    for i, key in enumerate(keys):
        if i != PAD:
            emb[i] = known[key]
    return emb, seconds
