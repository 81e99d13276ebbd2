"""CeleryExecutor for real, without containers (issue 16, item 4): the executor the compose stack
declares, on the local Redis (broker) and PostgreSQL (Airflow's metadata, Celery's results and the
warehouse), through ``ml.ops.celery_local.CeleryAirflow``.

* slow: ``ingest_transform_validate`` and then ``train_recommender`` (scheduled by the marts Asset
  event) on two months of real Beauty reviews, with two workers on ``default`` and one on ``gpu``.
  A ``default`` worker is SIGKILLed (its whole process session: pool, supervisor, task) while
  ``dbt_build`` runs on it; the scheduler notices the missing heartbeats (timeout lowered to 30 s),
  the retry runs on the other ``default`` worker and the run succeeds. The training task runs on the
  ``gpu`` worker, the rest on ``default``: the metadata DB's ``task_instance`` and
  ``task_instance_history`` rows say which worker ran which attempt.
* gate: the same stack with one worker consuming a named queue only runs a tiny DAG whose task is
  routed to that queue; it fails if the executor, the broker, the queue routing or the worker's
  Execution API path is broken.
"""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from ml.core.settings import PROJECT_DIR, Settings

INGEST, TRAIN = "ingest_transform_validate", "train_recommender"
# Two monthly partitions of real Beauty reviews (12,594 rows; 1,650 users with 3+ reviews).
START, END = date(2013, 8, 1), date(2013, 10, 1)
TRAIN_OVERRIDES = {
    "mode": "frozen",
    "epochs": 2,
    "val_max_cases": None,
    "hidden": 32,
    "max_len": 10,
    "progress": False,
}
HEARTBEAT_TIMEOUT_S = 30


