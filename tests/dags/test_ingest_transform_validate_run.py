"""``dag.test()`` of ingest_transform_validate on real replayed data: the run succeeds and the
warehouse holds the interval's raw rows, its quarantined retail rows and non-empty marts."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from ml.core.settings import PROJECT_DIR, Settings

DAG_ID = "ingest_transform_validate"
# Two days of real data: 90 Beauty reviews and 4,418 Online Retail lines, with real dirt.
START, END = date(2011, 11, 1), date(2011, 11, 3)


@pytest.fixture
def day_settings(tmp_path: Path) -> Settings:
    return Settings(
        work_dir=tmp_path / "work",
        data_dir=PROJECT_DIR / "data",
        warehouse="duckdb",
        partition_grain="day",
        pii_salt="test-salt",  # type: ignore[arg-type]
    )


def _ingest_dag(settings: Settings, use_settings: Any) -> Any:
    """The DAG parsed under ``settings`` (its schedule follows the settings' grain)."""
    from airflow.dag_processing.dagbag import DagBag

    use_settings(settings)
    bag = DagBag(dag_folder=str(PROJECT_DIR / "dags"))
    assert bag.import_errors == {}
    return bag.dags[DAG_ID]


def _task_states(run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


@pytest.mark.timeout(900)
def test_manual_run_processes_the_conf_interval(
    airflow_db: Path, day_settings: Settings, use_settings: Any
) -> None:
    from ml.core.warehouse import Warehouse
    from ml.data.replay import replay

    landed = replay(day_settings, start=START, end=END)
    assert landed, "nothing landed for the test interval"
    dag = _ingest_dag(day_settings, use_settings)

    started = time.perf_counter()
    run = dag.test(
        logical_date=None,  # like `airflow dags trigger`: no logical date, no data interval
        run_conf={"interval_start": START.isoformat(), "interval_end": END.isoformat()},
    )
    seconds = time.perf_counter() - started
    states = _task_states(run)
    assert run.state == "success", f"run {run.state} after {seconds:.0f} s: {states}"
    assert set(states.values()) == {"success"}, states

    warehouse = Warehouse(day_settings)
    per_source = warehouse.read(
        "select source, min(_partition) as first, max(_partition) as last, count(*) as n from ("
        " select source, _partition from raw.interactions union all"
        " select source, _partition from raw.invoice_lines) group by source order by source"
    )
    assert per_source["source"].tolist() == ["beauty", "retail"]
    assert (per_source["first"].dt.date >= START).all() and (per_source["last"].dt.date < END).all()
    assert dict(zip(per_source["source"], per_source["n"], strict=True)) == {"beauty": 90, "retail": 4418}
    assert warehouse.scalar("select count(distinct _run_id) from raw.invoice_lines") == 1

    quarantined = warehouse.read("select source, count(*) as n from quarantine.rows group by source")
    by_source = dict(zip(quarantined["source"], quarantined["n"], strict=True))
    assert by_source.get("retail", 0) > 0, by_source  # guest checkouts, cancellations, postage lines...
    assert by_source.get("retail", 0) < 4418 * day_settings.max_quarantine_rate

    for mart in ("fct_interactions", "dim_items", "fct_baskets"):
        assert warehouse.scalar(f"select count(*) from marts.{mart}") > 0, f"marts.{mart} is empty"

    publish = run.get_task_instance("publish")
    summary = publish.xcom_pull(task_ids="publish")
    assert summary["interval_start"] == START.isoformat() and summary["interval_end"] == END.isoformat()
    assert summary["rows_loaded"]["retail.invoice_lines"] == 4418
    assert summary["dbt_invocation_id"]


def test_manual_run_without_interval_fails_fast(
    airflow_db: Path, day_settings: Settings, use_settings: Any
) -> None:
    dag = _ingest_dag(day_settings, use_settings)
    run = dag.test(logical_date=None)
    states = _task_states(run)
    assert run.state == "failed"
    # Failed at once (no retry: the same conf would fail again), everything downstream blocked.
    assert states["ingest"] == "failed", states
    assert {states[t] for t in ("validate_raw", "dbt_build", "validate_marts", "publish")} == {
        "upstream_failed"
    }
    assert not (day_settings.duckdb_file).exists()


def test_interval_without_landing_files_skips_the_rest(
    airflow_db: Path, day_settings: Settings, use_settings: Any
) -> None:
    dag = _ingest_dag(day_settings, use_settings)
    run = dag.test(logical_date=None, run_conf={"interval_start": "1999-01-01", "interval_end": "1999-02-01"})
    states = _task_states(run)
    assert run.state == "success"
    assert set(states.values()) == {"skipped"}, states
