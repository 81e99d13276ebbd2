"""ingest_transform_validate through Airflow's real scheduler (LocalAirflow): a backfill of two
daily intervals runs to success, publishes one marts Asset event per run, a bad manual run is
reported with its failed task and log, and stopping Airflow leaves no process behind."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import psutil
import pytest

from ml.core.settings import PROJECT_DIR, Settings
from ml.ops.local_airflow import AirflowRunError, LocalAirflow

DAG_ID = "ingest_transform_validate"
START, END = date(2011, 11, 1), date(2011, 11, 3)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_backfill_through_the_real_scheduler(tmp_path: Path) -> None:
    from ml.core.warehouse import Warehouse
    from ml.data.replay import replay

    settings = Settings(
        work_dir=tmp_path / "work",
        data_dir=PROJECT_DIR / "data",
        warehouse="duckdb",
        partition_grain="day",
        replay_history_end=START.isoformat(),  # the DAG's start_date
        pii_salt="test-salt",  # type: ignore[arg-type]
    )
    replay(settings, start=START, end=END)

    timings: dict[str, float] = {}
    started = time.monotonic()
    with LocalAirflow(settings) as airflow:
        timings["startup"] = time.monotonic() - started
        leaders = [p.pid for p in airflow.processes.values()]
        dag = airflow.wait_for_dag(DAG_ID)
        assert dag["is_paused"] is True  # new DAGs wait for an explicit unpause
        airflow.unpause(DAG_ID)

        mark = time.monotonic()
        backfill = airflow.backfill(DAG_ID, START, END)
        runs = airflow.wait_for_runs(DAG_ID, backfill_id=backfill["id"], timeout=1500)
        timings["backfill"] = time.monotonic() - mark

        backfilled = [r for r in runs if r["run_type"] == "backfill"]
        intervals = sorted((r["data_interval_start"][:10], r["data_interval_end"][:10]) for r in backfilled)
        assert intervals == [("2011-11-01", "2011-11-02"), ("2011-11-02", "2011-11-03")]
        assert {r["state"] for r in runs} == {"success"}
        for run in backfilled:
            states = {ti["task_id"]: ti["state"] for ti in airflow.task_instances(DAG_ID, run["dag_run_id"])}
            assert set(states.values()) == {"success"}, states

        events = airflow.asset_events("shopflow_marts", source_dag_id=DAG_ID)
        by_run = {e["source_run_id"]: e["extra"] for e in events}
        assert set(by_run) >= {r["dag_run_id"] for r in backfilled}
        for run in backfilled:
            extra = by_run[run["dag_run_id"]]
            assert extra["interval_start"] == run["data_interval_start"][:10]
            assert extra["rows_loaded"]["retail.invoice_lines"] > 0
            assert extra["dbt_invocation_id"]
        # A manual run without an interval fails at once, and the error says where to look.
        mark = time.monotonic()
        bad = airflow.trigger(DAG_ID, conf={})
        with pytest.raises(AirflowRunError) as caught:
            airflow.wait_for_runs(DAG_ID, run_ids=[bad], timeout=600)
        timings["failed_run"] = time.monotonic() - mark
        message = str(caught.value)
        assert f"run {bad}: failed" in message and "task ingest: failed" in message, message
        assert "no data interval" in message and "attempt=1.log" in message, message
        assert airflow.session_pids(), "Airflow's processes should be running inside the block"

    # Everything Airflow started (task runners included) is gone.
    left = [p.pid for p in psutil.process_iter() if _session_of(p.pid) in leaders]
    assert left == [], f"processes left behind: {left}"
    assert not airflow.pid_file.exists()

    warehouse = Warehouse(settings)
    assert warehouse.scalar("select count(distinct _partition) from raw.invoice_lines") == 2
    assert warehouse.scalar("select count(*) from marts.fct_interactions") > 0
    print(f"timings: {timings}, per run: {timings['backfill'] / 2:.0f} s")


def _session_of(pid: int) -> int | None:
    import os

    try:
        return os.getsid(pid)
    except OSError:
        return None
