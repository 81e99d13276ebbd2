"""The partition calendar: how time is cut into landing partitions, Airflow intervals and runs.

One owner for the grain arithmetic that replay (cutting files), quality (the latest partition's
end), the DAG schedules (cron) and the closed-loop demo (stepping through later months) all use.
Partitions are half-open ``[first day, next first day)``; weeks start on Monday.

DAG files import this module at parse time (through ``ml.ops.dag_helpers``), so it imports only
the standard library at module level; pandas is imported by the one function that takes a Series.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    import pandas as pd

Grain = Literal["day", "week", "month"]
GRAINS: tuple[str, ...] = get_args(Grain)

# One Airflow run per landing partition, so the cron ticks fall on the partitions' first days.
# Weekly partitions start on Monday, unlike Airflow's "@weekly" (Sunday).
GRAIN_CRON: dict[str, str] = {"day": "0 0 * * *", "week": "0 0 * * 1", "month": "0 0 1 * *"}


def check_grain(grain: str) -> Grain:
    """``grain`` itself when it is a known partition grain, else a ValueError that lists them."""
    if grain not in GRAINS:
        raise ValueError(f"unknown partition grain {grain!r}: use one of {', '.join(GRAINS)}")
    return grain  # type: ignore[return-value]


def partition_start(timestamps: pd.Series, grain: str) -> pd.Series:
    """First day of the partition each timestamp falls in (weeks start on Monday)."""
    import pandas as pd

    check_grain(grain)
    days = timestamps.dt.normalize()
    if grain == "day":
        return days
    if grain == "week":
        return days - pd.to_timedelta(days.dt.weekday, unit="D")
    return days.dt.to_period("M").dt.to_timestamp()


def partition_end(first_day: date, grain: str) -> date:
    """The exclusive end of the partition that starts on ``first_day`` (the next one's first day)."""
    check_grain(grain)
    if grain == "day":
        return first_day + timedelta(days=1)
    if grain == "week":
        return first_day + timedelta(days=7)
    return date(first_day.year + first_day.month // 12, first_day.month % 12 + 1, 1)


def partitions_between(
    start: date, end: date, grain: str, limit: int | None = None
) -> list[tuple[date, date]]:
    """``[start, end)`` cut into consecutive partition intervals (the last one clipped at ``end``)."""
    out: list[tuple[date, date]] = []
    cursor = start
    while cursor < end and (limit is None or len(out) < limit):
        following = partition_end(cursor, grain)
        out.append((cursor, min(following, end)))
        cursor = following
    return out


def grain_cron(grain: str) -> str:
    """The cron expression whose data intervals are exactly the landing partitions of ``grain``."""
    return GRAIN_CRON[check_grain(grain)]
