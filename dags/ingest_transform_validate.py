"""
### ingest_transform_validate

One run turns one **data interval** `[start, end)` of landing files into validated marts:

1. **ingest** - load the interval's landing partitions into `raw.*` (replacing those partitions);
   an interval with no landing files skips the rest of the run (nothing would change).
2. **validate_raw** - Great Expectations on the new raw rows; failing rows go to
   `quarantine.rows` with their reason, and the run stops if a source quarantines more than
   `SHOPFLOW_MAX_QUARANTINE_RATE` of its rows.
3. **dbt_build** - `dbt build` (models + tests); staging drops quarantined rows.
4. **validate_marts** - table-level expectations on the marts; a failure blocks publishing.
5. **publish** - emits the `shopflow_marts` Asset event that schedules training.

**Interval.** Scheduled and backfill runs process their data interval (one landing partition of
`SHOPFLOW_PARTITION_GRAIN`). A manual run has no data interval in Airflow 3: give one in the conf,
e.g. the history bootstrap `{"interval_start": "2000-01-01", "interval_end": "2013-10-01"}`.
Every task replaces exactly its interval's partitions, so a rerun changes nothing.

**Replaying history** is a backfill (`catchup` is off), one run per interval whose start (the
logical date) is in the inclusive range, here October to December 2013:
`airflow backfill create --dag-id ingest_transform_validate --from-date 2013-10-01 --to-date 2013-12-01
--max-active-runs 1`. Runs touch the same marts, hence `max_active_runs=1` on the DAG; a backfill
counts its own runs against its own limit (default 10), hence the flag.

The DAG has no `end_date`: a task whose logical date is past it never runs, which would stall a
backfill of later intervals. On unpause the scheduler therefore creates a run for the latest
interval, which finds no landing files and skips.

Each task is one call into the `ml` package; heavy libraries are imported inside the tasks so the
DAG processor parses this file quickly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from ml.core.calendar import grain_cron
from ml.core.settings import get_settings
from ml.ops.dag_helpers import (
    context_interval,
    context_run_id,
    jsonable,
    publish_summary,
    utc_midnight,
)
from shopflow_assets import MARTS

DAG_ID = "ingest_transform_validate"
_settings = get_settings()


@contextmanager
def _fail_without_retry(*data_errors: type[Exception]) -> Iterator[None]:
    """Bad data fails the same way on every attempt: fail the task at once instead of retrying.

    Other errors (a locked warehouse file, a killed process) keep the task's retry.
    """
    fail_fast: tuple[type[Exception], ...] = (ValueError, *data_errors)  # ValueError: contracts, intervals
    try:
        yield
    except fail_fast as error:
        raise AirflowFailException(f"{type(error).__name__}: {error}") from error


@dag(
    dag_id=DAG_ID,
    # A data-interval timetable: Airflow 3 turns a bare cron string into a CronTriggerTimetable,
    # whose runs have an empty interval (start == end).
    schedule=CronDataIntervalTimetable(grain_cron(_settings.partition_grain), timezone="UTC"),
    start_date=utc_midnight(_settings.replay_history_end),
    catchup=False,
    max_active_runs=1,
    tags=["shopflow", "ingest", "dbt", "great-expectations"],
    default_args={
        "owner": "shopflow-data",
        "retries": 1,
        "retry_delay": timedelta(seconds=20),
        # The history bootstrap is the longest task (all data before the replay window, 2 cores).
        "execution_timeout": timedelta(hours=2),
    },
    params={
        "interval_start": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Manual runs only: first day of the interval (YYYY-MM-DD).",
        ),
        "interval_end": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Manual runs only: day after the interval (YYYY-MM-DD, exclusive).",
        ),
    },
    doc_md=__doc__,
)
def ingest_transform_validate() -> None:
    @task
    def ingest() -> dict[str, Any]:
        """Load the interval's landing partitions into `raw.*`, replacing them
        (`ml.data.ingest.ingest_interval`).

        A landing file that breaks its contract fails the task without retry and writes nothing.
        """
        from ml.data.ingest import ingest_interval

        with _fail_without_retry():
            start, end = context_interval()
            summary = ingest_interval(start, end, context_run_id())
        if not summary.files:
            # Nothing landed for this interval, so the marts would not change: skip the rest
            # rather than rebuild and publish (which would start a pointless training run).
            raise AirflowSkipException(f"no landing partitions in [{start}, {end})")
        return dict(jsonable(summary))

    @task
    def validate_raw() -> dict[str, Any]:
        """Run the raw Great Expectations suites on the interval and quarantine failing rows
        (`ml.data.quality.raw.validate_raw`); stop when a source's quarantine rate passes the gate
        (`ml.data.quality.raw.check_quarantine_gate`)."""
        from ml.data.quality.gx import QualityCheckError, QualityGateError
        from ml.data.quality.raw import check_quarantine_gate
        from ml.data.quality.raw import validate_raw as run_validate_raw

        with _fail_without_retry(QualityGateError, QualityCheckError):
            start, end = context_interval()
            report = run_validate_raw(start, end, context_run_id())
            check_quarantine_gate(report)
        return dict(jsonable(report))

    @task
    def dbt_build() -> dict[str, Any]:
        """`dbt build` the project - models, data tests, unit tests - on the warehouse
        (`ml.data.transform.dbt_build`)."""
        from ml.data.transform import DbtBuildError
        from ml.data.transform import dbt_build as run_dbt_build

        with _fail_without_retry(DbtBuildError):
            return dict(jsonable(run_dbt_build(context_run_id())))

    @task
    def validate_marts() -> dict[str, Any]:
        """Table-level Great Expectations checks on the marts (`ml.data.quality.marts.validate_marts`).

        A failure blocks `publish`, so no downstream DAG trains on a bad mart.
        """
        from ml.data.quality.gx import QualityCheckError, QualityGateError
        from ml.data.quality.marts import validate_marts as run_validate_marts

        with _fail_without_retry(QualityGateError, QualityCheckError):
            return dict(jsonable(run_validate_marts(context_run_id())))

    @task(outlets=[MARTS])
    def publish(
        ingested: dict[str, Any],
        raw_report: dict[str, Any],
        built: dict[str, Any],
        marts_report: dict[str, Any],
    ) -> dict[str, Any]:
        """Emit the `shopflow_marts` Asset event; its `extra` records the interval, the rows loaded
        and the dbt/GX run ids, so the training run can name the data it trained on."""
        start, end = context_interval()
        summary = publish_summary(context_run_id(), start, end, ingested, raw_report, built, marts_report)
        get_current_context()["outlet_events"][MARTS].extra = summary
        return summary

    ingested = ingest()
    raw_report = validate_raw()
    built = dbt_build()
    marts_report = validate_marts()
    ingested >> raw_report >> built >> marts_report
    # At parse time the arguments are XComArgs; at run time, the upstream tasks' return values.
    publish(ingested, raw_report, built, marts_report)  # type: ignore[arg-type]


ingest_transform_validate()
