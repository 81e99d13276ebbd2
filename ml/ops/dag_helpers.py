"""What the DAG files share at parse time and in their tasks: intervals, run ids, XCom JSON.

The DAG processor imports every DAG file again and again, so this module imports only the
standard library, Airflow's Task SDK and ``ml.core`` modules that do the same (settings, calendar).
The real Airflow runner for the demo and the tests is apart, in ``ml.ops.local_airflow``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any


def utc_midnight(day: str | date) -> datetime:
    """``YYYY-MM-DD`` (or a date) as an aware UTC datetime at midnight, for DAG start/end dates."""
    parsed = date.fromisoformat(day) if isinstance(day, str) else day
    return datetime(parsed.year, parsed.month, parsed.day, tzinfo=UTC)


def _as_day(value: Any, what: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip()[:10])
        except ValueError:
            raise ValueError(f"{what} must be a date written YYYY-MM-DD, got {value!r}") from None
    raise ValueError(f"{what} must be a date written YYYY-MM-DD, got {value!r}")


def resolve_interval(
    params: Mapping[str, Any] | None,
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
) -> tuple[date, date]:
    """The half-open data interval ``[start, end)`` a run processes.

    Scheduled and backfill runs use their data interval. A manual run (which in Airflow 3 may have
    no logical date and no data interval at all) names its interval in the run conf as
    ``interval_start``/``interval_end`` (``YYYY-MM-DD``); that is how the history is bootstrapped
    in one run. The wall clock is never consulted, so a rerun processes the same partitions.

    Args:
        params: the run's params (DAG params merged with the trigger conf).
        data_interval_start: the run's ``data_interval_start`` (may be ``None``).
        data_interval_end: the run's ``data_interval_end`` (may be ``None``).

    Returns:
        ``(start, end)`` as dates, ``start < end``.

    Raises:
        ValueError: only one of the conf bounds is given, a bound is not a date, the interval is
            empty, or a manual run names no interval.
    """
    params = params or {}
    conf_start, conf_end = params.get("interval_start"), params.get("interval_end")
    if conf_start or conf_end:
        if not (conf_start and conf_end):
            raise ValueError(
                "give both interval_start and interval_end in the run conf, "
                f"got interval_start={conf_start!r}, interval_end={conf_end!r}"
            )
        start, end = _as_day(conf_start, "interval_start"), _as_day(conf_end, "interval_end")
        source = "run conf"
    elif data_interval_start is not None and data_interval_end is not None:
        start, end = (
            _as_day(data_interval_start, "data_interval_start"),
            _as_day(data_interval_end, "data_interval_end"),
        )
        source = "data interval"
    else:
        raise ValueError(
            "this run has no data interval (a manual run in Airflow 3 has none): trigger it with "
            '-c \'{"interval_start": "YYYY-MM-DD", "interval_end": "YYYY-MM-DD"}\''
        )
    if end <= start:
        raise ValueError(f"empty data interval [{start}, {end}) from the {source}")
    return start, end


def _task_context() -> Any:
    # Imported when a task runs, not with this module: importing Airflow configures it, and the
    # local runner and the tests import this module before they point Airflow at its home.
    from airflow.sdk import get_current_context

    return get_current_context()


def context_interval() -> tuple[date, date]:
    """The running task's data interval (see :func:`resolve_interval`)."""
    context = _task_context()
    return resolve_interval(
        context.get("params"), context.get("data_interval_start"), context.get("data_interval_end")
    )


def context_run_id() -> str:
    """The running task's DAG run id (what every stage records as its lineage)."""
    return str(_task_context()["run_id"])


def jsonable(value: Any) -> Any:
    """A stage result as plain JSON: its ``as_dict()`` when it has one, else dataclass fields.

    XComs and asset-event extras must be JSON; deserialising arbitrary classes in the scheduler or
    the UI is exactly what Airflow refuses to do. Dates, paths and numpy scalars become strings or
    numbers.
    """

    def default(obj: Any) -> Any:
        if callable(getattr(obj, "as_dict", None)):
            return obj.as_dict()
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.asdict(obj)
        if callable(getattr(obj, "model_dump", None)):
            return obj.model_dump(mode="json")
        if isinstance(obj, date | datetime):
            return obj.isoformat()
        if callable(getattr(obj, "item", None)):  # numpy / pandas scalars
            return obj.item()
        if isinstance(obj, set | frozenset):
            return sorted(obj, key=str)
        return str(obj)

    return json.loads(json.dumps(value, default=default))


def publish_summary(
    run_id: str,
    start: date,
    end: date,
    ingested: Mapping[str, Any],
    raw_report: Mapping[str, Any],
    built: Mapping[str, Any],
    marts_report: Mapping[str, Any],
) -> dict[str, Any]:
    """What a marts Asset event records: the run, its interval, what was loaded, quarantined and
    built, and the dbt/GX ids a training run cites as its data lineage.

    Args:
        run_id: the Airflow run that published.
        start: first day of the interval.
        end: day after the interval.
        ingested: ``ml.data.ingest.ingest_interval``'s summary as JSON.
        raw_report: ``ml.data.quality.raw.validate_raw``'s report as JSON.
        built: ``ml.data.transform.dbt_build``'s result as JSON.
        marts_report: ``ml.data.quality.marts.validate_marts``'s report as JSON.

    Returns:
        A small JSON object (the full reports stay in the tasks' XComs).
    """
    rows: dict[str, int] = {}
    for load in ingested.get("files", []):
        key = f"{load['source']}.{load['table']}"
        rows[key] = rows.get(key, 0) + int(load["rows"])
    quarantine = {
        source: {k: counts.get(k) for k in ("landed", "accepted", "quarantined", "quarantine_rate")}
        for source, counts in (raw_report.get("sources") or {}).items()
    }
    return {
        "run_id": run_id,
        "interval_start": start.isoformat(),
        "interval_end": end.isoformat(),
        "rows_loaded": rows,
        "quarantine": quarantine,
        "dbt_invocation_id": built.get("invocation_id"),
        "dbt_target": built.get("target"),
        "dbt_status_counts": built.get("status_counts"),
        "dbt_run_results": built.get("run_results_path"),
        "marts_rows": marts_report.get("rows"),
        "marts_expectations_evaluated": marts_report.get("evaluated_expectations"),
        "gx_data_docs": marts_report.get("data_docs") or raw_report.get("data_docs"),
    }
