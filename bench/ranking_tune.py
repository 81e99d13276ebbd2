"""One validation tuning run of the ranking benchmark's models (issue 11), kept for the record.

Trains one model on bench/ranking.py's split (Amazon Beauty 5-core, leave-one-out, ties in file
order unless ``--ties shuffled``) with the benchmark's settings overridden by ``--set`` (JSON,
TrainConfig fields, architecture fields flat), early-stopped on VALIDATION NDCG@10 (3,000 fixed
validation users). Prints the validation curve; ``--test`` then scores the kept weights on the
test targets once, as the benchmark does. Appends the run (config, curve, seconds, test figures
if asked, machine load) to bench/results/ranking_tuning.json under ``--name``.

Settings are chosen on the validation curve, never on test: the test figure is recorded so that a
later benchmark run is not a surprise, not to pick a setting.

``--refit-of RUN`` trains RUN's settings again for RUN's best (validation-chosen) epoch count on
every event before the test target - the validation events become training targets, as the test
histories already hold them - and scores the final weights on test once. There is nothing left to
validate on, so its validation figure is RUN's.

    python bench/ranking_tune.py sas_full_h128 --set '{"use_text": false, "loss": "full", "hidden": 128}'
    python bench/ranking_tune.py sas_full_h256_refit --refit-of sas_full_h256
    python bench/ranking_tune.py --list          # the runs recorded so far
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))
RESULTS = PROJECT_DIR / "bench" / "results" / "ranking_tuning.json"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("name", nargs="?", help="name of the run (its folder and its key in the results)")
    parser.add_argument("--set", default="{}", help="JSON overrides of bench/ranking.py's NEURAL settings")
    parser.add_argument("--ties", choices=("file", "shuffled"), default="file", help="tie order of the split")
    parser.add_argument("--epochs", type=int, default=200, help="most epochs")
    parser.add_argument("--patience", type=int, default=10, help="validations without a better NDCG@10")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--test", action="store_true", help="score the kept weights on test once")
    parser.add_argument(
        "--refit-of",
        default=None,
        help="a recorded run: train its settings for its best epoch count with the validation "
        "events as training targets, then score on test (implies --test)",
    )
    parser.add_argument("--work-dir", type=Path, default=None, help="runs (checkpoints resume)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the runs are recorded")
    parser.add_argument("--list", action="store_true", help="print the recorded runs and exit")
    args = parser.parse_args()

    record: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {"runs": {}}
    if args.list or not args.name:
        for name, recorded in record["runs"].items():
            test = recorded.get("test") or {}
            print(
                f"{name:<24} val NDCG@10 {recorded['val_ndcg@10']:.4f} (epoch {recorded['best_epoch']})  "
                f"test {test.get('ndcg@10', float('nan')):.4f}  {json.dumps(recorded['overrides'])}"
            )
        return 0

    import logging

    import torch

    from bench.ranking import NEURAL, load
    from ml.core.settings import get_settings
    from ml.modeling.config import TrainConfig
    from ml.modeling.evaluate import evaluate
    from ml.modeling.fit import train

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [{args.name}] %(message)s")
    overrides = json.loads(args.set)
    schedule: dict[str, Any] = {"epochs": args.epochs, "patience": args.patience}
    chosen: dict[str, Any] | None = None
    if args.refit_of:
        if args.refit_of not in record["runs"]:
            parser.error(f"--refit-of {args.refit_of!r}: no such run in {args.out} (see --list)")
        chosen = record["runs"][args.refit_of]
        overrides = {**chosen["overrides"], **overrides}
        args.ties = chosen["ties"]
        # Validated once, after the last epoch, on an empty validation set: the last weights stay.
        epochs = int(chosen["best_epoch"])
        schedule = {"epochs": epochs, "patience": epochs + 1, "eval_every": epochs}
    config = TrainConfig(
        **{
            **NEURAL,
            **schedule,
            "num_threads": args.threads,
            "progress": False,
            "val_max_cases": 3000,
            **overrides,
        }
    )
    work = args.work_dir or get_settings().work_dir / "bench" / "ranking_tune"
    load_start = [round(x, 2) for x in os.getloadavg()]
    data = load(args.ties, None)
    started = time.perf_counter()
    result = train(data.validation_trained() if chosen else data, config, work / args.name)
    run: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "ties": args.ties,
        "overrides": overrides,
        "config": config.model_dump(mode="json", exclude={"cache_dir"}),
        "best_epoch": result.best_epoch,
        "val_ndcg@10": round(result.best_metric, 4),
        "val_curve": [round(h.get("val_ndcg@10", float("nan")), 4) for h in result.history],
        "stop_reason": result.stop_reason,
        "train_seconds": round(time.perf_counter() - started, 1),
        "load_average": {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]},
    }
    if chosen is not None:
        run.update(
            {
                "refit_of": args.refit_of,
                "val_ndcg@10": chosen["val_ndcg@10"],
                "val_curve": [],
                "note": "trained on train + validation targets for the epochs validation chose",
            }
        )
    if args.test or chosen is not None:
        metrics = evaluate(result.model, data, "test")
        run["test"] = {k: round(metrics[k], 4) for k in ("ndcg@10", "recall@10", "ndcg@20", "recall@20")}
    record["runs"][args.name] = run
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({args.name: {k: run[k] for k in ("best_epoch", "val_ndcg@10", "test") if k in run}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
