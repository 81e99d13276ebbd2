"""The GX suites as code, and the pandas helpers of the raw rules (no warehouse, no GX run)."""

from __future__ import annotations

import json
import re
from datetime import datetime

import pandas as pd
import pytest
import yaml

from expectations import marts, raw
from expectations._rules import rule_name, rule_reason
from ml.core import schemas
from ml.core.calendar import partition_end
from ml.core.settings import PROJECT_DIR
from ml.data.quality.gx import QualityGateError
from ml.data.quality.raw import RawValidation, TableValidation, check_quarantine_gate, quarantine_frame

ALL_SUITES = [
    *(builder() for builder in raw.RAW_SUITES.values()),
    *marts.marts_suites(["beauty", "retail"]).values(),
]


@pytest.mark.parametrize("suite", ALL_SUITES, ids=lambda s: s.name)
def test_every_expectation_has_a_unique_rule_and_a_human_reason(suite):
    names = [rule_name(e) for e in suite.expectations]
    assert len(names) == len(set(names)), names
    for expectation in suite.expectations:
        assert len(rule_reason(expectation)) > 20
        assert expectation.notes == rule_reason(expectation)


def test_raw_suites_cover_every_raw_table_and_name_only_existing_columns():
    assert set(raw.RAW_SUITES) == set(schemas.RAW_TABLES)
    for table, builder in raw.RAW_SUITES.items():
        known = {c.name for c in schemas.RAW_TABLES[table]} | set(raw.HELPER_COLUMNS)
        for expectation in builder().expectations:
            assert expectation.column in known, (table, expectation.column)


def test_marts_suites_name_the_columns_dbt_documents():
    for table, suite in marts.marts_suites(["retail"]).items():
        documented = yaml.safe_load((PROJECT_DIR / "dbt" / "models" / "marts" / f"{table}.yml").read_text())
        columns = {c["name"] for model in documented["models"] for c in model.get("columns", [])}
        for expectation in suite.expectations:
            named = {getattr(expectation, a, None) for a in ("column", "column_A", "column_B")} - {None}
            assert named <= columns, (table, named - columns)


def test_product_code_pattern_selects_the_same_codes_as_dbt():
    """The raw rule and dbt staging's is_product must agree on every real stock code."""
    project = yaml.safe_load((PROJECT_DIR / "dbt" / "dbt_project.yml").read_text())
    dbt_pattern = re.compile(project["vars"]["retail_product_code_pattern"])
    codes = pd.read_parquet(
        PROJECT_DIR / "data" / "uci_online_retail_ii" / "online_retail_ii.parquet", columns=["StockCode"]
    )["StockCode"].unique()
    ours = re.compile(raw.PRODUCT_CODE_PATTERN)
    # dbt matches after upper(trim(...)); GX on the raw code.
    disagree = [c for c in codes if bool(ours.search(c)) != bool(dbt_pattern.search(c.strip().upper()))]
    assert disagree == []
    assert {"POST", "DOT", "M", "BANK CHARGES", "AMAZONFEE", "C2", "gift_0001_20"}.isdisjoint(
        {c for c in codes if ours.search(c)}
    )
    assert all(ours.search(c) for c in ["85123A", "79323P", "22111", "DCGS0058"])


def _raw_rows(n: int, partition: str = "2011-01-01") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "_row_id": [f"retail/invoice_lines/{partition}/{i}" for i in range(n)],
            "_partition": pd.Timestamp(partition),
        }
    )


def test_landing_order_sorts_row_numbers_as_numbers_within_partitions():
    frame = pd.concat([_raw_rows(12, "2011-02-01"), _raw_rows(12, "2011-01-01")]).sample(
        frac=1, random_state=0
    )
    ordered = raw.landing_order(frame)
    expected = [f"retail/invoice_lines/{p}/{i}" for p in ("2011-01-01", "2011-02-01") for i in range(12)]
    assert ordered["_row_id"].tolist() == expected


