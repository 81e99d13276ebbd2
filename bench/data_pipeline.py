"""Benchmark: ingest + GX + dbt build over the full Online Retail II, DuckDB and PostgreSQL side by side.

Each engine runs in its own subprocess (so peak memory is that engine's alone) on the same landing
files: the whole dataset (1,044,847 invoice lines) as one interval. Prints a table and writes
bench/results/data_pipeline.json with the figures, the machine and the date.

    make bench-data_pipeline            # both engines
    python bench/data_pipeline.py --engine duckdb
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
RESULTS = PROJECT_DIR / "bench" / "results" / "data_pipeline.json"
START, END = date(2009, 12, 1), date(2012, 1, 1)  # all of Online Retail II
ENGINES = ("duckdb", "postgres")


def run_child(engine: str, work_dir: Path, dsn: str) -> dict[str, object]:
    """One engine, in this process: replay → ingest → validate_raw → dbt build → validate_marts."""
    from ml.core.settings import Settings
    from ml.data.ingest import ingest_interval
    from ml.data.quality.marts import validate_marts
    from ml.data.quality.raw import validate_raw
    from ml.data.replay import replay
    from ml.data.transform import dbt_build

    settings = Settings(
        work_dir=work_dir,
        warehouse=engine,  # type: ignore[arg-type]
        postgres_dsn=dsn,
        pii_salt="bench",  # type: ignore[arg-type]
        sources={"retail": "invoice_lines"},
    )
    replay(settings, grain="month")
    seconds: dict[str, float] = {}
    run_id = f"bench_{engine}"

    mark = time.perf_counter()
    ingested = ingest_interval(START, END, run_id, settings)
    seconds["ingest"] = time.perf_counter() - mark
    mark = time.perf_counter()
    raw = validate_raw(START, END, run_id, settings)
    seconds["validate_raw"] = time.perf_counter() - mark
    mark = time.perf_counter()
    dbt_build(run_id, settings)
    seconds["dbt_build"] = time.perf_counter() - mark
    mark = time.perf_counter()
    validate_marts(run_id, settings)
    seconds["validate_marts"] = time.perf_counter() - mark
    seconds["total"] = sum(seconds.values())

    landed = sum(ingested.rows_by_table.values())
    quarantined = sum(s.quarantined for s in raw.sources.values())
    return {
        "engine": engine,
        "rows_landed": landed,
        "rows_quarantined": quarantined,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "rows_per_second": round(landed / seconds["total"]),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def machine() -> dict[str, object]:
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", choices=ENGINES, action="append", help="engine(s) to run (default: both)")
    parser.add_argument(
        "--pg-server", default="postgresql://postgres@127.0.0.1:5432", help="PostgreSQL server"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dsn", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(run_child(args.engine[0], args.work_dir, args.dsn)))
        return

    rows = []
    for engine in args.engine or ENGINES:
        with tempfile.TemporaryDirectory(prefix=f"bench_{engine}_") as tmp:
            dsn = f"{args.pg_server}/shopflow_bench_{uuid.uuid4().hex[:8]}"
            command = [
                sys.executable,
                __file__,
                "--child",
                "--engine",
                engine,
                "--work-dir",
                tmp,
                "--dsn",
                dsn,
            ]
            print(f"running {engine} …", flush=True)
            try:
                done = subprocess.run(command, check=True, capture_output=True, text=True)
            finally:
                if engine == "postgres":
                    subprocess.run(
                        ["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", dsn.rsplit("/", 1)[1]],
                        check=False,
                    )
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))

    stages = ["ingest", "validate_raw", "dbt_build", "validate_marts", "total"]
    print(f"\n{'engine':<10}" + "".join(f"{s:>16}" for s in stages) + f"{'rows/s':>10}{'peak MB':>10}")
    for row in rows:
        secs = row["seconds"]
        print(
            f"{row['engine']:<10}"
            + "".join(f"{secs[s]:>15.1f}s" for s in stages)
            + f"{row['rows_per_second']:>10,}{row['peak_rss_mb']:>10,}"
        )
    result = {
        "benchmark": "data_pipeline",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": "UCI Online Retail II, 1,044,847 invoice lines, one interval",
        "machine": machine(),
        "results": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(PROJECT_DIR)}")


if __name__ == "__main__":
    main()
