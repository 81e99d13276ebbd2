"""The raw quarantine on the REAL Online Retail II data, checked against independent pandas counts.

The quick tests take one month (December 2010: 42,481 lines, a Christmas month with many guest
checkouts); the slow one takes all 1,044,847 lines.
"""

from __future__ import annotations

import time
from datetime import date

import numpy as np
import pandas as pd
import pytest

from ml.core import schemas
from ml.core.settings import Settings
from ml.core.warehouse import Warehouse
from ml.data.quality.gx import QualityGateError
from ml.data.quality.raw import check_quarantine_gate, validate_raw

DEC_2010, JAN_2011 = date(2010, 12, 1), date(2011, 1, 1)
RULES = [
    "invoice_present", "stock_code_present", "quantity_present", "price_present", "invoice_ts_present",
    "invoice_ts_in_interval", "not_duplicate", "stock_code_is_product", "price_positive",
    "quantity_positive_unless_cancellation", "description_present", "customer_id_present",
]  # fmt: skip


@pytest.fixture
def retail(settings: Settings) -> Settings:
    return settings.model_copy(update={"sources": {"retail": "invoice_lines"}})


def load_retail(settings: Settings, start: date, end: date) -> pd.DataFrame:
    """Land the real lines of [start, end) in raw.invoice_lines as ingest would (monthly partitions)."""
    data = pd.read_parquet(settings.data_dir / "uci_online_retail_ii" / "online_retail_ii.parquet")
    data = data[(data["InvoiceDate"] >= pd.Timestamp(start)) & (data["InvoiceDate"] < pd.Timestamp(end))]
    lines = pd.DataFrame(
        {
            "invoice": data["Invoice"].astype(str),
            "stock_code": data["StockCode"].astype(str),
            "description": data["Description"],
            "quantity": data["Quantity"].astype("Int64"),
            "invoice_ts": data["InvoiceDate"],
            "price": data["Price"].astype("float64"),
            "customer_id": data["CustomerID"]
            .astype("string")
            .astype(object)
            .where(data["CustomerID"].notna(), None),
            "country": data["Country"],
        }
    ).reset_index(drop=True)
    lines["source"] = "retail"
    lines["_partition"] = lines["invoice_ts"].dt.to_period("M").dt.to_timestamp()
    number = lines.groupby("_partition").cumcount()
    lines["_row_id"] = [
        f"retail/invoice_lines/{p.date().isoformat()}/{n}"
        for p, n in zip(lines["_partition"], number, strict=True)
    ]
    lines["_source_file"] = "retail/invoice_lines/" + lines["_partition"].dt.strftime("%Y-%m-%d") + ".parquet"
    lines["_run_id"] = "ingest-1"
    lines["_loaded_at"] = pd.Timestamp("2024-01-01")
    lines = lines[[c.name for c in schemas.RAW_TABLES["invoice_lines"]]]
    audit = lines.groupby("_partition").agg(rows_landed=("_row_id", "size"), file=("_source_file", "first"))
    audit = audit.reset_index().assign(
        run_id="ingest-1", source="retail", table_name="invoice_lines", loaded_at=pd.Timestamp("2024-01-01")
    )
    audit["rows_loaded"] = audit["rows_landed"]
    warehouse = Warehouse(settings)
    with warehouse.connect() as con:
        warehouse.ensure_tables(con)
        warehouse.insert(con, "raw.invoice_lines", lines)
        warehouse.insert(con, "raw.ingest_audit", audit)
    return lines


