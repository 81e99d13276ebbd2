"""What `make bench-gpu` relies on that this CPU machine can check: the carried fp16 encoder and
the FLOP count MFU is figured from."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from ml.modeling.model import TextEncoder, resolve_encoder

BENCH = Path(__file__).resolve().parents[2] / "bench"


def bench_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_fp16_copy_is_half_the_bytes_and_encodes_as_the_original(tmp_path: Path) -> None:
    source = Path(resolve_encoder("default"))
    bench_module("gpu").half_encoder(source, tmp_path / "encoder")
    size = (tmp_path / "encoder" / "model.safetensors").stat().st_size
    assert size < 0.55 * (source / "model.safetensors").stat().st_size

    carried, original = TextEncoder(str(tmp_path / "encoder")), TextEncoder()
    assert {p.dtype for p in carried.parameters()} == {torch.float32}  # trained in full precision
    texts = ["Maybelline Lash Stylist Mascara", "OPI Nail Envy strengthener", "a travel hair dryer"]
    with torch.no_grad():
        a, b = carried.encode(texts), original.encode(texts)
    cosine = torch.nn.functional.cosine_similarity(a, b)
    assert cosine.min().item() > 0.999, cosine


def test_flops_count_matmuls_not_embedding_lookups() -> None:
    throughput = bench_module("train_throughput")
    model = nn.Sequential(nn.Embedding(1000, 8), nn.Linear(8, 4))
    assert throughput.non_embedding_params(model) == 8 * 4 + 4
    # 6 N per token, plus attention's 12 L d s per token
    assert throughput.matmul_flops(36, 10, 2, 8, 5.0) == 6 * 36 * 10 + 12 * 2 * 8 * 5.0 * 10
