"""Benchmark: item text built from reviews where a shop has no titles (issue 11, item 5).

Real data, small: Amazon Review Data 2018 5-core, All_Beauty (991 users, 85 items, reviews but no
titles) and Gift_Cards (458 users, 148 items, reviews and titles), shipped under data/. Rows are
deduplicated on (user, item, timestamp) as their SOURCE notes advise. The protocol is
bench/ranking.py's: leave-one-out (last event test, the one before validation), every target
ranked against the full catalog with the history excluded, scored by its ``row`` (the same
ml.modeling.evaluate.evaluate); popularity beside our text recommender.

Item text variants (the encoder reads only item text; ID embeddings are on in every row):

* All_Beauty: ``no text`` (every item is ``item <id>``), ``review terms`` (top TF-IDF words of the
  item's training-period reviews), ``review sentences`` (its most representative review
  sentences), ``review terms, rating-weighted`` (words counted by rating / 5).
* Gift_Cards: ``titles`` (title, brand, category, price band), ``titles removed`` (``item <id>``),
  ``titles removed + review terms``, ``titles removed + review sentences``, ``titles + review
  terms`` (the summary appended to every item's catalog text).

Every neural row is trained with ``mode: frozen`` (the text's effect alone) on ``--seeds`` seeds
and reported as mean and standard deviation; one extra row trains the best review variant with
the default ``mode: auto`` (frozen, then a budgeted LoRA phase kept only if it helps) to show
what that costs and gives on real data. Reviews of validation and test events never reach
item text (ml.modeling.review_text.training_reviews).

Writes bench/results/review_text.json (figures, configs, machine and its load average).

    make bench-review-text
    python bench/review_text.py --seeds 1 --epochs 5 --out /tmp/rt.json   # a quick smoke run
    # rerun two rows with more patience and add them to the result:
    python bench/review_text.py --variants "no text,review terms" --patience 15 \
        --label ", patience 15" --merge
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))
RESULTS = PROJECT_DIR / "bench" / "results" / "review_text.json"
DATA = PROJECT_DIR / "data"
SHOWN = ["ndcg@10", "recall@10", "coverage@10", "cold_target/ndcg@10"]
# Small catalogs: the full softmax is cheap; the rest as bench/ranking.py's neural models.
CONFIG: dict[str, Any] = {
    "mode": "frozen",
    "loss": "full",
    "lr": 3e-3,
    "batch_size": 128,
    "dropout": 0.5,
    "layers": 2,
    "heads": 2,
    "hidden": 64,
    "max_len": 50,
    "val_max_cases": None,
    "progress": False,
}


def reviews(name: str) -> Any:
    """Deduplicated review interactions of a shipped 2018 dataset, mart-shaped."""
    import pandas as pd

    raw = pd.read_parquet(DATA / name / "reviews.parquet")
    raw = raw.drop_duplicates(["user_id", "item_id", "timestamp"]).reset_index(drop=True)
    raw["event_ts"] = pd.to_datetime(raw["timestamp"], unit="s")
    return raw


def gift_card_items(titles: bool) -> Any:
    """Gift_Cards' catalog rows for its reviewed items: with titles, or with every field removed."""
    import pandas as pd

    from ml.core.catalog import item_texts

    items = pd.read_parquet(DATA / "amazon_reviews_2018_gift_cards_5core" / "items.parquet")
    items = items[items["in_5core"]].copy()
    if not titles:
        return items[["item_id"]]
    items["categories"] = [" > ".join(dict.fromkeys(c)) if c is not None else None for c in items["category"]]
    items["price"] = pd.to_numeric(items["price"].str.replace(r"[$,]", "", regex=True), errors="coerce")
    items["item_text"] = item_texts(items[["item_id", "title", "brand", "categories", "price"]])
    return items[["item_id", "item_text"]]


def datasets() -> dict[str, dict[str, Any]]:
    """Per dataset, its variants' TrainingData."""
    from ml.modeling.datasets import from_frames

    beauty = reviews("amazon_reviews_2018_all_beauty_5core")
    beauty_items = beauty[["item_id"]].drop_duplicates()
    gift = reviews("amazon_reviews_2018_gift_cards_5core")
    return {
        "All_Beauty": {
            "no text": from_frames(beauty, beauty_items, "all_beauty", review_text="off"),
            "review terms": from_frames(beauty, beauty_items, "all_beauty"),
            "review sentences": from_frames(beauty, beauty_items, "all_beauty", review_summary="sentences"),
            "review terms, rating-weighted": from_frames(
                beauty, beauty_items, "all_beauty", review_rating_weight=True
            ),
        },
        "Gift_Cards": {
            "titles": from_frames(gift, gift_card_items(True), "gift_cards", review_text="off"),
            "titles removed": from_frames(gift, gift_card_items(False), "gift_cards", review_text="off"),
            "titles removed + review terms": from_frames(gift, gift_card_items(False), "gift_cards"),
            "titles removed + review sentences": from_frames(
                gift, gift_card_items(False), "gift_cards", review_summary="sentences"
            ),
            "titles + review terms": from_frames(
                gift, gift_card_items(True), "gift_cards", review_text="always"
            ),
        },
    }