def expected_failures(lines: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    """Each rule computed in plain pandas, one boolean column per rule, in suite order."""
    cancellation = lines["invoice"].str.strip().str.upper().str.startswith("C")
    content = [
        "invoice",
        "stock_code",
        "description",
        "quantity",
        "invoice_ts",
        "price",
        "customer_id",
        "country",
    ]
    ts = lines["invoice_ts"]
    return pd.DataFrame(
        {
            "invoice_present": lines["invoice"].isna(),
            "stock_code_present": lines["stock_code"].isna(),
            "quantity_present": lines["quantity"].isna(),
            "price_present": lines["price"].isna(),
            "invoice_ts_present": ts.isna(),
            "invoice_ts_in_interval": ts.notna() & ((ts < pd.Timestamp(start)) | (ts >= pd.Timestamp(end))),
            "not_duplicate": lines.duplicated(subset=content, keep="first"),
            "stock_code_is_product": ~lines["stock_code"].str.match(r"^(\d{5}|DCGS\d)"),
            "price_positive": lines["price"] <= 0,
            "quantity_positive_unless_cancellation": ~cancellation & (lines["quantity"] < 1),
            "description_present": lines["description"].isna(),
            "customer_id_present": lines["customer_id"].isna(),
        }
    )[RULES].fillna(False)


def first_reason_counts(failures: pd.DataFrame) -> dict[str, int]:
    flags = failures.to_numpy(dtype=bool)
    hit = flags.any(axis=1)
    first = np.array(RULES)[flags[hit].argmax(axis=1)]
    counts = pd.Series(first).value_counts()
    return {rule: int(counts[rule]) for rule in RULES if rule in counts}


def test_one_real_month_quarantines_exactly_what_pandas_counts(retail: Settings) -> None:
    lines = load_retail(retail, DEC_2010, JAN_2011)
    failures = expected_failures(lines, DEC_2010, JAN_2011)

    report = validate_raw(DEC_2010, JAN_2011, "run-dec", retail)

    counts = report.sources["retail"]
    assert counts.landed == len(lines) == 42_481
    assert counts.accepted + counts.quarantined == counts.landed
    assert counts.quarantined == int(failures.any(axis=1).sum())
    assert counts.by_reason == first_reason_counts(failures)
    (table,) = report.tables
    assert table.by_expectation == {rule: int(n) for rule, n in failures.sum().items() if n}
    # The month's real dirt, by name.
    assert table.by_expectation == {
        "not_duplicate": 500, "stock_code_is_product": 195, "price_positive": 273,
        "quantity_positive_unless_cancellation": 70, "description_present": 125,
        "customer_id_present": 15_631,
    }  # fmt: skip
    assert counts.quarantine_rate < retail.max_quarantine_rate
    check_quarantine_gate(report, retail)

    warehouse = Warehouse(retail)
    stored = warehouse.read("select expectation, count(*) as n from quarantine.rows group by expectation")
    assert dict(zip(stored["expectation"], stored["n"], strict=True)) == counts.by_reason
    audit = warehouse.read("select rows_landed, rows_quarantined, rows_accepted from raw.ingest_audit")
    assert audit.values.tolist() == [[counts.landed, counts.quarantined, counts.accepted]]
    cancelled = lines.loc[lines["invoice"].str.startswith("C") & lines["customer_id"].notna(), "_row_id"]
    quarantined = set(warehouse.read("select _row_id from quarantine.rows")["_row_id"])
    # Cancellations are legitimate rows: only those failing another rule are quarantined.
    cancelled_ok = lines["_row_id"].isin(cancelled) & ~failures.any(axis=1)
    assert cancelled_ok.sum() > 500
    assert quarantined.isdisjoint(lines.loc[cancelled_ok, "_row_id"])


def test_the_gate_stops_a_real_month_over_a_tighter_threshold(retail: Settings) -> None:
    load_retail(retail, DEC_2010, JAN_2011)
    report = validate_raw(DEC_2010, JAN_2011, "run-dec", retail)
    strict = retail.model_copy(update={"max_quarantine_rate": 0.10})
    with pytest.raises(
        QualityGateError, match=r"'retail' quarantined 38\.2%.*above max_quarantine_rate 10\.0%"
    ):
        check_quarantine_gate(report, strict)


def test_replay_ingest_then_validate_one_real_month(retail: Settings) -> None:
    """The lead's landing and ingest, then the quarantine: the audit adds up."""
    from ml.data.ingest import ingest_interval
    from ml.data.replay import replay

    replay(retail, start=DEC_2010, end=JAN_2011, grain="month", sources=["retail"])
    ingest_interval(DEC_2010, JAN_2011, "run-dec", retail)
    report = validate_raw(DEC_2010, JAN_2011, "run-dec", retail)

    counts = report.sources["retail"]
    assert counts.landed == 42_481
    audit = Warehouse(retail).read("select * from raw.ingest_audit")
    assert audit[["rows_landed", "rows_quarantined", "rows_accepted"]].values.tolist() == [
        [counts.landed, counts.quarantined, counts.accepted]
    ]


@pytest.mark.slow
def test_all_real_lines_add_up(retail: Settings) -> None:
    start, end = date(2009, 12, 1), date(2012, 1, 1)
    lines = load_retail(retail, start, end)
    began = time.perf_counter()
    report = validate_raw(start, end, "run-all", retail)
    seconds = time.perf_counter() - began

    counts = report.sources["retail"]
    assert counts.landed == len(lines) == 1_044_847
    assert counts.accepted + counts.quarantined == counts.landed
    failures = expected_failures(lines, start, end)
    assert counts.by_reason == first_reason_counts(failures)
    audit = Warehouse(retail).read(
        "select sum(rows_quarantined) as q, sum(rows_accepted) as a from raw.ingest_audit"
    )
    assert audit.values.tolist() == [[counts.quarantined, counts.accepted]]
    print(f"validate_raw: {counts.landed:,} lines in {seconds:.1f} s ({counts.landed / seconds:,.0f} rows/s)")
    print(f"quarantined {counts.quarantined:,} ({counts.quarantine_rate:.1%}): {counts.by_reason}")
