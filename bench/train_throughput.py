"""Benchmark: training throughput of the recommender in its three fine-tuning modes.

A fixed number of optimizer steps in each mode on real Amazon Beauty sequences (a subset of users
and the items they touched), after warm-up steps that are not timed:

* frozen: cached item text embeddings, only the recommender learns;
* lora:   LoRA adapters on the encoder's query/value, the batch's item texts re-encoded per step;
* full:   every encoder weight trainable.

Reports sequences/s, target positions/s and encoder tokens/s; on CUDA also the model FLOP
utilisation (MFU). Training FLOPs count matmuls only: 6 x non-embedding parameters x tokens, plus
attention's 12 x layers x width x sequence length per token, for the encoder (tokens) and the
recommender (positions). MFU is given against the GPU's bf16 dense peak measured in the same run
(a large bf16 matmul) and against the data sheet's. For LoRA this counts the frozen weights'
gradient FLOPs too (the usual convention), so it overstates the work done by about a third.

On CUDA the full fine-tune is also run at larger batches (``--cuda-batches``: sequences and
encoder items per step) and, with ``--compile``, with the encoder under ``torch.compile``.

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


def non_embedding_params(module: Any) -> int:
    """Parameters outside embedding tables (lookups, not matmuls)."""
    import torch

    tables = {id(m.weight) for m in module.modules() if isinstance(m, torch.nn.Embedding)}
    return sum(p.numel() for p in module.parameters() if id(p) not in tables)


def matmul_flops(params: int, tokens: int, layers: int, width: int, length: float) -> float:
    """Training FLOPs of a transformer: 6 N per token, plus attention's 12 L d s per token."""
    return 6.0 * params * tokens + 12.0 * layers * width * length * tokens


def measured_bf16_peak() -> float:
    """FLOP/s of a large bf16 matmul on this GPU: the peak MFU is measured against."""
    import torch

    n = 8192
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, reps = time.perf_counter(), 50
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2.0 * n**3 * reps / (time.perf_counter() - start)


def gpu_peak(name: str) -> float | None:
    """The dense bf16 peak of a GPU by its marketing name (None when unknown)."""
    for key, peak in BF16_PEAK.items():
        if key in name:
            return peak
    return None


