"""`shopflow land`: a shop's own files checked against the contract and landed as partitions that
ingest loads; a bad file writes nothing; landing again merges without duplicating."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from ml.cli import app
from ml.core.schemas import INTERACTIONS, ITEMS
from ml.core.settings import PROJECT_DIR, Settings, get_settings
from ml.data.ingest import ContractError, ingest_interval, read_landing_file
from ml.data.land import LandError, land

REVIEWS = PROJECT_DIR / "data" / "amazon_reviews_2018_all_beauty_5core" / "reviews.parquet"


@pytest.fixture
def shop(settings: Settings) -> Settings:
    return settings.model_copy(update={"sources": {"shop": "catalog"}, "partition_grain": "month"})


def landing(settings: Settings) -> dict[str, bytes]:
    """Every file under the landing dir (hidden temp files included), with its content."""
    root = settings.landing_dir
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


CSV = (
    "user_id,item_id,timestamp,rating,review_text,extra\n"
    "u1,i1,2024-10-02T10:00:00,5,great,x\n"
    "u2,i2,2024-10-31T23:59:59,4,,x\n"
    "u1,i2,1730419200,3,meh,x\n"  # 2024-11-01 00:00 UTC: the next month
)


def test_csv_lands_by_month_and_ingest_loads_it(shop: Settings, tmp_path: Path) -> None:
    source = tmp_path / "export.csv"
    source.write_text(CSV)
    result = land(source, "shop", settings=shop)

    assert [(p.partition, p.added, p.total) for p in result.partitions] == [
        (date(2024, 10, 1), 2, 2),
        (date(2024, 11, 1), 1, 1),
    ]
    assert sorted(landing(shop)) == [
        "shop/interactions/2024-10-01.parquet",
        "shop/interactions/2024-11-01.parquet",
    ]
    assert result.interval == (date(2024, 10, 1), date(2024, 12, 1))
    october = pd.read_parquet(shop.landing_dir / "shop/interactions/2024-10-01.parquet")
    assert list(october.columns) == INTERACTIONS.names  # the contract's columns, extras dropped
    assert october["rating"].tolist() == [5.0, 4.0] and str(october["timestamp"].dtype) == "datetime64[us]"

    summary = ingest_interval(date(2024, 10, 1), date(2024, 12, 1), "run", shop)
    assert summary.rows_by_table == {"shop.interactions": 3}

    # The same export again: nothing new, nothing rewritten.
    before = landing(shop)
    again = land(source, "shop", settings=shop)
    assert [(p.added, p.skipped) for p in again.partitions] == [(0, 2), (0, 1)] and not again.written
    assert landing(shop) == before


def test_parquet_folder_lands_by_week(settings: Settings, tmp_path: Path) -> None:
    weekly = settings.model_copy(update={"sources": {"shop": "catalog"}, "partition_grain": "week"})
    folder = tmp_path / "exports"
    folder.mkdir()
    stamps = pd.to_datetime(["2024-10-06 23:00", "2024-10-07 01:00", "2024-10-13 12:00", "2024-10-14 00:00"])
    frame = pd.DataFrame({"user_id": ["a", "b", "c", "d"], "item_id": "i", "timestamp": stamps})
    frame.iloc[:2].to_parquet(folder / "part-0.parquet")
    frame.iloc[2:].assign(timestamp=frame["timestamp"].iloc[2:].dt.tz_localize("UTC")).to_parquet(
        folder / "part-1.parquet"
    )
    (folder / "notes.txt").write_text("not a landing file")

    result = land(folder, "shop", "interactions", settings=weekly)
    # Weeks start on Monday: 2024-10-06 is a Sunday, 10-07 and 10-14 Mondays.
    assert [(p.partition.isoformat(), p.added) for p in result.partitions] == [
        ("2024-09-30", 1),
        ("2024-10-07", 2),
        ("2024-10-14", 1),
    ]
    assert len(result.files) == 2 and result.rows == 4


def test_a_file_that_breaks_the_contract_writes_nothing(shop: Settings, tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text(CSV)
    land(good, "shop", settings=shop)
    before = landing(shop)

    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "a.csv").write_text(CSV.replace("2024-10", "2024-12"))  # valid, and checked first
    (folder / "b.csv").write_text(CSV.replace(",5,", ",five,"))
    with pytest.raises(ContractError) as error:
        land(folder, "shop", settings=shop)
    message = str(error.value)
    assert str(folder / "b.csv") in message and "'rating'" in message and "first bad row 0" in message
    assert "3 rows in the file" in message
    assert landing(shop) == before

    no_time = tmp_path / "no_time.csv"
    no_time.write_text("user_id,item_id,timestamp\nu1,i1,2024-10-02\nu2,i2,\nu3,i3,\n")
    with pytest.raises(
        LandError, match=r"column 'timestamp', first bad row 1.*2 of 3 rows have no timestamp"
    ):
        land(no_time, "shop", settings=shop)
    missing = tmp_path / "missing.csv"
    missing.write_text("user,item_id,timestamp\nu1,i1,2024-10-02\n")
    with pytest.raises(LandError, match="missing required column"):
        land(missing, "shop", settings=shop)
    assert landing(shop) == before


def test_unknown_source_says_what_to_set(shop: Settings, tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text(CSV)
    with pytest.raises(ValueError, match=r"export SHOPFLOW_SOURCES='\{\"shop\": \"catalog\", \"other\""):
        land(good, "other", settings=shop)
    with pytest.raises(ValueError, match="tables are"):
        land(good, "shop", "invoice_lines", settings=shop)
    assert landing(shop) == {}


def test_items_land_with_the_first_interactions_and_a_later_file_updates(
    shop: Settings, tmp_path: Path
) -> None:
    items = tmp_path / "items.csv"
    items.write_text("item_id,title,price\ni1,Soap,3.5\ni2,,\n")
    with pytest.raises(ValueError, match="no interactions landed yet"):
        land(items, "shop", "items", settings=shop)

    export = tmp_path / "export.csv"
    export.write_text(CSV)
    land(export, "shop", settings=shop)
    first = land(items, "shop", "items", settings=shop)
    assert [p.partition for p in first.partitions] == [date(2024, 10, 1)]  # loaded by the history run

    update = tmp_path / "update.csv"
    update.write_text("item_id,title,price\ni2,Sponge,1.0\ni3,Brush,\n")
    same = land(update, "shop", "items", settings=shop)
    assert [(p.added, p.replaced, p.total) for p in same.partitions] == [(2, 1, 3)]
    merged = read_landing_file(shop.landing_dir / "shop/items/2024-10-01.parquet", ITEMS)
    assert merged.set_index("item_id")["title"].to_dict() == {"i1": "Soap", "i2": "Sponge", "i3": "Brush"}

    later = land(update, "shop", "items", as_of=date(2024, 11, 15), settings=shop)
    assert [p.partition for p in later.partitions] == [date(2024, 11, 1)]
    with pytest.raises(ValueError, match="for items only"):
        land(export, "shop", as_of=date(2024, 11, 15), settings=shop)


def test_cli_lands_a_slice_of_the_review_data(
    shop: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample = pd.read_parquet(REVIEWS).iloc[:300]
    path = tmp_path / "reviews.parquet"
    sample.to_parquet(path)
    monkeypatch.setenv("SHOPFLOW_WORK_DIR", str(shop.work_dir))
    monkeypatch.setenv("SHOPFLOW_SOURCES", '{"reviews": "catalog"}')
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["land", str(path), "--source", "reviews"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    files = sorted((shop.landing_dir / "reviews" / "interactions").glob("*.parquet"))
    landed = pd.concat([pd.read_parquet(f) for f in files])
    assert len(landed) == 300 and landed["review_text"].notna().sum() == sample["review_text"].notna().sum()
    first = min(f.stem for f in files)
    assert "300 landed" in result.output and f"shopflow run-interval {first} " in result.output