def _wait_for_task_on_worker(
    airflow: Any, dag_id: str, run_id: str, task_id: str, timeout: float = 900.0
) -> str:
    """Wait until ``task_id`` runs and a worker has claimed it; the worker's name (its hostname)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ti in airflow.task_instances(dag_id, run_id):
            if ti["task_id"] == task_id and ti["state"] == "running" and ti.get("hostname"):
                return str(ti["hostname"])
            if ti["task_id"] == task_id and ti["state"] in {"success", "failed", "upstream_failed"}:
                pytest.fail(f"{task_id} ended ({ti['state']}) before the test saw it running")
        time.sleep(0.5)
    pytest.fail(f"{task_id} of {run_id} was not running on a worker within {timeout:.0f} s")


def _wait_for_new_run(airflow: Any, dag_id: str, timeout: float = 300.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = airflow.runs(dag_id)
        if runs:
            return str(runs[-1]["dag_run_id"])
        time.sleep(2.0)
    pytest.fail(f"no run of {dag_id} was created within {timeout:.0f} s")


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(3600)
def test_ingest_and_training_on_celery_survive_a_killed_worker(tmp_path: Path, own_pg_database: str) -> None:
    from ml import registry
    from ml.data.replay import replay
    from ml.ops.celery_local import CeleryAirflow, metadata_url, throwaway_metadata_db

    timings: dict[str, float] = {}
    started = time.monotonic()
    with throwaway_metadata_db() as metadata_dsn:
        settings = Settings(
            work_dir=tmp_path / "work",
            data_dir=PROJECT_DIR / "data",
            warehouse="postgres",
            postgres_dsn=own_pg_database,
            airflow_database_url=metadata_url(metadata_dsn),
            partition_grain="month",
            sources={"beauty": "catalog"},
            replay_history_end=START.isoformat(),  # the DAGs' start_date
            pii_salt="test-salt",  # type: ignore[arg-type]
            training_queue="gpu",
            train_max_users=150,
            train_overrides=TRAIN_OVERRIDES,
            baselines=["popularity"],
        )
        assert replay(settings, start=START, end=END), "nothing landed for the test interval"
        with CeleryAirflow(settings, heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S, progress=False) as airflow:
            timings.update(airflow.timings)
            assert airflow.env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
            assert airflow.broker_url and airflow.broker_url.startswith("redis://127.0.0.1:6379/")
            assert airflow.worker_queues() == {
                "default-1": ["default"],
                "default-2": ["default"],
                "gpu-1": ["gpu"],
            }
            for dag_id in (INGEST, TRAIN):
                airflow.wait_for_dag(dag_id)
                airflow.unpause(dag_id)

            mark = time.monotonic()
            run_id = airflow.trigger(
                INGEST, conf={"interval_start": START.isoformat(), "interval_end": END.isoformat()}
            )
            victim = _wait_for_task_on_worker(airflow, INGEST, run_id, "dbt_build")
            assert victim in {"default-1", "default-2"}
            survivor = ({"default-1", "default-2"} - {victim}).pop()
            killed = airflow.kill_worker(victim)
            killed_at = time.monotonic() - mark
            assert len(killed) >= 3, killed  # worker, its pool process, the task supervisor (+ the task)
            [ingest_run] = airflow.wait_for_runs(INGEST, run_ids=[run_id], timeout=1800)
            timings["ingest_run_s"] = time.monotonic() - mark
            assert ingest_run["state"] == "success"

            ingest_attempts = airflow.attempts(INGEST, run_id)
            dbt = [a for a in ingest_attempts if a["task_id"] == "dbt_build"]
            # Attempt 1 died with its worker (the scheduler failed it for want of heartbeats);
            # attempt 2 ran on the other default worker and succeeded.
            assert [(a["try_number"], a["hostname"]) for a in dbt] == [(1, victim), (2, survivor)], dbt
            assert [a["state"] for a in dbt] == ["failed", "success"], dbt
            assert {a["queue"] for a in ingest_attempts} == {"default"}, ingest_attempts
            assert {a["hostname"] for a in ingest_attempts} <= {"default-1", "default-2"}, ingest_attempts
            events = [
                e for e in airflow.asset_events("shopflow_marts", INGEST) if e["source_run_id"] == run_id
            ]
            assert len(events) == 1 and events[0]["extra"]["dbt_target"] == "postgres", events
            assert events[0]["extra"]["rows_loaded"]["beauty.interactions"] == 12_594

            # The marts event schedules training (no champion yet).
            mark = time.monotonic()
            train_run_id = _wait_for_new_run(airflow, TRAIN)
            [train_run] = airflow.wait_for_runs(TRAIN, run_ids=[train_run_id], timeout=2400)
            timings["train_run_s"] = time.monotonic() - mark
            assert train_run["state"] == "success"
            train_attempts = airflow.attempts(TRAIN, train_run_id)
            where = {a["task_id"]: (a["queue"], a["hostname"], a["state"]) for a in train_attempts}
            assert where["train"] == ("gpu", "gpu-1", "success"), where
            others = {task: w for task, w in where.items() if task != "train"}
            # With the victim dead, every other task ran on the one default worker left.
            assert {w[:2] for w in others.values()} == {("default", survivor)}, where
            assert {w[2] for w in others.values()} == {"success"}, where
            celery_ids = {a["external_executor_id"] for a in ingest_attempts + train_attempts}
            assert None not in celery_ids and len(celery_ids) == len(ingest_attempts + train_attempts)
        timings["total_s"] = time.monotonic() - started
        assert registry.champion(settings) is not None

    print(
        f"celery run: victim {victim} (killed {len(killed)} processes {killed_at:.0f} s into the run), "
        f"retry on {survivor}; ingest attempts "
        f"{[(a['task_id'], a['try_number'], a['hostname'], a['state']) for a in ingest_attempts]}; "
        f"train attempts {[(a['task_id'], a['hostname']) for a in train_attempts]}; "
        f"timings { {k: round(v, 1) for k, v in timings.items()} }"
    )


@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_a_worker_takes_an_airflow_workload_from_its_named_queue_only(tmp_path: Path) -> None:
    """One real ``airflow celery worker`` consuming a named queue, the real Redis broker and the
    PostgreSQL result backend: a workload sent to that queue is taken, decoded and handed to
    Airflow's task supervisor, which calls the Execution API server it was given (a closed port
    here: the whole scheduler + API server stack is the slow test's, ~2 min to start); a workload
    sent to a queue nobody consumes stays queued. Breaks if the provider, the broker, the result
    backend's driver or the queue routing does."""
    import uuid

    from celery import Celery
    from celery.result import AsyncResult

    from ml.core.net import free_port
    from ml.ops.celery_local import (
        CeleryWorker,
        celery_env,
        claim_broker_db,
        metadata_url,
        release_broker_db,
        start_worker_process,
        throwaway_metadata_db,
        worker_queues,
    )
    from ml.ops.local_airflow import _stop_sessions, airflow_env

    queue, name = f"gate-{uuid.uuid4().hex[:6]}", "gate-1"
    closed_port = free_port()  # nothing listens there: the supervisor's call to it must fail
    db = claim_broker_db(owner=f"test:{tmp_path}")
    broker = f"redis://127.0.0.1:6379/{db}"
    worker_process = None
    try:
        with throwaway_metadata_db(prefix="shopflow_celery_gate") as dsn:
            settings = Settings(
                work_dir=tmp_path / "work",
                airflow_database_url=metadata_url(dsn),
                pii_salt="x",  # type: ignore[arg-type]
            )
            env = airflow_env(
                settings,
                api_port=closed_port,
                extra={
                    **celery_env(metadata_url(dsn), broker),
                    "AIRFLOW__WORKERS__EXECUTION_API_RETRIES": "0",
                },
            )
            home = Path(env["AIRFLOW_HOME"])
            worker_process = start_worker_process(
                CeleryWorker(name, (queue,)), env, home / "worker.log", cwd=tmp_path
            )
            started = time.monotonic()
            # Built while the worker starts (both import Airflow: most of this test's time).
            workloads = {q: _workload(q) for q in ("nobody", queue)}
            app = Celery("gate", broker=broker, backend=env["AIRFLOW__CELERY__RESULT_BACKEND"])
            task = "execute_workload"  # the name the provider registers the task under
            stray = app.send_task(task, args=[workloads["nobody"]], queue="nobody")
            sent = app.send_task(task, args=[workloads[queue]], queue=queue)
            # The messages wait in Redis until the worker is up (an airflow CLI start: most of the time).
            try:
                sent.get(timeout=120, propagate=False)
            except TimeoutError:
                pytest.fail(
                    f"no result in 120 s; worker log {home / 'worker.log'}:\n{_tail(home / 'worker.log')}"
                )
            took = time.monotonic() - started
            assert worker_process.poll() is None, (home / "worker.log").read_text()[-3000:]
            assert worker_queues(broker)[name] == [queue]
            log = (home / "worker.log").read_text()
            assert sent.state == "FAILURE", (sent.state, log[-3000:])
            # Decoded as Airflow's workload and run by its supervisor, against the configured server.
            assert "Executing workload in Celery" in log and str(_TI_IDS[queue]) in log, log[-3000:]
            assert "supervis" in str(sent.traceback), sent.traceback
            assert "ConnectError" in str(sent.traceback), sent.traceback  # the closed API port
            # The workload on the other queue was not taken by this worker.
            assert AsyncResult(stray.id, app=app).state == "PENDING"
            app.close()
            print(f"celery gate: worker start + workload round trip {took:.1f} s")
    finally:
        if worker_process is not None:
            _stop_sessions([worker_process.pid], grace=3.0)  # nothing to finish: it is idle
        release_broker_db("redis://127.0.0.1:6379", db)


