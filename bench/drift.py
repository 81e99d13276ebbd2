"""Benchmark: data drift at 1x and 10x the Online Retail II lines, sampled in the warehouse vs in pandas.

``make bench-drift`` → ``bench/results/drift.json``. The data: a DuckDB warehouse file per scale
with one table of invoice lines and their monitored features (unit price, quantity, lines per
invoice, description length, country, cancellation): at 1x the 1,044,847 real lines; at 10x the
real lines plus 9 seeded SYNTHETIC copies, each shifted later in time by 25 months per copy, with
its own invoice numbers and its unit prices jittered by a seeded ±2.5% (labelled as such in the
result). The current window is every line of the table, the reference the real first year
(2009-12 to 2010-11), as a stored sample (what monitoring keeps per champion, written once at
registration: its one-time cost is reported apart).

Variants, each in a fresh process so its peak memory is its own:

* ``warehouse`` (ShopFlow): the sample is drawn in the warehouse
  (``ml.monitoring.features.hashed_sample``: a seeded md5 top-N), so only ``--sample-rows`` rows
  reach Python; then the Evidently report against the stored reference sample.
* ``pandas`` (ShopFlow before this change, the baseline): every line of the window read into
  pandas, sampled there to the same size, the reference rebuilt from all its lines.
* ``full`` (1x only): Evidently on every row, unsampled: the distances the samples are judged by.

A sample-size study at 1x (sizes × seeds) prints each size's report time and its largest distance
error against ``full``: the statistical ground for the sample size.
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
WORK = ROOT / ".shopflow" / "bench" / "drift"
NUMERICAL = ["price", "quantity", "basket_lines", "description_length"]
CATEGORICAL = ["country", "cancellation"]
FEATURES = ", ".join(NUMERICAL + CATEGORICAL)
REFERENCE_END = "2010-12-01"
LINE_KEY = "invoice, line_no"
"""What identifies a line (the key the warehouse sample hashes)."""
COPY_SHIFT_MONTHS = 25
"""Each synthetic copy lies this much later than the one before (the real data spans 25 months)."""


def warehouse_file(scale: int) -> Path:
    return WORK / f"lines_x{scale}.duckdb"


def build_warehouse(scale: int) -> float:
    """Write the scale's warehouse file (once; kept between runs) and return the seconds it took."""
    import duckdb

    path = warehouse_file(scale)
    if path.exists():
        return 0.0
    started = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    con = duckdb.connect(str(partial))
    con.execute("set threads = 2")
    con.execute(
        f"""
        create table real_lines as
        select
            cast(Invoice as varchar) as invoice,
            row_number() over () as line_no,
            InvoiceDate as invoice_date,
            cast(Price as double) as price,
            cast(Quantity as double) as quantity,
            cast(count(*) over (partition by Invoice) as double) as basket_lines,
            cast(length(coalesce(Description, '')) as double) as description_length,
            coalesce(cast(Country as varchar), 'unknown') as country,
            case when cast(Invoice as varchar) like 'C%' then 'yes' else 'no' end as cancellation
        from read_parquet('{DATA}')
        """
    )
    con.execute("create table lines as select * from real_lines")
    for copy in range(1, scale):
        # Seeded synthetic copy: later in time, its own invoices, prices jittered by ±2.5%.
        con.execute(
            f"""
            insert into lines
            select
                invoice || '-s{copy}', line_no, invoice_date + interval {copy * COPY_SHIFT_MONTHS} month,
                price * (1 + 0.05 * ((hash({copy}, invoice, line_no) % 1000) / 1000.0 - 0.5)),
                quantity, basket_lines, description_length, country, cancellation
            from real_lines
            """
        )
    con.execute("drop table real_lines")
    con.close()
    partial.rename(path)
    return time.perf_counter() - started


def reference_file(rows: int) -> Path:
    return WORK / f"reference_{rows}.parquet"


def write_reference(rows: int) -> float:
    """The stored reference sample (the real first year), as monitoring keeps one per champion."""
    import duckdb

    from ml.monitoring.features import hashed_sample

    started = time.perf_counter()
    con = duckdb.connect(str(warehouse_file(1)), read_only=True)
    sql = f"select {FEATURES}, {LINE_KEY} from lines where invoice_date < date '{REFERENCE_END}'"
    frame = con.execute(hashed_sample(sql, LINE_KEY, rows, seed=1)).df()[NUMERICAL + CATEGORICAL]
    frame.to_parquet(reference_file(rows), index=False)
    return time.perf_counter() - started


