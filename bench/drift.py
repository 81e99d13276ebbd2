"""Benchmark: data drift over the whole Online Retail II (1,044,847 real invoice lines).

``make bench-drift`` → ``bench/results/drift.json``. The current window is every line of the
dataset, the reference its first year (2009-12 to 2010-11): the drift ShopFlow's monitoring
computes (``ml.monitoring.run.drift_report``: both sides sampled to ``SHOPFLOW_DRIFT_SAMPLE_ROWS``,
200,000 by default), side by side with the baseline of handing Evidently all rows unsampled.
Each variant runs in a fresh process so its peak memory is its own; both report the per-column
distances, so the cost of sampling in accuracy is printed next to its gain in time.

Columns (what monitoring watches on a retail source): unit price, quantity, lines per invoice
(basket size), description length, country, and whether the line is a cancellation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / "data" / "uci_online_retail_ii" / "online_retail_ii.parquet"
RESULTS = ROOT / "bench" / "results" / "drift.json"
NUMERICAL = ["price", "quantity", "basket_lines", "description_length"]
CATEGORICAL = ["country", "cancellation"]
REFERENCE_END = "2010-12-01"


def features() -> tuple[Any, Any]:
    """(current, reference) feature frames: all lines, and the first year's lines."""
    import pandas as pd

    lines = pd.read_parquet(DATA)
    frame = pd.DataFrame(
        {
            "price": lines["Price"].astype(float),
            "quantity": lines["Quantity"].astype(float),
            "basket_lines": lines.groupby("Invoice")["StockCode"].transform("size").astype(float),
            "description_length": lines["Description"].fillna("").str.len().astype(float),
            "country": lines["Country"].fillna("unknown").astype(str),
            "cancellation": lines["Invoice"].astype(str).str.startswith("C").map({True: "yes", False: "no"}),
        }
    )
    return frame, frame[lines["InvoiceDate"] < pd.Timestamp(REFERENCE_END)].reset_index(drop=True)


def run_variant(variant: str) -> dict[str, Any]:
    """One measured run (in this process): load + features, then the Evidently drift report."""
    from ml.core.settings import Settings
    from ml.monitoring.drift import drift_report

    started = time.perf_counter()
    current, reference = features()
    prepared = time.perf_counter()
    settings = Settings()
    if variant == "full":  # the baseline: no sampling at all
        settings = Settings(drift_sample_rows=max(len(current), len(reference)))
    snapshot, check = drift_report(current, reference, NUMERICAL, CATEGORICAL, settings, "data")
    done = time.perf_counter()
    snapshot.save_json(os.devnull)
    return {
        "variant": variant,
        "rows_current": len(current),
        "rows_reference": len(reference),
        "rows_compared": [check.rows_current, check.rows_reference],
        "seconds": {
            "load_and_features": round(prepared - started, 2),
            "drift_report": round(done - prepared, 2),
            "total": round(done - started, 2),
        },
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "drift_share": check.share,
        "drifted_columns": check.drifted_columns,
        "distances": check.columns,
    }


def machine() -> dict[str, Any]:
    import evidently
    import psutil

    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "evidently": evidently.__version__,
        "load_average": os.getloadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", choices=["sampled", "full"], help="run one variant here (internal)")
    parser.add_argument("--skip-full", action="store_true", help="measure only ShopFlow's sampled drift")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant)))
        return 0

    results = []
    for variant in ["sampled"] + ([] if args.skip_full else ["full"]):
        print(f"running {variant} …", flush=True)
        done = subprocess.run(
            [sys.executable, __file__, "--variant", variant], capture_output=True, text=True, check=True
        )
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    report = {
        "benchmark": "drift",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": f"UCI Online Retail II: all lines vs the first year (< {REFERENCE_END})",
        "goal": "1M rows within 60 s on 2 cores",
        "machine": machine(),
        "results": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")

    print(
        f"\n{'variant':<9} {'rows':>10} {'compared':>18} {'features s':>11} {'drift s':>8} "
        f"{'total s':>8} {'peak MB':>8}"
    )
    for r in results:
        compared = f"{r['rows_compared'][0]:,}/{r['rows_compared'][1]:,}"
        s = r["seconds"]
        print(
            f"{r['variant']:<9} {r['rows_current']:>10,} {compared:>18} {s['load_and_features']:>11} "
            f"{s['drift_report']:>8} {s['total']:>8} {r['peak_rss_mb']:>8}"
        )
    print("\ncolumn distances (sampled vs full):")
    for column in NUMERICAL + CATEGORICAL:
        values = "  ".join(f"{r['variant']} {r['distances'].get(column, float('nan')):.4f}" for r in results)
        print(f"  {column:<20} {values}")
    print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