def run_mode(
    mode: str,
    data: Any,
    embeddings: Any,
    steps: int,
    threads: int | None,
    args: argparse.Namespace,
    shape: tuple[int, int] | None = None,
    compiled: bool = False,
    peak: float | None = None,
    *,
    text_tokens: float,
) -> dict[str, Any]:
    """Time ``steps`` optimizer steps of one mode (after ``args.warmup`` untimed ones); ``shape``
    is (sequences, encoder items) per step, else the defaults for the device; ``text_tokens`` is
    the catalog's mean text length, the length that attention's FLOPs grow with."""
    import torch

    from ml.modeling.config import TrainConfig
    from ml.modeling.fit import Trainer

    cuda = torch.cuda.is_available() and args.device != "cpu"
    sequences_per_step, items_per_step = shape or (
        args.batch_size,
        args.encoder_items if not cuda else args.encoder_items_cuda,
    )
    config = TrainConfig(
        mode=mode,  # type: ignore[arg-type]
        encoder=args.encoder,  # type: ignore[call-arg]  # a model field, routed by TrainConfig
        batch_size=sequences_per_step,
        encoder_items_per_step=items_per_step,
        num_threads=threads,
        device="cuda" if cuda else "cpu",
        loss="sampled",
        progress=False,
    )
    trainer = Trainer(data, config, text_embeddings=embeddings)
    if compiled and trainer.encoder is not None:
        # Texts are padded to each batch's longest, so the shapes vary: compile for dynamic shapes.
        trainer.encoder.model.compile(dynamic=True)
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

    model_config = trainer.config.model
    rec_params = non_embedding_params(trainer.model)
    rec_flops = matmul_flops(
        rec_params, positions, model_config.layers, model_config.hidden, model_config.max_len
    )
    enc_params, enc_flops = 0, 0.0
    if trainer.encoder is not None and mode != "frozen":
        enc = trainer.encoder.model.config
        enc_params = non_embedding_params(trainer.encoder.model)
        enc_flops = matmul_flops(enc_params, tokens, enc.num_hidden_layers, enc.hidden_size, text_tokens)
    flops = rec_flops + enc_flops
    trainable = sum(p.numel() for g in trainer.optimizer.param_groups for p in g["params"] if p.requires_grad)
    row: dict[str, Any] = {
        "mode": mode + (" + torch.compile" if compiled else ""),
        "threads": torch.get_num_threads() if not cuda else None,
        "steps": steps,
        "batch_sequences": sequences_per_step,
        "encoder_items_per_step": items_per_step if mode != "frozen" else 0,
        "seconds": round(seconds, 2),
        "seconds_per_step": round(seconds / steps, 3),
        "sequences_per_s": round(sequences / seconds, 1),
        "positions_per_s": round(positions / seconds, 1),
        "encoder_tokens_per_s": round(tokens / seconds, 1),
        "trainable_params": trainable,
        "encoder_non_embedding_params": enc_params,
        "recommender_non_embedding_params": rec_params,
        "model_tflop_per_s": round(flops / seconds / 1e12, 4),
        "encoder_tflop_per_s": round(enc_flops / seconds / 1e12, 4),
    }
    if cuda:
        name = torch.cuda.get_device_name(0)
        sheet = gpu_peak(name)
        row["gpu"] = name
        row["mfu"] = round(flops / seconds / peak, 4) if peak else None
        row["mfu_data_sheet"] = round(flops / seconds / sheet, 4) if sheet else None
        row["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--steps", type=int, default=None, help="timed steps per mode (default: per device)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument(
        "--users",
        type=int,
        default=300,
        help="users whose sequences (and items) are used; 0: all (the CUDA sweep's large batches need "
        "the whole catalog: 300 users reach only ~2,100 items, which capped earlier sweep rows)",
    )
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
    parser.add_argument(
        "--cuda-batches",
        nargs="*",
        default=["256x1024", "2048x8192", "4096x12101"],
        help="on CUDA, the full fine-tune again at these SEQUENCESxITEMS per step (the MFU sweep)",
    )
    parser.add_argument("--compile", action="store_true", help="on CUDA, also each sweep row compiled")
    parser.add_argument(
        "--encoder",
        default="default",
        help="'default' (the packaged MiniLM) or a folder of Hugging Face files (bench/gpu.py's fp16 copy)",
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
    if args.users:
        users = examples["user_id"].drop_duplicates().sample(n=args.users, random_state=0)
        examples = examples[examples["user_id"].isin(users)]
    items = items[items["item_id"].isin(examples["item_id"])]
    data = from_frames(examples, items, source="beauty")
    cuda = torch.cuda.is_available() and args.device != "cpu"
    print(
        f"{data.num_users} users, {data.num_items - 1} items; device {'cuda' if cuda else 'cpu'}", flush=True
    )
    encoder = TextEncoder(args.encoder)
    embeddings, _ = item_embeddings(data, encoder, settings.work_dir / "bench" / "embedding_cache")

    # Attention's cost grows with each text's length: the mean of the catalog's, as trained on.
    lengths = encoder.tokenizer(list(data.item_texts), truncation=True, max_length=encoder.max_tokens)
    mean_text_tokens = sum(len(ids) for ids in lengths["input_ids"]) / max(len(lengths["input_ids"]), 1)
    peak = measured_bf16_peak() if cuda else None
    sheet = gpu_peak(torch.cuda.get_device_name(0)) if cuda else None
    if peak:
        print(f"measured bf16 dense peak: {peak / 1e12:.0f} TFLOP/s", flush=True)

    rows: list[dict] = []
    result: dict[str, Any] = {
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
        "flops_convention": "matmuls only: 6 x non-embedding params x tokens + 12 x layers x width x "
        "length x tokens (attention), for the encoder (its tokens, length: the catalog's mean text) "
        "and the recommender (its positions, length: max_len); the sampled softmax's logits are "
        "not counted",
        "mean_text_tokens": round(mean_text_tokens, 1),
        "bf16_peak_tflop_per_s": {
            "measured": round(peak / 1e12, 1) if peak else None,
            "data_sheet": (sheet or 0) / 1e12 or None,
        },
        "results": rows,
    }

    def save() -> None:
        """Write what has run so far: a row cut short by the GPU machine's time limit loses only itself."""
        result["machine"]["load_average"] = [round(x, 2) for x in os.getloadavg()]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    thread_counts: list[int | None] = [None]
    if not cuda:
        thread_counts = list(args.threads or sorted({1, min(2, os.cpu_count() or 1)}))
    for threads in thread_counts:
        for mode in args.modes:
            steps = args.steps or (CUDA_STEPS if cuda else CPU_STEPS)[mode]
            print(f"{mode}: {steps} steps{f' on {threads} thread(s)' if threads else ''} …", flush=True)
            rows.append(
                run_mode(
                    mode, data, embeddings, steps, threads, args, peak=peak, text_tokens=mean_text_tokens
                )
            )
            save()
    if cuda and "full" in args.modes:
        steps = args.steps or CUDA_STEPS["full"]
        for spec in args.cuda_batches:
            sequences, items = (int(x) for x in spec.split("x"))
            for compiled in (False, True) if args.compile else (False,):
                print(
                    f"full at {sequences} sequences x {items} items{' compiled' if compiled else ''}",
                    flush=True,
                )
                try:
                    rows.append(
                        run_mode(
                            "full",
                            data,
                            embeddings,
                            steps,
                            None,
                            args,
                            (sequences, items),
                            compiled,
                            peak,
                            text_tokens=mean_text_tokens,
                        )
                    )
                except (RuntimeError, torch.OutOfMemoryError) as error:  # a size that does not fit
                    rows.append(
                        {"mode": "full", "batch": spec, "compiled": compiled, "error": str(error)[:300]}
                    )
                save()
                torch.cuda.empty_cache()

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
        if "error" in row:
            print(f"{row['mode']:<8} {row['batch']}: {row['error'][:100]}")
            continue
        line = f"{row['mode']:<8}{row['threads'] or '-':>8}" + "".join(f"{row[c]:>22,}" for c in cols)
        if cuda:
            line += f"{row['mfu'] if row['mfu'] is not None else 'n/a':>8}"
        print(line)

    save()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
