"""
### monitor_drift

Watches the champion for one **data interval** `[start, end)` and asks for retraining when the
world changed.

1. **load_serving_logs** - the Bento's request log lines not loaded yet → `monitoring.requests`,
   stamped with this run's id: the batch of "what was served since the last check"
   (`ml.monitoring.request_logs.load_request_logs`).
2. **compute_reports** - Evidently 0.7 reports (`ml.monitoring.run.monitor_interval`):
   *data drift* of the interval's interactions and item features against the champion's training
   reference; *prediction drift* of this batch's recommendations against the version's first batch;
   *online quality*, the hit rate of served recommendations against what those users did in the
   interval. HTML + JSON reports under `<reports_dir>/monitoring/<run id>/`, snapshots in the
   Evidently workspace (`evidently ui --workspace <work_dir>/evidently`).
3. **decide** (branch) - alarms past the thresholds in settings (`SHOPFLOW_DRIFT_SHARE_THRESHOLD`,
   `SHOPFLOW_MIN_ONLINE_HIT_RATIO`, ...) → `trigger_retraining` + `alert`; alarms while a training
   run is in flight or within `SHOPFLOW_RETRAIN_COOLDOWN_MINUTES` of the last trigger (counted between
   monitored intervals' ends: data time) → `alert` only;
   no alarm → `no_action`. Every decision is a row of `monitoring.runs`.
4. **trigger_retraining** - `TriggerDagRunOperator` on `train_recommender` with the reason and the
   report folder in its conf (run id `monitor__<this run id>`).
5. **alert** - the notifier: always the task log, and a JSON POST to `SHOPFLOW_ALERT_WEBHOOK_URL`
   when set.

**Interval.** Scheduled runs judge their data interval (one `SHOPFLOW_PARTITION_GRAIN`, like the
ingest DAG, whose run for the same interval should have published first). A manual run names its
interval in the conf: `{"interval_start": "2014-01-01", "interval_end": "2014-02-01"}`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task

from ml.core.calendar import grain_cron
from ml.core.settings import get_settings
from ml.ops.dag_helpers import context_interval, context_run_id, jsonable, utc_midnight

DAG_ID = "monitor_drift"
TRAIN_DAG = "train_recommender"
_settings = get_settings()


@dag(
    dag_id=DAG_ID,
    schedule=CronDataIntervalTimetable(grain_cron(_settings.partition_grain), timezone="UTC"),
    start_date=utc_midnight(_settings.replay_train_end),
    catchup=False,
    max_active_runs=1,
    tags=["shopflow", "monitoring", "evidently"],
    default_args={
        "owner": "shopflow-ml",
        "retries": 1,
        "retry_delay": timedelta(seconds=20),
        "execution_timeout": timedelta(minutes=30),
    },
    params={
        "interval_start": Param(
            None, type=["null", "string"], format="date", description="Manual runs: first day (YYYY-MM-DD)."
        ),
        "interval_end": Param(
            None, type=["null", "string"], format="date", description="Manual runs: day after (exclusive)."
        ),
    },
    doc_md=__doc__,
)
def monitor_drift() -> None:
    @task
    def load_serving_logs() -> dict[str, Any]:
        """New request log lines → `monitoring.requests` as this run's batch."""
        from ml.monitoring.request_logs import load_request_logs

        return load_request_logs(context_run_id()).as_dict()

    @task
    def compute_reports(loaded: dict[str, Any]) -> dict[str, Any]:  # noqa: ARG001 (orders the tasks)
        """Data drift, prediction drift and online quality (`ml.monitoring.run.monitor_interval`)."""
        from ml.monitoring.run import monitor_interval

        start, end = context_interval()
        return dict(jsonable(monitor_interval(start, end, context_run_id()).as_dict()))

    @task.branch
    def decide(result: dict[str, Any]) -> list[str]:
        """Retrain, alert only, or nothing (`ml.monitoring.decision.decide`); recorded in
        `monitoring.runs`."""
        from datetime import UTC, date, datetime

        from ml.monitoring.decision import decide, last_retrain_at, record_run
        from ml.monitoring.run import MonitorResult

        context = get_current_context()
        in_flight = context["ti"].get_dr_count(dag_id=TRAIN_DAG, states=["queued", "running"])
        # The cool-down is counted between the ends of monitored intervals (data time).
        end = date.fromisoformat(str(result["interval_end"])[:10])
        last = last_retrain_at(_settings, end, result["run_id"])
        decision = decide(result["alarms"], _settings, in_flight, last, end)
        record_run(MonitorResult.from_dict(result), decision, _settings, datetime.now(UTC))
        context["ti"].xcom_push(
            key="decision", value={**decision.__dict__, "report_dir": result["report_dir"]}
        )
        return {"retrain": ["trigger_retraining", "alert"], "alert": ["alert"]}.get(
            decision.action, ["no_action"]
        )

    @task
    def alert(result: dict[str, Any]) -> dict[str, Any]:
        """Log the alert; POST it to `SHOPFLOW_ALERT_WEBHOOK_URL` when set (`ml.monitoring.run.notify`)."""
        from ml.monitoring.decision import Decision, notify
        from ml.monitoring.run import MonitorResult

        decision = get_current_context()["ti"].xcom_pull(task_ids="decide", key="decision")
        made = Decision(decision["action"], decision["reason"], decision["alarms"])
        return notify(made, MonitorResult.from_dict(result), _settings)

    trigger_retraining = TriggerDagRunOperator(
        task_id="trigger_retraining",
        trigger_dag_id=TRAIN_DAG,
        trigger_run_id="monitor__{{ run_id }}",
        conf={
            "reason": "{{ ti.xcom_pull(task_ids='decide', key='decision')['reason'] }}",
            "report": "{{ ti.xcom_pull(task_ids='decide', key='decision')['report_dir'] }}",
        },
        # Waiting would hold a worker slot for the whole training run: the monitor only asks.
        wait_for_completion=False,
        doc_md="Start `train_recommender` with the alarms as its `reason` and the report folder.",
    )
    no_action = EmptyOperator(task_id="no_action", doc_md="No alarm: the champion keeps serving.")

    # At parse time TaskFlow calls return XComArgs that resolve to the dicts at run time.
    result = compute_reports(load_serving_logs())  # type: ignore[arg-type]
    decide(result) >> [trigger_retraining, alert(result), no_action]  # type: ignore[arg-type]


monitor_drift()
