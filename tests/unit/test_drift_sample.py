"""The drift sample is drawn in the warehouse: same rows in DuckDB and PostgreSQL, stable, bounded."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd

from ml.core.settings import Settings
from ml.core.warehouse import Warehouse
from ml.monitoring.features import MONITORED_MART, read_interactions, read_pairs

START, END = datetime(2014, 1, 1), datetime(2014, 2, 1)


def _mart(settings: Settings) -> None:
    """A fct_monitored_interactions with 500 January rows, 50 in February and 20 of another source."""
    rows = []
    for n in range(570):
        source = "amazon_beauty" if n < 550 else "online_retail"
        when = START + timedelta(hours=n) if n < 500 else END + timedelta(hours=n - 500)
        rows.append(
            f"('{source}', 'u{n % 37}', 'i{n % 101}', timestamp '{when:%Y-%m-%d %H:%M:%S}', 4.0, 1, {n}, "
            f"'Makeup', 'Acme', 9.99, 'item {n}', timestamp '2013-01-01 00:00:00', "
            f"timestamp '2013-06-01 00:00:00', 3)"
        )
    with Warehouse(settings).connect() as con:
        cur = con.cursor()
        cur.execute("create schema if not exists marts")
        cur.execute(f"drop table if exists {MONITORED_MART}")
        cur.execute(
            f"create table {MONITORED_MART} (source varchar, user_id varchar, item_id varchar, "
            "event_ts timestamp, rating double precision, quantity integer, sequence_number integer, "
            "category varchar, brand varchar, price double precision, title varchar, "
            "item_first_ts timestamp, user_first_ts timestamp, user_events_30d integer)"
        )
        cur.execute(f"insert into {MONITORED_MART} values {', '.join(rows)}")


def _keys(frame: pd.DataFrame) -> list[tuple[str, int]]:
    return sorted(zip(frame["source"], frame["sequence_number"].astype(int), strict=True))


def test_the_sample_is_the_same_rows_in_duckdb_and_postgres(settings: Settings, own_pg_database: str) -> None:
    postgres = settings.model_copy(update={"warehouse": "postgres", "postgres_dsn": own_pg_database})
    _mart(settings)
    _mart(postgres)

    duck = read_interactions(settings, START, END, source="amazon_beauty", sample_rows=120)
    pg = read_interactions(postgres, START, END, source="amazon_beauty", sample_rows=120)

    assert len(duck) == len(pg) == 120
    assert _keys(duck) == _keys(pg)  # one rule, the same rows in both warehouses
    assert all(0 <= n < 500 for _, n in _keys(duck))  # only the window, only the source
    again = read_interactions(settings, START, END, source="amazon_beauty", sample_rows=120)
    assert _keys(again) == _keys(duck)  # a rerun of the interval compares the same rows
    everything = read_interactions(settings, START, END, source="amazon_beauty", sample_rows=10_000)
    assert len(everything) == 500  # a sample larger than the window is the window


def test_the_online_hit_rate_reads_every_pair_of_the_window(settings: Settings) -> None:
    _mart(settings)

    pairs = read_pairs(settings, START, END, source="amazon_beauty")

    assert list(pairs.columns) == ["user_id", "item_id"]
    assert len(pairs) == 500
