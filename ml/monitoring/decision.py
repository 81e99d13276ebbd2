"""From a monitoring result to an action (retrain, alert only, nothing), its record, and the alert.

The decision honours the in-flight limit (no second retraining while one runs) and the cool-down;
every decision is a row of ``monitoring.runs`` and goes to the notifier (log, optional webhook).

**The cool-down counts in data-interval time.** It is measured between the *ends of the monitored
intervals* (``monitoring.runs.interval_end``, written by every run since the table exists), not
between the wall-clock times the decisions were taken (``decided_at``, kept as a record). So a
backfill of a year decides as a year in production would: a monthly interval that alarms a month
after the last retraining may retrain again, however fast the backfill runs, while the same interval
monitored twice (or two intervals closer than the cool-down) retrains once. A retraining triggered
for data on *either* side counts: a backfill that runs out of order, or a rerun of an old interval,
is held off by a retraining for nearby data too.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd

from ml.core.settings import Settings, get_settings
from ml.core.warehouse import Warehouse
from ml.monitoring.run import MonitorResult

log = logging.getLogger(__name__)


# -- decision --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    action: str
    """'retrain' (trigger train_recommender and alert), 'alert' (alarms, retraining suppressed) or 'none'."""
    reason: str
    alarms: list[str]


def decide(
    alarms: list[str],
    settings: Settings,
    in_flight: int,
    last_retrain_at: datetime | date | None,
    interval_end: datetime | date,
) -> Decision:
    """What to do about a monitoring result.

    Args:
        alarms: :meth:`MonitorResult.alarms`.
        in_flight: train_recommender runs queued or running now.
        last_retrain_at: the end of the monitored interval whose run triggered the retraining
            nearest to this one (:func:`last_retrain_at`; None: never).
        interval_end: the end of the monitored interval: the cool-down
            (``retrain_cooldown_minutes``) counts in data-interval time, not wall-clock time.
    """
    if not alarms:
        return Decision("none", "no drift, online quality fine", [])
    why = "; ".join(alarms)
    if in_flight:
        return Decision(
            "alert", f"{why} - retraining not triggered: {in_flight} training run(s) in flight", alarms
        )
    cooldown = timedelta(minutes=settings.retrain_cooldown_minutes)
    if last_retrain_at is not None:
        last, end = _utc(last_retrain_at), _utc(interval_end)
        if abs(end - last) < cooldown:
            until = (last + cooldown).isoformat(timespec="minutes")
            return Decision(
                "alert",
                f"{why} - retraining not triggered: cool-down until {until} in data-interval time "
                f"(a retraining was triggered for the interval ending {last.isoformat(timespec='minutes')})",
                alarms,
            )
    return Decision("retrain", why, alarms)


def _utc(value: datetime | date) -> datetime:
    """An aware UTC datetime; a date is its midnight (interval bounds are days)."""
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def last_retrain_at(
    settings: Settings, interval_end: datetime | date | None = None, run_id: str | None = None
) -> datetime | None:
    """The end of the monitored interval whose run last triggered a retraining (``monitoring.runs``).

    Args:
        interval_end: the interval being decided: the retraining whose interval end is nearest
            to it, on either side (None: the latest).
        run_id: this run, whose own earlier row is left out, so that a rerun decides as the
            first attempt did.
    """

    warehouse = Warehouse(settings)
    if not warehouse.table_exists("monitoring.runs"):
        return None
    ends = warehouse.read(
        "select run_id, interval_end from monitoring.runs where action = 'retrain' "
        "and interval_end is not null"
    )
    if run_id is not None:
        ends = ends[ends["run_id"] != run_id]
    if ends.empty:
        return None
    instants = [_utc(pd.Timestamp(value).to_pydatetime()) for value in ends["interval_end"]]
    if interval_end is None:
        return max(instants)
    end = _utc(interval_end)
    return min(instants, key=lambda instant: (abs(instant - end), instant))


def record_run(result: MonitorResult, decision: Decision, settings: Settings, now: datetime) -> None:
    """Replace this run's row in ``monitoring.runs`` (a rerun overwrites it).

    ``now`` is the wall-clock time of the decision (``decided_at``, a record); the cool-down reads
    the row's ``interval_end`` (:func:`last_retrain_at`).
    """

    warehouse = Warehouse(settings)
    row = {
        "run_id": result.run_id,
        "interval_start": pd.Timestamp(result.interval_start).date(),
        "interval_end": pd.Timestamp(result.interval_end).date(),
        "model_version": result.model_version,
        "data_drift_share": result.data.share if result.data else None,
        "data_drifted": int(result.data.drifted) if result.data else None,
        "prediction_drift_share": result.prediction.share if result.prediction else None,
        "prediction_drifted": int(result.prediction.drifted) if result.prediction else None,
        "online_hit_rate": result.online.hit_rate if result.online else None,
        "online_requests": result.online.judged if result.online else None,
        "expected_hit_rate": result.online.expected if result.online else None,
        "action": decision.action,
        "reason": decision.reason,
        "report_dir": result.report_dir,
        "decided_at": now.astimezone(UTC).replace(tzinfo=None),
    }
    with warehouse.connect() as con:
        warehouse.ensure_tables(con)
        warehouse.execute(con, "delete from monitoring.runs where run_id = :run", {"run": result.run_id})
        warehouse.insert(con, "monitoring.runs", pd.DataFrame([row]))


def monitoring_runs(settings: Settings | None = None) -> pd.DataFrame:
    """Every recorded monitoring run, in decision order."""

    warehouse = Warehouse(settings or get_settings())
    if not warehouse.table_exists("monitoring.runs"):
        return pd.DataFrame()
    return warehouse.read("select * from monitoring.runs order by decided_at")


# -- alerts ----------------------------------------------------------------------------------------
def notify(decision: Decision, result: MonitorResult, settings: Settings) -> dict[str, Any]:
    """Send the alert: always to the log; also as JSON to ``alert_webhook_url`` when set.

    A webhook that fails is logged and reported (``webhook_error``), never raised: the alert is
    already in the log and in ``monitoring.runs``, and retraining must not wait on a chat server.
    """
    payload = {
        "text": f"ShopFlow monitoring {result.run_id}: {decision.action} - {decision.reason}",
        "action": decision.action,
        "reason": decision.reason,
        "alarms": decision.alarms,
        "model_version": result.model_version,
        "interval": [result.interval_start, result.interval_end],
        "report_dir": result.report_dir,
        "fingerprint": hashlib.sha256(f"{result.run_id}:{decision.action}".encode()).hexdigest()[:16],
    }
    log.warning("ALERT %s", payload["text"])
    sent: dict[str, Any] = {"logged": True, "webhook": None}
    if settings.alert_webhook_url:
        import httpx

        try:
            response = httpx.post(settings.alert_webhook_url, json=payload, timeout=10.0)
            response.raise_for_status()
            sent["webhook"] = response.status_code
        except httpx.HTTPError as error:
            log.error("alert webhook %s failed: %s", settings.alert_webhook_url, error)
            sent["webhook_error"] = str(error)
    return sent