def train_row(data: Any, config: dict[str, Any], seed: int, work: Path) -> dict[str, Any]:
    from bench.ranking import neural_extra, row
    from ml.modeling.config import TrainConfig
    from ml.modeling.fit import train

    out = work / f"{data.source}-{data.texts_hash()}-{config['mode']}-{seed}"
    result = train(data, TrainConfig(**{**config, "seed": seed, "cache_dir": work / "cache"}), out)
    extra = {**neural_extra(result), "mode_ran": result.mode_ran, "phases": result.phases}
    return row(result.model, data, result.train_seconds, extra)


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"seeds": len(runs)}
    for key in [*SHOWN, "train_seconds"]:
        values = [r[key] for r in runs]
        out[key] = round(statistics.fmean(values), 4)
        out[f"{key}_std"] = round(statistics.pstdev(values), 4) if len(values) > 1 else 0.0
    out["runs"] = runs
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3, help="trainings per neural row (mean and std)")
    parser.add_argument("--epochs", type=int, default=40, help="most epochs of each neural model")
    parser.add_argument("--patience", type=int, default=5, help="validations without a better val NDCG@10")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--no-auto", action="store_true", help="skip the mode-auto row")
    parser.add_argument("--work-dir", type=Path, default=None, help="runs and the embedding cache (temp)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    parser.add_argument(
        "--variants",
        default=None,
        help="comma-separated variant names to train (default: all); with --merge, added to --out's rows",
    )
    parser.add_argument(
        "--label", default="", help="suffix of the row names (e.g. ', patience 15' for a rerun)"
    )
    parser.add_argument(
        "--merge", action="store_true", help="add the rows to the existing --out instead of replacing it"
    )
    args = parser.parse_args()
    chosen = set(args.variants.split(",")) if args.variants else None

    logging.basicConfig(level=logging.WARNING)
    from bench.ranking import machine, row
    from ml.modeling.baselines import Popularity

    info = machine(args.threads)
    started = time.perf_counter()
    config = {**CONFIG, "epochs": args.epochs, "patience": args.patience, "num_threads": args.threads}
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-review-text-"))
    results: dict[str, Any] = {}
    for name, variants in datasets().items():
        first = next(iter(variants.values()))
        table: dict[str, Any] = {
            "popularity": row(Popularity().fit(first), first, 0.0),
        }
        print(
            f"\n{name}: {first.num_users} users, {first.num_items - 1} items, {first.num_interactions} events"
        )
        for variant, data in variants.items():
            if chosen is not None and variant not in chosen:
                continue
            runs = [train_row(data, config, seed, work) for seed in range(args.seeds)]
            key = variant + args.label
            table[key] = summarise(runs)
            table[key]["example_text"] = data.item_texts[1]
            table[key]["patience"] = args.patience
            r = table[key]
            print(
                f"  {key:<36} NDCG@10 {r['ndcg@10']:.4f} ± {r['ndcg@10_std']:.4f}  "
                f"cov@10 {r['coverage@10']:.3f}  ({r['train_seconds']:.0f} s a run)",
                flush=True,
            )
        pop = table["popularity"]
        print(f"  {'popularity':<36} NDCG@10 {pop['ndcg@10']:.4f}  cov@10 {pop['coverage@10']:.3f}")
        results[name] = table

    if not args.no_auto and chosen is None:
        data = datasets()["All_Beauty"]["review terms"]
        auto = train_row(data, {**config, "mode": "auto"}, 0, work)
        results["All_Beauty"]["review terms, mode auto (seed 0)"] = auto
        lora = auto["phases"][-1]
        print(
            f"\nAll_Beauty review terms, mode auto: ran {auto['mode_ran']}; LoRA phase "
            f"{lora.get('steps', 0)} steps, {lora.get('seconds', 0):.0f} s, {lora.get('reason', '')}; "
            f"test NDCG@10 {auto['ndcg@10']:.4f}"
        )

    payload = {
        "benchmark": "item text from training-period reviews where a shop has no titles (issue 11, item 5)",
        "data": "real: Amazon Review Data 2018 5-core All_Beauty and Gift_Cards "
        "(Ni, Li, McAuley, EMNLP 2019), "
        "deduplicated on (user, item, timestamp); small and 88-93% five-star: capability figures, "
        "not headline ranking figures",
        "protocol": "leave-one-out, full-catalog ranking, history excluded (bench/ranking.py's row)",
        "config": config,
        "results": results,
        "machine": {**info, "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "wall_seconds": round(time.perf_counter() - started, 1),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if args.merge and args.out.exists():
        # A rerun of some rows joins the earlier result; its own machine and load are kept apart.
        earlier = json.loads(args.out.read_text())
        for name, table in results.items():
            earlier["results"].setdefault(name, {}).update(table)
        earlier.setdefault("reruns", []).append({k: v for k, v in payload.items() if k != "results"})
        payload = earlier
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2, default=float))
    print(f"\nwrote {args.out} in {payload['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
