"""Ingest: exactly one interval's partitions, idempotent, and bad input never half-writes."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from ml.core.settings import Settings
from ml.core.warehouse import Warehouse
from ml.data.ingest import ContractError, ingest_interval
from ml.data.replay import replay

OCT, NOV, DEC = date(2024, 10, 1), date(2024, 11, 1), date(2024, 12, 1)


@pytest.fixture
def shop(settings: Settings) -> Settings:
    """A bring-your-own-data source 'shop' following the catalog contract."""
    return settings.model_copy(update={"sources": {"shop": "catalog"}})


def land(settings: Settings, table: str, day: str, text: str, suffix: str = ".csv") -> Path:
    path = settings.landing_dir / "shop" / table / f"{day}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


GOOD_OCT = (
    "user_id,item_id,timestamp,event_type,review_text\n"
    "u1,i1,2024-10-02T10:00:00,view,\n"
    "u1,i2,2024-10-03T11:00:00,purchase,write to ann@shop.com\n"
    "u2,i1,1727949600,view,\n"
)


def raw_rows(settings: Settings, table: str = "interactions") -> pd.DataFrame:
    warehouse = Warehouse(settings)
    if not warehouse.table_exists(f"raw.{table}"):
        return pd.DataFrame()
    return warehouse.read(f"select * from raw.{table} order by _row_id")


def test_loads_only_the_interval_and_hashes_and_scrubs(shop: Settings) -> None:
    land(shop, "interactions", "2024-10-01", GOOD_OCT)
    land(shop, "interactions", "2024-11-01", GOOD_OCT.replace("2024-10", "2024-11"))  # the future
    summary = ingest_interval(OCT, NOV, "run-oct", shop)

    assert summary.rows_by_table == {"shop.interactions": 3}
    rows = raw_rows(shop)
    assert len(rows) == 3 and set(rows["_partition"].astype(str)) == {"2024-10-01"}
    assert rows["_row_id"].tolist() == [f"shop/interactions/2024-10-01/{i}" for i in range(3)]
    assert "u1" not in set(rows["user_id"]) and rows["user_id"].nunique() == 2
    assert rows["review_text"].tolist()[1] == "write to [email]"
    assert rows["event_ts"].astype(str).tolist()[2] == "2024-10-03 10:00:00"  # unix seconds parsed
    audit = Warehouse(shop).read("select * from raw.ingest_audit")
    assert audit[["rows_landed", "rows_loaded"]].values.tolist() == [[3, 3]]


def test_rerun_of_a_partition_changes_nothing(shop: Settings) -> None:
    land(shop, "interactions", "2024-10-01", GOOD_OCT)
    ingest_interval(OCT, NOV, "run-1", shop)
    first = raw_rows(shop).drop(columns=["_run_id", "_loaded_at"])
    ingest_interval(OCT, NOV, "run-2", shop)
    again = raw_rows(shop).drop(columns=["_run_id", "_loaded_at"])
    pd.testing.assert_frame_equal(first, again)


def test_interval_without_files_is_a_no_op(shop: Settings) -> None:
    assert ingest_interval(OCT, NOV, "run-empty", shop).files == []
    assert raw_rows(shop).empty


def test_empty_partition_loads_zero_rows_and_is_audited(shop: Settings) -> None:
    land(shop, "interactions", "2024-10-01", "user_id,item_id,timestamp\n")
    summary = ingest_interval(OCT, NOV, "run-0", shop)
    assert summary.rows_by_table == {"shop.interactions": 0}
    audit = Warehouse(shop).read("select rows_landed from raw.ingest_audit")
    assert audit["rows_landed"].tolist() == [0]


def test_duplicate_rows_are_kept_for_the_quality_gate(shop: Settings) -> None:
    line = "u1,i1,2024-10-02T10:00:00\n"
    land(shop, "interactions", "2024-10-01", "user_id,item_id,timestamp\n" + line * 3)
    ingest_interval(OCT, NOV, "run-dup", shop)
    assert len(raw_rows(shop)) == 3  # nothing dropped silently: GX quarantines the copies


@pytest.mark.parametrize(
    ("text", "column", "row", "fragment"),
    [
        (
            "user_id,item,timestamp\nu1,i1,2024-10-02\n",
            "item_id",
            None,
            "missing required column(s) ['item_id']",
        ),
        ("user_id,item_id,timestamp\nu1,i1,2024-10-02\nu2,i2,yesterday\n", "timestamp", 1, "'yesterday'"),
        (
            "user_id,item_id,timestamp,rating\nu1,i1,2024-10-02,4\nu1,i2,2024-10-02,five\n",
            "rating",
            1,
            "'five'",
        ),
        ("user_id,item_id,timestamp,sequence_number\nu1,i1,2024-10-02,1.5\n", "sequence_number", 0, "1.5"),
    ],
)
def test_contract_violation_names_file_column_row_and_writes_nothing(
    shop: Settings, text: str, column: str, row: int | None, fragment: str
) -> None:
    land(shop, "interactions", "2024-10-01", GOOD_OCT)  # a good file in the same interval...
    bad = land(shop, "interactions", "2024-10-15", text)
    with pytest.raises(ContractError) as caught:
        ingest_interval(OCT, NOV, "run-bad", shop)
    error = caught.value
    assert error.file == bad and error.column == column and error.row == row
    assert str(bad) in str(error) and fragment in str(error)
    assert raw_rows(shop).empty  # ...is not written either


def test_malformed_csv_and_corrupt_parquet_are_named(shop: Settings) -> None:
    bad_csv = land(shop, "interactions", "2024-10-01", 'user_id,item_id,timestamp\n"u1,i1,2024-10-02\n')
    with pytest.raises(ContractError, match="cannot be read as CSV") as caught:
        ingest_interval(OCT, NOV, "run-csv", shop)
    assert caught.value.file == bad_csv
    bad_csv.unlink()
    corrupt = land(shop, "interactions", "2024-10-01", "PAR1 this is not parquet", suffix=".parquet")
    with pytest.raises(ContractError, match="cannot be read as PARQUET") as caught:
        ingest_interval(OCT, NOV, "run-pq", shop)
    assert caught.value.file == corrupt
    assert raw_rows(shop).empty


def test_badly_named_landing_file_is_rejected(shop: Settings) -> None:
    land(shop, "interactions", "october", GOOD_OCT)
    with pytest.raises(ContractError, match="YYYY-MM-DD"):
        ingest_interval(OCT, NOV, "run-name", shop)


def test_failed_rerun_keeps_the_previous_good_load(shop: Settings) -> None:
    good = land(shop, "interactions", "2024-10-01", GOOD_OCT)
    ingest_interval(OCT, NOV, "run-good", shop)
    good.write_text("user_id,item_id,timestamp\nu1,i1,not-a-date\n")
    with pytest.raises(ContractError):
        ingest_interval(OCT, NOV, "run-broken", shop)
    assert len(raw_rows(shop)) == 3 and set(raw_rows(shop)["_run_id"]) == {"run-good"}


def test_items_categories_are_normalised_to_a_path(shop: Settings) -> None:
    land(
        shop,
        "items",
        "2024-10-01",
        "item_id,title,categories,price\n"
        "i1,Lipstick,\"'Beauty', 'Makeup', 'Lips'\",9.5\n"
        "i2,Comb,Beauty|Tools,\n",
    )
    ingest_interval(OCT, NOV, "run-items", shop)
    items = raw_rows(shop, "items")
    assert items["categories"].tolist() == ["Beauty > Makeup > Lips", "Beauty > Tools"]
    assert items["price"].isna().tolist() == [False, True]


def test_real_online_retail_month_lands_every_line(settings: Settings) -> None:
    replay(settings, start=date(2010, 12, 1), end=date(2011, 1, 1), grain="week", sources=["retail"])
    summary = ingest_interval(date(2010, 12, 1), date(2011, 1, 1), "run-retail", settings)
    source = pd.read_parquet(settings.data_dir / "uci_online_retail_ii" / "online_retail_ii.parquet")
    week = source["InvoiceDate"].dt.normalize() - pd.to_timedelta(source["InvoiceDate"].dt.weekday, unit="D")
    expected = int(((week >= "2010-12-01") & (week < "2011-01-01")).sum())
    assert summary.rows_by_table == {"retail.invoice_lines": expected}
    guests = Warehouse(settings).scalar("select count(*) from raw.invoice_lines where customer_id is null")
    assert guests == int(
        source.loc[(week >= "2010-12-01") & (week < "2011-01-01"), "CustomerID"].isna().sum()
    )


@pytest.mark.postgres
def test_postgres_ingest_is_idempotent_too(pg_settings: Settings) -> None:
    shop = pg_settings.model_copy(update={"sources": {"shop": "catalog"}})
    land(shop, "interactions", "2024-10-01", GOOD_OCT)
    ingest_interval(OCT, NOV, "pg-1", shop)
    ingest_interval(OCT, NOV, "pg-2", shop)
    rows = Warehouse(shop).read("select * from raw.interactions where source = 'shop'")
    assert len(rows) == 3 and set(rows["_run_id"]) == {"pg-2"}
