"""Replay cuts the shipped real data into landing partitions that add up to the whole."""

from datetime import date

import pandas as pd

from ml.core.calendar import partition_start
from ml.core.settings import Settings
from ml.data.replay import replay


def test_partition_start_by_grain() -> None:
    stamps = pd.Series(pd.to_datetime(["2013-10-09 13:45", "2013-10-31 23:59", "2013-11-01 00:00"]))
    assert partition_start(stamps, "day").dt.strftime("%Y-%m-%d").tolist() == [
        "2013-10-09",
        "2013-10-31",
        "2013-11-01",
    ]
    # 2013-10-09 is a Wednesday: its week starts Monday 2013-10-07.
    assert partition_start(stamps, "week").dt.strftime("%Y-%m-%d").tolist() == [
        "2013-10-07",
        "2013-10-28",
        "2013-10-28",
    ]
    assert partition_start(stamps, "month").dt.strftime("%Y-%m-%d").tolist() == [
        "2013-10-01",
        "2013-10-01",
        "2013-11-01",
    ]


def test_replay_window_lands_exactly_the_real_rows_of_that_window(settings: Settings) -> None:
    files = replay(settings, start=date(2013, 10, 1), end=date(2013, 12, 1), grain="month")
    names = sorted(str(p.relative_to(settings.landing_dir)) for p in files)
    assert names == [
        "beauty/interactions/2013-10-01.parquet",
        "beauty/interactions/2013-11-01.parquet",
        "beauty/items/2013-10-01.parquet",
        "beauty/items/2013-11-01.parquet",
    ]  # Online Retail II ends in 2011: nothing of it in this window
    landed = pd.concat(pd.read_parquet(p) for p in files if "interactions" in str(p))
    source = pd.read_parquet(settings.data_dir / "amazon_beauty_2014_5core" / "interactions.parquet")
    when = pd.to_datetime(source["timestamp"], unit="s")
    expected = source[(when >= "2013-10-01") & (when < "2013-12-01")]
    assert len(landed) == len(expected) > 10_000
    assert set(landed.columns) >= {"user_id", "item_id", "timestamp", "event_type", "sequence_number"}


def test_replay_of_all_retail_weeks_adds_up_to_the_dataset(settings: Settings) -> None:
    files = replay(settings, grain="week", sources=["retail"])
    assert sum(len(pd.read_parquet(p)) for p in files) == 1_044_847
    assert not list(settings.landing_dir.rglob(".*.tmp"))  # atomic writes leave no temp files
