"""The production profile outside containers: PostgreSQL is both the warehouse and Airflow's
metadata DB, the scheduler runs LocalExecutor, and one real run of ``ingest_transform_validate``
(through ``LocalAirflow``, not ``dag.test()``) lands two days of the shipped data in PostgreSQL
marts and records its run and its marts Asset event in PostgreSQL."""

from __future__ import annotations

import os
import time
from datetime import date
from pathlib import Path

import pytest

from ml.core.settings import PROJECT_DIR, Settings

PG_SERVER = os.environ.get("SHOPFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
DAG_ID = "ingest_transform_validate"
# Two days of real data: 90 Beauty reviews and 4,418 Online Retail lines (with real dirt).
START, END = date(2011, 11, 1), date(2011, 11, 3)


def _fetch(dsn: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    import psycopg2

    with psycopg2.connect(dsn) as con, con.cursor() as cur:
        cur.execute(sql, params)
        rows: list[tuple[object, ...]] = cur.fetchall()
    con.close()
    return rows


@pytest.mark.postgres
@pytest.mark.timeout(1200)
def test_one_run_on_postgres_warehouse_and_metadata(
    tmp_path: Path, own_pg_database: str, airflow_database: str
) -> None:
    from ml.core.warehouse import Warehouse
    from ml.data.replay import replay
    from ml.ops.local_airflow import LocalAirflow

    metadata_url = airflow_database.replace("postgresql://", "postgresql+psycopg2://", 1)
    settings = Settings(
        work_dir=tmp_path / "work",
        data_dir=PROJECT_DIR / "data",
        warehouse="postgres",
        postgres_dsn=own_pg_database,
        airflow_database_url=metadata_url,
        airflow_executor="LocalExecutor",
        partition_grain="day",
        replay_history_end=START.isoformat(),  # the DAG's start_date
        pii_salt="test-salt",  # type: ignore[arg-type]
    )
    assert replay(settings, start=START, end=END), "nothing landed for the test interval"

    timings: dict[str, float] = {}
    started = time.monotonic()
    with LocalAirflow(settings) as airflow:
        timings.update(airflow.timings)
        assert airflow.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == metadata_url
        assert airflow.env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        airflow.wait_for_dag(DAG_ID)
        airflow.unpause(DAG_ID)
        mark = time.monotonic()
        run_id = airflow.trigger(
            DAG_ID, conf={"interval_start": START.isoformat(), "interval_end": END.isoformat()}
        )
        [run] = airflow.wait_for_runs(DAG_ID, run_ids=[run_id], timeout=900)
        timings["run_s"] = time.monotonic() - mark
        assert run["state"] == "success"
        states = {ti["task_id"]: ti["state"] for ti in airflow.task_instances(DAG_ID, run_id)}
        assert states and set(states.values()) == {"success"}, states
        events = [e for e in airflow.asset_events("shopflow_marts", DAG_ID) if e["source_run_id"] == run_id]
        assert len(events) == 1, events
        extra = events[0]["extra"]
    timings["total_s"] = time.monotonic() - started

    # Airflow's metadata lives in PostgreSQL (and no SQLite file was made).
    assert not (settings.airflow_home / "airflow.db").exists()
    recorded = _fetch(airflow_database, "select state, conf::text from dag_run where run_id = %s", (run_id,))
    assert len(recorded) == 1 and recorded[0][0] == "success", recorded
    assert START.isoformat() in str(recorded[0][1])
    task_states = {
        str(task): str(state)
        for task, state in _fetch(
            airflow_database, "select task_id, state from task_instance where run_id = %s", (run_id,)
        )
    }
    assert task_states == states
    [(stored_events,)] = _fetch(
        airflow_database,
        "select count(*) from asset_event e join asset a on a.id = e.asset_id"
        " where a.name = 'shopflow_marts' and e.source_run_id = %s",
        (run_id,),
    )
    assert stored_events == 1
    assert extra["interval_start"] == START.isoformat() and extra["interval_end"] == END.isoformat()
    assert extra["dbt_target"] == "postgres"
    assert extra["rows_loaded"]["beauty.interactions"] == 90
    assert extra["rows_loaded"]["retail.invoice_lines"] == 4418

    # The warehouse is PostgreSQL: the interval's raw rows and non-empty marts.
    warehouse = Warehouse(settings)
    raw = warehouse.read(
        "select source, count(*) as n from ("
        " select source, _partition from raw.interactions union all"
        " select source, _partition from raw.invoice_lines) as r"
        " where _partition >= :start and _partition < :end group by source order by source",
        {"start": START, "end": END},
    )
    assert dict(zip(raw["source"], raw["n"], strict=True)) == {"beauty": 90, "retail": 4418}
    marts = {
        mart: int(warehouse.scalar(f"select count(*) from marts.{mart}"))
        for mart in ("fct_interactions", "dim_items", "fct_baskets", "fct_training_examples")
    }
    assert all(n > 0 for n in marts.values()), marts
    print(f"timings: { {k: round(v, 1) for k, v in timings.items()} }; marts rows: {marts}")