_TI_IDS: dict[str, Any] = {}


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def _workload(queue: str) -> str:
    """An Airflow ``ExecuteTask`` workload as the CeleryExecutor sends it (JSON)."""
    import uuid

    from airflow.executors.workloads import BundleInfo, ExecuteTask
    from airflow.executors.workloads.task import TaskInstanceDTO

    ti_id = _TI_IDS.setdefault(queue, uuid.uuid4())
    ti = TaskInstanceDTO(
        id=ti_id, task_id="probe", dag_id="celery_gate", run_id="gate", try_number=1,
        dag_version_id=uuid.uuid4(), queue=queue, pool_slots=1, priority_weight=1,
    )  # fmt: skip
    workload = ExecuteTask(
        ti=ti, dag_rel_path=Path("celery_gate.py"), bundle_info=BundleInfo(name="dags-folder"),
        token="not-a-token", log_path=f"celery_gate/{queue}.log",
    )  # fmt: skip
    return workload.model_dump_json()


def test_parallel_runs_claim_different_broker_databases_and_release_them() -> None:
    """Two runs on one Redis never share a broker database (they would take each other's tasks);
    a released database is empty and can be claimed again."""
    import redis

    from ml.ops.celery_local import BROKER_CLAIM_KEY, REDIS_URL, claim_broker_db, release_broker_db

    first = claim_broker_db(owner="test-first")
    try:
        second = claim_broker_db(owner="test-second")
        try:
            assert first != second
            client = redis.Redis.from_url(REDIS_URL, db=first)
            assert client.get(BROKER_CLAIM_KEY) == b"test-first"
            assert 0 < int(client.ttl(BROKER_CLAIM_KEY)) <= 6 * 3600  # a crashed run's claim expires
            client.close()
        finally:
            release_broker_db(REDIS_URL, second)
    finally:
        release_broker_db(REDIS_URL, first)
    client = redis.Redis.from_url(REDIS_URL, db=first)
    assert client.dbsize() == 0
    client.close()


def test_celery_needs_a_postgres_metadata_db_and_names_the_setting(tmp_path: Path) -> None:
    from ml.ops.celery_local import CeleryAirflow, celery_env

    with pytest.raises(ValueError, match="airflow_database_url"):
        celery_env("sqlite:////tmp/airflow.db", "redis://127.0.0.1:6379/9")
    with pytest.raises(ValueError, match="SHOPFLOW_AIRFLOW_DATABASE_URL"):
        CeleryAirflow(Settings(work_dir=tmp_path, pii_salt="x"))  # type: ignore[arg-type]
    env = celery_env(
        "postgresql+psycopg2://postgres@127.0.0.1:5432/m", "redis://127.0.0.1:6379/9", heartbeat_timeout_s=30
    )
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+postgresql+psycopg2://postgres@127.0.0.1:5432/m"
    assert env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"] == "30"
    assert "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT" not in celery_env(
        "postgresql://postgres@127.0.0.1:5432/m", "redis://127.0.0.1:6379/9"
    )  # Airflow's 300 s unless asked