def _lines(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    base = {
        "source": ["retail"] * n,
        "invoice": ["1"] * n,
        "stock_code": ["22111"] * n,
        "description": ["MUG"] * n,
        "quantity": [1] * n,
        "invoice_ts": [pd.Timestamp("2011-01-01 09:00")] * n,
        "price": [1.0] * n,
        "customer_id": ["c1"] * n,
        "country": ["UK"] * n,
        "_row_id": [f"retail/invoice_lines/2011-01-01/{i}" for i in range(n)],
        "_partition": [pd.Timestamp("2011-01-01")] * n,
    }
    base.update(columns)
    return pd.DataFrame(base)


def test_duplicates_point_at_the_first_copy_and_null_keys_match():
    frame = _lines(customer_id=[None, "c1", None, None], quantity=[1, 1, 1, 2])
    checked = raw.validation_frame("invoice_lines", frame)
    assert checked.index.name == "_row_id"
    assert checked[raw.DUPLICATE_OF].tolist() == [None, None, "retail/invoice_lines/2011-01-01/0", None]


def test_item_duplicates_are_within_one_landing_file_only():
    frame = pd.DataFrame(
        {
            "source": "beauty",
            "item_id": ["A", "A", "A"],
            "_row_id": [
                "beauty/items/2014-01-01/0",
                "beauty/items/2014-01-01/1",
                "beauty/items/2014-02-01/0",
            ],
            "_partition": pd.to_datetime(["2014-01-01", "2014-01-01", "2014-02-01"]),
        }
    )
    for name in ("title", "description", "categories", "brand", "price"):
        frame[name] = None
    checked = raw.validation_frame("items", frame)
    assert checked[raw.DUPLICATE_OF].tolist() == [None, "beauty/items/2014-01-01/0", None]


def test_cancellation_flag_follows_the_invoice_prefix():
    frame = _lines(invoice=["C536379", " c1 ", "536370", None])
    assert raw.validation_frame("invoice_lines", frame)[raw.IS_CANCELLATION].tolist() == [
        True,
        True,
        False,
        False,
    ]


def test_quarantine_frame_takes_the_first_failing_rule_in_suite_order():
    frame = _lines(customer_id=["c1", None, None], stock_code=["22111", "22111", "POST"])
    for column in ("_source_file", "_run_id"):
        frame[column] = "x"
    frame["_loaded_at"] = pd.Timestamp("2024-01-01")
    ids = frame["_row_id"].tolist()
    failing = {"stock_code_is_product": [ids[2]], "customer_id_present": [ids[1], ids[2]]}
    reasons = {"stock_code_is_product": "not a product", "customer_id_present": "guest"}
    out = quarantine_frame(
        frame, failing, reasons, run_id="r1", table="invoice_lines", quarantined_at=datetime(2024, 1, 1)
    )
    assert list(out.columns) == [c.name for c in schemas.QUARANTINE]
    assert out["_row_id"].tolist() == ids[1:]
    assert out["expectation"].tolist() == ["customer_id_present", "stock_code_is_product"]
    assert out["reason"].tolist() == ["guest", "not a product"]
    assert out["failed_expectations"].tolist() == [
        "customer_id_present",
        "stock_code_is_product,customer_id_present",
    ]
    kept = json.loads(out["row_json"].iloc[1])
    assert kept["_row_id"] == ids[2]
    assert kept["stock_code"] == "POST"
    assert kept["customer_id"] is None
    assert kept["invoice_ts"].startswith("2011-01-01T09:00:00")
    assert set(kept) == {c.name for c in schemas.RAW_TABLES["invoice_lines"]}


def test_quarantine_frame_is_empty_when_nothing_fails():
    frame = _lines(quantity=[1, 2])
    out = quarantine_frame(
        frame, {"customer_id_present": []}, {"customer_id_present": "guest"},
        run_id="r1", table="invoice_lines", quarantined_at=datetime(2024, 1, 1),
    )  # fmt: skip
    assert out.empty
    assert list(out.columns) == [c.name for c in schemas.QUARANTINE]


def _report(landed: int, quarantined: int, by_reason: dict[str, int]) -> RawValidation:
    table = TableValidation(
        source="retail", table="invoice_lines", suite="raw_invoice_lines", partitions=[],
        landed=landed, quarantined=quarantined, by_reason=by_reason, by_expectation=by_reason, seconds=0.0,
    )  # fmt: skip
    return RawValidation(
        run_id="r1", start=datetime(2011, 1, 1).date(), end=datetime(2011, 2, 1).date(), tables=[table]
    )


def test_quarantine_gate_raises_over_the_threshold_naming_source_rate_threshold_and_reasons(settings):
    settings = settings.model_copy(update={"max_quarantine_rate": 0.25})
    report = _report(1000, 251, {"customer_id_present": 200, "not_duplicate": 40, "price_positive": 11})
    with pytest.raises(QualityGateError) as caught:
        check_quarantine_gate(report, settings)
    message = str(caught.value)
    assert "'retail'" in message
    assert "25.1%" in message
    assert "25.0%" in message
    assert "customer_id_present 200" in message
    assert "not_duplicate 40" in message
    assert caught.value.result is report


def test_quarantine_gate_passes_at_the_threshold_and_on_empty_runs(settings):
    settings = settings.model_copy(update={"max_quarantine_rate": 0.25})
    check_quarantine_gate(_report(1000, 250, {"customer_id_present": 250}), settings)
    check_quarantine_gate(_report(0, 0, {}), settings)


def test_partition_end_by_grain():
    day = datetime(2011, 12, 31).date()
    assert partition_end(day, "day").isoformat() == "2012-01-01"
    assert partition_end(datetime(2011, 12, 26).date(), "week").isoformat() == "2012-01-02"
    assert partition_end(datetime(2011, 12, 1).date(), "month").isoformat() == "2012-01-01"
    with pytest.raises(ValueError):
        partition_end(day, "year")
