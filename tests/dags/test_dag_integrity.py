"""Every DAG in dags/ imports cleanly, is documented and owned, and parses fast without heavy imports."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from typing import Any

from ml.core.settings import PROJECT_DIR

DAGS_DIR = PROJECT_DIR / "dags"
HEAVY_MODULES = ("pandas", "numpy", "duckdb", "torch", "transformers", "great_expectations", "dbt", "bentoml")


def test_dag_folder_has_no_import_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert "ingest_transform_validate" in dagbag.dags


def test_every_dag_is_tagged_owned_retried_and_documented(dagbag: Any) -> None:
    assert dagbag.dags, "no DAGs found"
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert (dag.doc_md or "").strip(), f"{dag_id} has no doc_md"
        for task in dag.tasks:
            where = f"{dag_id}.{task.task_id}"
            assert task.owner and task.owner != "airflow", f"{where} has the default owner"
            assert task.retries >= 1, f"{where} has no retries"
            assert (task.doc_md or "").strip(), f"{where} has no doc_md"


def test_ingest_dag_shape(dagbag: Any) -> None:
    from airflow.sdk import CronDataIntervalTimetable

    from shopflow_assets import MARTS

    dag = dagbag.dags["ingest_transform_validate"]
    order = ["ingest", "validate_raw", "dbt_build", "validate_marts", "publish"]
    assert set(dag.task_ids) == set(order)
    for upstream, downstream in itertools.pairwise(order):
        assert upstream in dag.get_task(downstream).upstream_task_ids
    assert dag.get_task("publish").outlets == [MARTS]
    assert all(not dag.get_task(t).outlets for t in order[:-1])
    # Data-interval timetable: a bare cron string would give runs an empty interval in Airflow 3.
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert set(dag.params.keys()) == {"interval_start", "interval_end"}
    assert dag.get_task("ingest").retry_delay.total_seconds() <= 60


def test_monitor_dag_shape(dagbag: Any) -> None:
    """load → reports → branch; the branch chooses among retrain + alert, alert, or nothing."""
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
    from airflow.sdk import CronDataIntervalTimetable

    dag = dagbag.dags["monitor_drift"]
    assert set(dag.task_ids) == {
        "load_serving_logs",
        "compute_reports",
        "decide",
        "trigger_retraining",
        "alert",
        "no_action",
    }
    assert dag.get_task("compute_reports").upstream_task_ids == {"load_serving_logs"}
    assert dag.get_task("decide").downstream_task_ids == {"trigger_retraining", "alert", "no_action"}
    trigger = dag.get_task("trigger_retraining")
    assert isinstance(trigger, TriggerDagRunOperator)
    assert trigger.trigger_dag_id == "train_recommender" and trigger.wait_for_completion is False
    assert set(trigger.conf) == {"reason", "report"}
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert set(dag.params.keys()) == {"interval_start", "interval_end"}


def _in_fresh_interpreter(code: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    full_env = {**os.environ, **(env or {})}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=300,
        cwd=PROJECT_DIR,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


PARSE_PROBE = """
    import json, sys, time
    sys.path.insert(0, {dags!r})
    import airflow.sdk  # the DAG processor has Airflow imported before it parses a file
    before = set(sys.modules)
    started = time.perf_counter()
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder={dags!r})
    seconds = time.perf_counter() - started
    added = set(sys.modules) - before
    heavy = sorted({{m.split(".")[0] for m in added}} & set({heavy!r}))
    print(json.dumps({{"seconds": seconds, "heavy": heavy, "errors": list(bag.import_errors),
                      "dags": sorted(bag.dags)}}))
"""


def test_dag_files_parse_fast_without_heavy_imports() -> None:
    probe = _in_fresh_interpreter(PARSE_PROBE.format(dags=str(DAGS_DIR), heavy=HEAVY_MODULES))
    assert probe["errors"] == []
    assert probe["heavy"] == [], f"DAG files import {probe['heavy']} at parse time"
    # Measured ~0.2 s on 2 cores; generous bound against a busy CI box.
    assert probe["seconds"] < 5.0, probe


def test_schedule_follows_partition_grain() -> None:
    probe = _in_fresh_interpreter(
        f"""
        import json, os, sys
        sys.path.insert(0, {str(DAGS_DIR)!r})
        from airflow.dag_processing.dagbag import DagBag
        from ml.core.settings import get_settings
        found = {{}}
        os.environ["SHOPFLOW_REPLAY_HISTORY_END"] = "2012-03-05"
        for grain in ("day", "week", "month"):
            os.environ["SHOPFLOW_PARTITION_GRAIN"] = grain
            get_settings.cache_clear()
            dag = DagBag(dag_folder={str(DAGS_DIR)!r}).dags["ingest_transform_validate"]
            found[grain] = [dag.timetable.expression, dag.start_date.isoformat()]
        print(json.dumps(found))
        """
    )
    start = "2012-03-05T00:00:00+00:00"
    # Weeks start on Monday like the landing partitions (Airflow's @weekly is Sunday).
    assert probe == {"day": ["0 0 * * *", start], "week": ["0 0 * * 1", start], "month": ["0 0 1 * *", start]}