def _measure(variant: str, scale: int, rows: int, seed: int = 0) -> dict[str, Any]:
    """One measured run (in this process): read the window, then the Evidently drift report."""
    import duckdb
    import pandas as pd

    from ml.core.settings import Settings
    from ml.monitoring.drift import drift_report
    from ml.monitoring.features import hashed_sample

    started = time.perf_counter()
    # As ml.core.warehouse connects: SHOPFLOW_DUCKDB_MEMORY_LIMIT (make bench-drift sets 512MB).
    limit = Settings().duckdb_memory_limit
    con = duckdb.connect(
        str(warehouse_file(scale)), read_only=True, config={"memory_limit": limit} if limit else {}
    )
    con.execute("set threads = 2")
    window = f"select {FEATURES}, {LINE_KEY} from lines"
    first_year = f"{window} where invoice_date < date '{REFERENCE_END}'"
    window_rows = int(con.execute("select count(*) from lines").fetchone()[0])  # type: ignore[index]
    if variant == "warehouse":
        current = con.execute(hashed_sample(window, LINE_KEY, rows, seed=seed)).df()
        reference = pd.read_parquet(reference_file(rows))
        settings = Settings(drift_sample_rows=rows)
    else:
        current = con.execute(window).df()
        reference = con.execute(first_year).df()
        settings = Settings(
            drift_sample_rows=rows if variant == "pandas" else max(len(current), len(reference))
        )
    con.close()
    read = time.perf_counter()
    snapshot, check = drift_report(
        current[NUMERICAL + CATEGORICAL],
        reference[NUMERICAL + CATEGORICAL],
        NUMERICAL,
        CATEGORICAL,
        settings,
        "data",
    )
    done = time.perf_counter()
    snapshot.save_json(os.devnull)
    return {
        "variant": variant,
        "scale": scale,
        "rows_in_window": window_rows,
        "rows_compared": [check.rows_current, check.rows_reference],
        "seconds": {
            "read_and_sample": round(read - started, 2),
            "drift_report": round(done - read, 2),
            "total": round(done - started, 2),
        },
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "drift_share": check.share,
        "drifted_columns": check.drifted_columns,
        "distances": check.columns,
    }


def sample_size_study(sizes: list[int], seeds: int, truth: dict[str, float]) -> list[dict[str, Any]]:
    """Each size × seed at 1x (in this process, after a warm-up): report seconds and distance error."""
    _measure("warehouse", 1, min(sizes))  # imports and first-call costs out of the timings
    rows = []
    for size in sizes:
        runs = [_measure("warehouse", 1, size, seed=seed) for seed in range(seeds)]
        errors = [abs(run["distances"][c] - truth[c]) for run in runs for c in truth if c in run["distances"]]
        rows.append(
            {
                "sample_rows": size,
                "seeds": seeds,
                "drift_report_seconds_median": sorted(r["seconds"]["drift_report"] for r in runs)[seeds // 2],
                "max_distance_error_vs_full": round(max(errors), 4),
                "mean_distance_error_vs_full": round(sum(errors) / len(errors), 4),
            }
        )
        print(f"  {size:>8,} rows: {rows[-1]}", flush=True)
    return rows


def machine() -> dict[str, Any]:
    import duckdb
    import evidently
    import psutil

    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "evidently": evidently.__version__,
        "duckdb": duckdb.__version__,
        "load_average": os.getloadavg(),
    }


