"""Benchmark: next-item ranking on Amazon Beauty (5-core), leave-one-out, full catalog.

The protocol of the published Beauty tables (S3-Rec and later): histories ordered by (timestamp,
seq_pos), the last item of each of the 22,363 users is the test target and the one before the
validation target; every target is ranked against all 12,101 items with the user's history
excluded. Popularity, item-kNN, SASRec (ID-only) and ShopFlow's text recommender are trained on
the same training prefixes and scored by the same ml.modeling.evaluate.evaluate, side by side, with their
training wall time. Frames are built straight from the shipped Parquet (no pipeline run needed).

Prints a table and writes bench/results/ranking.json (figures, configs, machine, date).

    make bench-ranking
    python bench/ranking.py --epochs 10 --threads 1
    python bench/ranking.py --users 2000 --epochs 2     # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parents[1]
RESULTS = PROJECT_DIR / "bench" / "results" / "ranking.json"
KEYS = ["recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr"]
# A public SASRec reproduction on this split and protocol (full ranking, leave-one-out), for
# orientation only: training budgets and tuning differ. https://phonism.github.io/genrec/en/models/sasrec
PUBLISHED = {
    "SASRec (genrec reproduction)": {
        "recall@5": 0.0469,
        "recall@10": 0.0688,
        "ndcg@5": 0.0305,
        "ndcg@10": 0.0375,
    },
}


def machine(threads: int) -> dict[str, Any]:
    import torch

    return {
        "cpus": os.cpu_count(),
        "torch_threads": threads,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=20, help="most epochs of each neural model")
    parser.add_argument(
        "--patience", type=int, default=3, help="validations without improvement before stopping"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="torch CPU threads (default min(2, cores); on a 2-core box busy with other work, 1 is faster)",
    )
    parser.add_argument("--users", type=int, default=None, help="random subset of users (smoke runs)")
    parser.add_argument("--work-dir", type=Path, default=None, help="runs and the embedding cache")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    parser.add_argument("--no-check", action="store_true", help="exit 0 even if ours does not beat SASRec")
    args = parser.parse_args()

    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from ml.core.settings import get_settings
    from ml.modeling.baselines import Popularity, train_sasrec, tune_item_knn
    from ml.modeling.config import TrainConfig
    from ml.modeling.datasets import from_frames, shipped_frames
    from ml.modeling.evaluate import evaluate
    from ml.modeling.fit import train

    settings = get_settings()
    work = args.work_dir or settings.work_dir / "bench" / "ranking"
    info = machine(args.threads)
    torch.set_num_threads(args.threads)

    mark = time.perf_counter()
    data = from_frames(*shipped_frames(settings.data_dir), source="beauty")
    if args.users:
        data = data.subset_users(args.users)
    load_seconds = time.perf_counter() - mark
    print(
        f"Amazon Beauty 5-core: {data.num_users:,} users, {data.num_items - 1:,} items, "
        f"{data.num_interactions:,} interactions (loaded in {load_seconds:.1f}s)",
        flush=True,
    )

    common = {
        "epochs": args.epochs,
        "patience": args.patience,
        "num_threads": args.threads,
        "cache_dir": work / "embedding_cache",
        "resume": False,
        "val_max_cases": 5000,
        "lr": 3e-3,
        "batch_size": 128,
        "dropout": 0.5,
    }
    sasrec_config = TrainConfig(**common, use_text=False)
    ours_config = TrainConfig(**common, mode="frozen")

    rows: dict[str, dict[str, Any]] = {}

    def record(name: str, model: Any, seconds: float, extra: dict[str, Any] | None = None) -> None:
        mark = time.perf_counter()
        metrics = evaluate(model, data, "test")
        rows[name] = {
            **{k: metrics[k] for k in KEYS},
            "coverage@10": metrics["coverage@10"],
            "cold_target/ndcg@10": metrics["cold_target/ndcg@10"],
            "rare_target/ndcg@10": metrics["rare_target/ndcg@10"],
            "short_history/ndcg@10": metrics["short_history/ndcg@10"],
            "train_seconds": round(seconds, 1),
            "eval_seconds": round(time.perf_counter() - mark, 1),
            **(extra or {}),
        }
        print(
            f"{name:<22} NDCG@10 {metrics['ndcg@10']:.4f}  R@10 {metrics['recall@10']:.4f}  ({seconds:.0f}s)",
            flush=True,
        )

    mark = time.perf_counter()
    record("Popularity", Popularity().fit(data), time.perf_counter() - mark)

    mark = time.perf_counter()
    knn, knn_val = tune_item_knn(data)
    record("Item-kNN", knn, time.perf_counter() - mark, {"recency": knn.recency, "val_ndcg@10": knn_val})

    sas = train_sasrec(data, sasrec_config, work / "sasrec")
    record(
        "SASRec (ID-only)",
        sas.model,
        sas.train_seconds,
        {"best_epoch": sas.best_epoch, "epochs_run": len(sas.history), "val_ndcg@10": sas.best_metric},
    )

    ours = train(data, ours_config, work / "shopflow")
    record(
        "ShopFlow (text+ID)",
        ours.model,
        ours.train_seconds,
        {
            "best_epoch": ours.best_epoch,
            "epochs_run": len(ours.history),
            "val_ndcg@10": ours.best_metric,
            "embedding_seconds": round(ours.embedding_seconds, 1),
            "embedding_cache_hit": ours.embedding_seconds == 0.0,
        },
    )

    header = f"\n{'model':<22}" + "".join(f"{k:>11}" for k in KEYS) + f"{'train s':>10}"
    print(header)
    print("-" * (len(header) - 1))
    for name, row in rows.items():
        print(f"{name:<22}" + "".join(f"{row[k]:>11.4f}" for k in KEYS) + f"{row['train_seconds']:>10.0f}")
    beats = rows["ShopFlow (text+ID)"]["ndcg@10"] > rows["SASRec (ID-only)"]["ndcg@10"]
    print(f"\nShopFlow beats SASRec on NDCG@10: {beats}")

    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result = {
        "benchmark": "ranking",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": "Amazon Reviews 2014 Beauty 5-core",
        "protocol": "leave-one-out (last item test, second-last validation), ranked against the full "
        "catalog with the user's history excluded; histories ordered by (timestamp, seq_pos)",
        "users": data.num_users,
        "items": data.num_items - 1,
        "interactions": data.num_interactions,
        "machine": info,
        "configs": {
            "sasrec": sasrec_config.model_dump(mode="json"),
            "shopflow": ours_config.model_dump(mode="json"),
        },
        "results": rows,
        "shopflow_beats_sasrec_ndcg@10": beats,
        "published_reference": PUBLISHED,
        "total_seconds": round(
            sum(r["train_seconds"] + r["eval_seconds"] for r in rows.values()) + load_seconds, 1
        ),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if beats or args.no_check else 1


if __name__ == "__main__":
    sys.exit(main())
