"""Two runs of the same interval at once leave the warehouse as one run does (issue 16, item 3).

Airflow can start a run of an interval beside one already running (a manual run beside the
scheduled one, a retry beside a task it wrongly thought dead). The quick test runs two ingests of
the same interval as two processes at once, over a loaded warehouse, on DuckDB and PostgreSQL, and
two raw gates (validate_raw: quarantine.rows and the audit counts) of one interval at once on
PostgreSQL; the slow one runs two whole ``shopflow run-interval`` chains (ingest, raw gate, dbt,
marts gate) at once and compares every raw, quarantine and mart table with a single run's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from faultkit import (
    REVIEWS_END,
    REVIEWS_ROWS,
    REVIEWS_START,
    land_reviews,
    shop_settings,
    start_python,
    table_state,
)

from ml.core.settings import Settings
from ml.data.ingest import ingest_interval
from ml.data.quality.raw import validate_raw

INGEST = """
import sys
from collections.abc import Callable
from datetime import date
from ml.core.settings import Settings
from ml.data.ingest import ingest_interval
from ml.data.quality.raw import validate_raw
start, end = date.fromisoformat(sys.argv[1]), date.fromisoformat(sys.argv[2])
summary = ingest_interval(start, end, sys.argv[3], Settings())
print("rows", sum(summary.rows_by_table.values()))
"""
RAW_GATE = """
import sys
from collections.abc import Callable
from datetime import date
from ml.core.settings import Settings
from ml.data.quality.raw import validate_raw
start, end = date.fromisoformat(sys.argv[1]), date.fromisoformat(sys.argv[2])
result = validate_raw(start, end, sys.argv[3], Settings())
print("quarantined", result.quarantined)
"""
RUN_INTERVAL = """
import sys
from collections.abc import Callable
from datetime import date
from ml.core.settings import Settings
from ml.flows.interval import run_interval
start, end = date.fromisoformat(sys.argv[1]), date.fromisoformat(sys.argv[2])
run_interval(start, end, sys.argv[3], Settings())
print("published")
"""
GATE_START = date(2017, 1, 1)


def _at_once(
    code: str,
    settings: Settings,
    tmp_path: Path,
    start: date,
    end: date,
    released: Callable[[], None] = lambda: None,
) -> None:
    """Two processes of ``code`` for the same interval, started together; both must succeed.

    ``released`` runs once both are started (it may hold them at a barrier and let them go); the
    output goes to log files, so a child held at the barrier never blocks on a full pipe."""
    logs = [tmp_path / f"{name}.log" for name in ("run-a", "run-b")]
    runs = [
        start_python(code, settings, log, args=[str(start), str(end), log.stem], pipe=False) for log in logs
    ]
    try:
        released()
        for process in runs:
            process.wait(timeout=1800)
    finally:
        for process in runs:  # a child still held at a barrier would wait forever
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, log in zip(runs, logs, strict=True):
        assert process.returncode == 0, log.read_text()[-3000:]


def _shop(tmp_path: Path, name: str, **values: object) -> Settings:
    settings = shop_settings(tmp_path / name, **values)
    land_reviews(settings)
    return settings


@pytest.mark.parametrize(
    "engine",
    [
        # DuckDB's processes queue on the file lock (tests/unit/test_warehouse_lock.py): slow only.
        pytest.param("duckdb", marks=pytest.mark.slow),
        # PostgreSQL let both write until ingest took an advisory lock: this case found it.
        pytest.param("postgres", marks=pytest.mark.postgres),
    ],
)
def test_two_ingests_of_one_interval_at_once_equal_one(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    values: dict[str, object] = {}
    if engine == "postgres":
        values = {"warehouse": "postgres", "postgres_dsn": request.getfixturevalue("own_pg_database")}
    shop = _shop(tmp_path, "shop", **values)
    once = ingest_interval(GATE_START, REVIEWS_END, "once", shop)
    single = table_state(shop, "raw.interactions")
    assert len(single) == sum(once.rows_by_table.values()) > 0

    _at_once(INGEST, shop, tmp_path, GATE_START, REVIEWS_END)
    both = table_state(shop, "raw.interactions")
    assert len(both) == len(single)  # not twice: no partition was written by both
    assert both.equals(single)


# slow: in a clean-clone gate one of the two gates crashed reading the GX expectation suite file the
# other was writing (GX's file stores are not safe for two writers), and the barrier waited its 300 s.
# Fixed since (ml.data.quality.gx.project_lock: one validation at a time per GX project); the test
# stays in the slow tier until more runs than this stop's few have shown the race gone.
@pytest.mark.slow
@pytest.mark.postgres
def test_two_raw_gates_of_one_interval_at_once_equal_one(tmp_path: Path, own_pg_database: str) -> None:
    """Both gates' write transactions are made to overlap: a barrier (this test's EXCLUSIVE lock on
    quarantine.rows, which lets the gates read but not write) holds them until both are waiting,
    then lets them go together. Without the quarantine lock both DELETE, both INSERT, and the
    interval's quarantine rows are doubled; with it the second waits, then replaces the first's."""
    import psycopg2

    shop = _shop(tmp_path, "shop", warehouse="postgres", postgres_dsn=own_pg_database)
    ingest_interval(REVIEWS_START, REVIEWS_END, "ingest", shop)
    once = validate_raw(REVIEWS_START, REVIEWS_END, "once", shop)
    assert once.quarantined > 1_000  # the reviews repeat across product variants (1,108 duplicates)
    drop = {"run_id", "quarantined_at"}  # which gate wrote a row, and when
    single = table_state(shop, "quarantine.rows", drop)
    audit = table_state(shop, "raw.ingest_audit", {"loaded_at"})
    assert len(single) == once.quarantined

    barrier = psycopg2.connect(own_pg_database)
    try:
        with barrier.cursor() as cur:
            cur.execute("LOCK TABLE quarantine.rows IN EXCLUSIVE MODE")

        def both_waiting_then_release() -> None:
            # Each gate validates (seconds of GX), then its write transaction blocks: on this
            # lock at its DELETE, or on the gates' advisory lock behind the other one. Watched
            # from another connection: inside a transaction pg_stat_activity is a snapshot.
            deadline = time.monotonic() + 300
            watcher = psycopg2.connect(own_pg_database)
            watcher.autocommit = True
            try:
                with watcher.cursor() as cur:
                    while time.monotonic() < deadline:
                        cur.execute(
                            "select count(*) from pg_stat_activity where datname = current_database() "
                            "and wait_event_type = 'Lock'"
                        )
                        if cur.fetchone()[0] == 2:
                            break
                        time.sleep(0.2)
                    else:
                        raise AssertionError("the two raw gates never both reached their write")
            finally:
                watcher.close()
            barrier.commit()  # releases the table lock: both go at once

        _at_once(RAW_GATE, shop, tmp_path, REVIEWS_START, REVIEWS_END, both_waiting_then_release)
    finally:
        barrier.close()

    both = table_state(shop, "quarantine.rows", drop)
    assert len(both) == len(single), f"{len(both)} quarantine rows after two gates, {len(single)} after one"
    assert both.equals(single)
    assert table_state(shop, "raw.ingest_audit", {"loaded_at"}).equals(audit)


MART_TABLES = ("raw.interactions", "quarantine.rows")


@pytest.mark.slow
def test_two_whole_interval_runs_at_once_equal_one(tmp_path: Path) -> None:
    from ml.core.warehouse import Warehouse
    from ml.flows.interval import run_interval

    alone = _shop(tmp_path, "alone")
    run_interval(REVIEWS_START, REVIEWS_END, "alone", alone)
    shared = _shop(tmp_path, "shared")
    _at_once(RUN_INTERVAL, shared, tmp_path, REVIEWS_START, REVIEWS_END)

    marts = Warehouse(alone).read(
        "select table_schema || '.' || table_name as name from information_schema.tables "
        "where table_schema in ('staging', 'intermediate', 'marts') and table_type = 'BASE TABLE'"
    )["name"]
    tables = [*MART_TABLES, *sorted(marts)]
    assert len(tables) > 5
    # Lineage (which run wrote a row, when) differs by design; quarantine rows name their run.
    drop = {"_run_id", "_loaded_at", "run_id", "quarantined_at", "loaded_at", "dbt_run_id"}
    compared = 0
    for table in tables:
        single, double = table_state(alone, table, drop), table_state(shared, table, drop)
        pd.testing.assert_frame_equal(double, single, obj=table)
        compared += len(single)
    # The shop's tables are full (the shipped retail source has no data here: its tables are empty).
    assert len(table_state(alone, "raw.interactions")) == REVIEWS_ROWS
    assert compared > 3 * REVIEWS_ROWS  # 19,936 rows compared on 2026-12-02
