"""Benchmark: training throughput of the recommender in its three fine-tuning modes.

A fixed number of optimizer steps in each mode on real Amazon Beauty sequences (a subset of users
and the items they touched), after warm-up steps that are not timed:

* frozen: cached item text embeddings, only the recommender learns;
* lora:   LoRA adapters on the encoder's query/value, the batch's item texts re-encoded per step;
* full:   every encoder weight trainable.

Reports sequences/s, target positions/s and encoder tokens/s; on CUDA also the model FLOP
utilisation (MFU) against the GPU's dense bf16 peak, with training FLOPs counted as
6 x parameters x tokens (encoder) + 6 x parameters x positions (recommender). For LoRA this
counts the frozen weights' gradient FLOPs too (the usual convention), so it overstates the work
actually done by about a third.

Writes bench/results/train_throughput.json.

    make bench-train_throughput
    python bench/train_throughput.py --modes frozen lora --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parents[1]
RESULTS = PROJECT_DIR / "bench" / "results" / "train_throughput.json"
MODES = ("frozen", "lora", "full")
# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, from the vendors' data sheets.
BF16_PEAK = {
    "H100 SXM": 989e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10": 125e12,
}
# Steps per mode (timed, after warm-up): the CPU cannot afford many encoder steps.
CPU_STEPS = {"frozen": 40, "lora": 6, "full": 4}
CUDA_STEPS = {"frozen": 200, "lora": 60, "full": 60}


def gpu_peak(name: str) -> float | None:
    """The dense bf16 peak of a GPU by its marketing name (None when unknown)."""
    for key, peak in BF16_PEAK.items():
        if key in name:
            return peak
    return None


def run_mode(
    mode: str, data: Any, embeddings: Any, steps: int, threads: int | None, args: argparse.Namespace
) -> dict[str, Any]:
    """Time ``steps`` optimizer steps of one mode (after ``args.warmup`` untimed ones)."""
    import torch

    from ml.modeling.config import TrainConfig
    from ml.modeling.fit import Trainer

    cuda = torch.cuda.is_available() and args.device != "cpu"
    config = TrainConfig(
        mode=mode,  # type: ignore[arg-type]
        batch_size=args.batch_size,
        encoder_items_per_step=args.encoder_items if not cuda else args.encoder_items_cuda,
        num_threads=threads,
        device="cuda" if cuda else "cpu",
        loss="sampled",
        progress=False,
    )
    trainer = Trainer(data, config, text_embeddings=embeddings)
    batches = list(trainer.batches())
    warmup = args.warmup
    needed = warmup + steps
    batches = (batches * (needed // max(len(batches), 1) + 1))[:needed]
    for batch in batches[:warmup]:
        trainer.step(batch)
    if cuda:
        torch.cuda.synchronize()
    sequences = positions = tokens = 0
    start = time.perf_counter()
    for batch in batches[warmup:]:
        stats = trainer.step(batch)
        sequences += stats.sequences
        positions += stats.positions
        tokens += stats.encoder_tokens
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start

    rec_params = sum(p.numel() for p in trainer.model.parameters())
    enc_params = sum(p.numel() for p in trainer.encoder.parameters()) if trainer.encoder is not None else 0
    trainable = sum(p.numel() for g in trainer.optimizer.param_groups for p in g["params"] if p.requires_grad)
    flops = 6.0 * rec_params * positions + (6.0 * enc_params * tokens if mode != "frozen" else 0.0)
    row: dict[str, Any] = {
        "mode": mode,
        "threads": torch.get_num_threads() if not cuda else None,
        "steps": steps,
        "batch_sequences": args.batch_size,
        "encoder_items_per_step": config.encoder_items_per_step if mode != "frozen" else 0,
        "seconds": round(seconds, 2),
        "seconds_per_step": round(seconds / steps, 3),
        "sequences_per_s": round(sequences / seconds, 1),
        "positions_per_s": round(positions / seconds, 1),
        "encoder_tokens_per_s": round(tokens / seconds, 1),
        "trainable_params": trainable,
        "encoder_params": enc_params,
        "recommender_params": rec_params,
        "model_tflop_per_s": round(flops / seconds / 1e12, 4),
    }
    if cuda:
        name = torch.cuda.get_device_name(0)
        peak = gpu_peak(name)
        row["gpu"] = name
        row["bf16_peak_tflop_per_s"] = peak / 1e12 if peak else None
        row["mfu"] = round(flops / seconds / peak, 4) if peak else None
        row["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--steps", type=int, default=None, help="timed steps per mode (default: per device)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--users", type=int, default=300, help="users whose sequences (and items) are used")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per step")
    parser.add_argument("--encoder-items", type=int, default=32, help="items re-encoded per step on CPU")
    parser.add_argument(
        "--encoder-items-cuda", type=int, default=512, help="items re-encoded per step on CUDA"
    )
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=None,
        help="CPU thread counts to compare (default: 1 and min(2, cores); one shared core is often faster)",
    )
    parser.add_argument("--device", choices=["auto", "cpu"], default="auto")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import torch

    from ml.core.settings import get_settings
    from ml.modeling.datasets import from_frames, shipped_frames
    from ml.modeling.embeddings import item_embeddings
    from ml.modeling.model import TextEncoder

    settings = get_settings()
    examples, items = shipped_frames(settings.data_dir)
    users = examples["user_id"].drop_duplicates().sample(n=args.users, random_state=0)
    examples = examples[examples["user_id"].isin(users)]
    items = items[items["item_id"].isin(examples["item_id"])]
    data = from_frames(examples, items, source="beauty")
    cuda = torch.cuda.is_available() and args.device != "cpu"
    print(
        f"{data.num_users} users, {data.num_items - 1} items; device {'cuda' if cuda else 'cpu'}", flush=True
    )
    encoder = TextEncoder()
    embeddings, _ = item_embeddings(data, encoder, settings.work_dir / "bench" / "embedding_cache")

    thread_counts: list[int | None] = [None]
    if not cuda:
        thread_counts = list(args.threads or sorted({1, min(2, os.cpu_count() or 1)}))
    rows = []
    for threads in thread_counts:
        for mode in args.modes:
            steps = args.steps or (CUDA_STEPS if cuda else CPU_STEPS)[mode]
            print(f"{mode}: {steps} steps{f' on {threads} thread(s)' if threads else ''} …", flush=True)
            rows.append(run_mode(mode, data, embeddings, steps, threads, args))

    cols = [
        "seconds_per_step",
        "sequences_per_s",
        "positions_per_s",
        "encoder_tokens_per_s",
        "trainable_params",
    ]
    print(
        f"\n{'mode':<8}{'threads':>8}" + "".join(f"{c:>22}" for c in cols) + (f"{'mfu':>8}" if cuda else "")
    )
    for row in rows:
        line = f"{row['mode']:<8}{row['threads'] or '-':>8}" + "".join(f"{row[c]:>22,}" for c in cols)
        if cuda:
            line += f"{row['mfu'] if row['mfu'] is not None else 'n/a':>8}"
        print(line)

    result = {
        "benchmark": "train_throughput",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": f"Amazon Beauty 5-core, {data.num_users} users, {data.num_items - 1} items",
        "encoder": encoder.path,
        "machine": {
            "cpus": os.cpu_count(),
            "device": torch.cuda.get_device_name(0) if cuda else "cpu",
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
        "flops_convention": "6 x params x tokens (encoder) + 6 x params x positions (recommender)",
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