def _in_child(*args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench/drift.py {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scales", default="1,10", help="comma-separated copies of the data (default 1,10)")
    parser.add_argument("--sample-rows", type=int, default=None, help="rows a side (default: the setting)")
    parser.add_argument(
        "--study-sizes", default="25000,50000,100000,200000", help="sizes for the study ('' skips)"
    )
    parser.add_argument("--study-seeds", type=int, default=3, help="seeds per size in the study")
    parser.add_argument("--skip-pandas", action="store_true", help="leave out the pandas baseline")
    parser.add_argument("--measure", nargs=3, metavar=("VARIANT", "SCALE", "ROWS"), help=argparse.SUPPRESS)
    parser.add_argument("--study", nargs=2, metavar=("SIZES", "SEEDS"), help=argparse.SUPPRESS)
    parser.add_argument("--truth", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        variant, scale, rows = args.measure
        print(json.dumps(_measure(variant, int(scale), int(rows))))
        return 0
    if args.study:
        sizes = [int(s) for s in args.study[0].split(",")]
        print(json.dumps({"study": sample_size_study(sizes, int(args.study[1]), json.loads(args.truth))}))
        return 0

    from ml.core.settings import Settings

    started = time.perf_counter()
    load_at_start = os.getloadavg()
    rows = args.sample_rows or Settings().drift_sample_rows
    scales = [int(s) for s in args.scales.split(",")]
    setup = {}
    for scale in sorted({1, *scales}):
        print(f"warehouse file x{scale} …", flush=True)
        setup[f"build_x{scale}_seconds"] = round(build_warehouse(scale), 1)
    study_sizes = [int(s) for s in args.study_sizes.split(",") if s]
    for size in {rows, *study_sizes}:
        setup[f"reference_sample_{size}_seconds"] = round(write_reference(size), 2)

    results = []
    print("full (unsampled) x1 …", flush=True)
    full = _in_child("--measure", "full", "1", "0")
    results.append(full)
    for scale in scales:
        for variant in ["warehouse"] + ([] if args.skip_pandas else ["pandas"]):
            print(f"{variant} x{scale} …", flush=True)
            results.append(_in_child("--measure", variant, str(scale), str(rows)))
    study = []
    if study_sizes:
        print("sample-size study at x1 …", flush=True)
        study = _in_child(
            "--study",
            ",".join(map(str, study_sizes)),
            str(args.study_seeds),
            "--truth",
            json.dumps(full["distances"]),
        )["study"]

    truth = full["distances"]
    for result in results:
        result["max_distance_error_vs_full"] = round(
            max(abs(result["distances"][c] - truth[c]) for c in truth if c in result["distances"]), 4
        )
    warehouse = {r["scale"]: r for r in results if r["variant"] == "warehouse"}
    curve = (
        {
            "scales": sorted(warehouse),
            "total_seconds": [warehouse[s]["seconds"]["total"] for s in sorted(warehouse)],
            "peak_rss_mb": [warehouse[s]["peak_rss_mb"] for s in sorted(warehouse)],
        }
        if warehouse
        else {}
    )
    report = {
        "benchmark": "drift",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": (
            "UCI Online Retail II invoice lines: x1 = the 1,044,847 real lines; x10 = the real lines plus 9 "
            f"SEEDED SYNTHETIC copies (each {COPY_SHIFT_MONTHS} months later than the last, own invoice "
            "numbers, unit prices jittered ±2.5%). Current = every line; reference = the real first year "
            f"(< {REFERENCE_END}) as a stored sample."
        ),
        "goal": "10x (10M rows): <= 30 s, <= 1 GB peak; distances within 0.01 of the unsampled run (1x)",
        "sample_rows": rows,
        "duckdb_memory_limit": Settings().duckdb_memory_limit,
        "machine": {**machine(), "load_average_at_start": load_at_start},
        "setup_seconds": setup,
        "results": results,
        "cost_curve_warehouse": curve,
        "sample_size_study": study,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")

    print(
        f"\n{'variant':<10} {'scale':>5} {'rows':>11} {'compared':>16} {'read s':>7} {'drift s':>8} "
        f"{'total s':>8} {'peak MB':>8} {'max err':>8}"
    )
    for r in results:
        compared = f"{r['rows_compared'][0]:,}/{r['rows_compared'][1]:,}"
        s, error = r["seconds"], r["max_distance_error_vs_full"]
        print(
            f"{r['variant']:<10} {r['scale']:>5} {r['rows_in_window']:>11,} {compared:>16} "
            f"{s['read_and_sample']:>7} {s['drift_report']:>8} {s['total']:>8} {r['peak_rss_mb']:>8} "
            f"{error:>8}"
        )
    print(f"\nload average at start {load_at_start}, at end {os.getloadavg()}")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
