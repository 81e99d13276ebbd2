"""validate_raw / validate_marts on small synthetic tables in a temp DuckDB warehouse.

Each raw rule gets exactly one planted bad row (failing that rule only), next to clean rows that
must pass: the rule must catch exactly its row.
"""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from ml.core import schemas
from ml.core.warehouse import Warehouse
from ml.data.quality.gx import QualityGateError
from ml.data.quality.marts import validate_marts
from ml.data.quality.raw import validate_raw

START, END = date(2011, 1, 1), date(2011, 2, 1)
PARTITION = pd.Timestamp("2011-01-01")
TS = pd.Timestamp("2011-01-10 09:00")


def _load(settings, table: str, rows: list[dict], source: str, loaded_by: str = "ingest-1") -> list[str]:
    """Insert rows into raw.<table> as ingest would (one partition) plus its audit row."""
    frame = pd.DataFrame(rows)
    frame["source"] = source
    frame["_partition"] = PARTITION
    frame["_row_id"] = [f"{source}/{table}/2011-01-01/{i}" for i in range(len(frame))]
    frame["_source_file"] = f"{source}/{table}/2011-01-01.parquet"
    frame["_run_id"] = loaded_by
    frame["_loaded_at"] = pd.Timestamp("2024-01-01")
    for column in schemas.RAW_TABLES[table]:
        if column.name not in frame.columns:
            frame[column.name] = None
        if column.type == schemas.INTEGER:
            frame[column.name] = frame[column.name].astype("Int64")
        elif column.type == schemas.FLOAT:
            frame[column.name] = frame[column.name].astype("float64")
        elif column.type == schemas.TIMESTAMP:
            frame[column.name] = pd.to_datetime(frame[column.name])
    frame = frame[[c.name for c in schemas.RAW_TABLES[table]]]
    audit = pd.DataFrame(
        [{
            "run_id": loaded_by, "source": source, "table_name": table, "_partition": PARTITION,
            "file": f"{source}/{table}/2011-01-01.parquet", "rows_landed": len(frame),
            "rows_loaded": len(frame), "loaded_at": pd.Timestamp("2024-01-01"),
        }]
    )  # fmt: skip
    warehouse = Warehouse(settings)
    with warehouse.connect() as con:
        warehouse.ensure_tables(con)
        warehouse.insert(con, f"raw.{table}", frame)
        warehouse.insert(con, "raw.ingest_audit", audit)
    return frame["_row_id"].tolist()


def _line(**overrides) -> dict:
    line = {
        "invoice": "536365", "stock_code": "85123A", "description": "WHITE HANGING HEART",
        "quantity": 6, "invoice_ts": TS, "price": 2.55, "customer_id": "c17850", "country": "UK",
    }  # fmt: skip
    line.update(overrides)
    return line


# One clean line per shape that must pass, then one bad line per rule (failing only that rule).
CLEAN_LINES = [
    _line(),
    _line(stock_code="22111", quantity=1),
    _line(invoice="C536379", quantity=-1),  # a cancellation: legitimate
    _line(stock_code="DCGS0058", description="MISO PRETTY GUM"),
    _line(invoice_ts=pd.Timestamp("2011-01-31 23:59:59")),  # last second of the interval
    _line(invoice_ts=pd.Timestamp("2011-01-01 00:00:00")),  # first second of the interval
    *[_line(quantity=10 + i) for i in range(6)],
]
BAD_LINES = {
    "invoice_present": _line(invoice=None),
    "stock_code_present": _line(stock_code=None, quantity=2),
    "quantity_present": _line(quantity=None),
    "price_present": _line(price=None),
    "invoice_ts_present": _line(invoice_ts=None),
    "invoice_ts_in_interval": _line(invoice_ts=pd.Timestamp("2011-02-01 00:00:00")),
    # Row 18 copies row 2 (a text sort of the row ids, "18" < "2", would call row 2 the copy).
    "not_duplicate": _line(invoice="C536379", quantity=-1),
    "stock_code_is_product": _line(stock_code="POST", description="POSTAGE"),
    "price_positive": _line(price=0.0),
    "quantity_positive_unless_cancellation": _line(quantity=0),
    "description_present": _line(description=None),
    "customer_id_present": _line(customer_id=None),
}


def _only(settings, sources):
    return settings.model_copy(update={"sources": sources})


def test_each_raw_invoice_rule_catches_exactly_its_planted_row(settings):
    settings = _only(settings, {"retail": "invoice_lines"})
    ids = _load(settings, "invoice_lines", [*CLEAN_LINES, *BAD_LINES.values()], "retail")
    planted = dict(zip(BAD_LINES, ids[len(CLEAN_LINES) :], strict=True))

    report = validate_raw(START, END, "run-1", settings)

    (table,) = report.tables
    assert table.landed == len(ids)
    assert table.quarantined == len(BAD_LINES)
    assert table.accepted == len(CLEAN_LINES)
    assert table.by_expectation == dict.fromkeys(BAD_LINES, 1)
    assert table.by_reason == dict.fromkeys(BAD_LINES, 1)
    rows = Warehouse(settings).read("select * from quarantine.rows order by _row_id")
    assert dict(zip(rows["expectation"], rows["_row_id"], strict=True)) == planted
    assert (rows["failed_expectations"] == rows["expectation"]).all()
    assert (rows["run_id"] == "run-1").all()
    duplicate = rows.set_index("expectation").loc["not_duplicate"]
    assert duplicate["_row_id"] == "retail/invoice_lines/2011-01-01/18"
    assert '"_row_id":"retail/invoice_lines/2011-01-01/18"' in duplicate["row_json"]
    assert report.data_docs is not None
    assert report.data_docs.name == "index.html"
    assert report.data_docs.is_file()


@pytest.mark.postgres
def test_postgres_warehouse_quarantines_the_same_rows_and_reruns_identically(pg_settings):
    # The session's PostgreSQL database is shared with other tests: a source name of our own.
    settings = _only(pg_settings, {"retail_gxq": "invoice_lines"})
    ids = _load(settings, "invoice_lines", [*CLEAN_LINES, *BAD_LINES.values()], "retail_gxq")
    planted = dict(zip(BAD_LINES, ids[len(CLEAN_LINES) :], strict=True))
    warehouse = Warehouse(settings)
    query = (
        "select expectation, _row_id as row_id, failed_expectations, row_json, _partition "
        "from quarantine.rows where source = 'retail_gxq' order by _row_id"
    )

    first = validate_raw(START, END, "run-1", settings)
    rows = warehouse.read(query)
    second = validate_raw(START, END, "run-1", settings)

    assert first.tables[0].by_reason == dict.fromkeys(BAD_LINES, 1)
    assert dict(zip(rows["expectation"], rows["row_id"], strict=True)) == planted
    assert {str(p) for p in rows["_partition"]} == {"2011-01-01"}
    pd.testing.assert_frame_equal(warehouse.read(query), rows)
    assert second.as_dict()["sources"] == first.as_dict()["sources"]
    audit = warehouse.read(
        "select rows_quarantined, rows_accepted from raw.ingest_audit where source = 'retail_gxq'"
    )
    assert audit.values.tolist() == [[len(BAD_LINES), len(CLEAN_LINES)]]


def test_a_clean_load_passes_and_fills_the_audit(settings):
    settings = _only(settings, {"retail": "invoice_lines"})
    ids = _load(settings, "invoice_lines", CLEAN_LINES, "retail")
    report = validate_raw(START, END, "run-1", settings)
    assert report.sources["retail"].quarantined == 0
    assert report.sources["retail"].accepted == len(ids)
    audit = Warehouse(settings).read("select * from raw.ingest_audit")
    assert audit[["rows_quarantined", "rows_accepted"]].values.tolist() == [[0, len(ids)]]


def test_a_row_failing_several_rules_lists_them_all_in_suite_order(settings):
    settings = _only(settings, {"retail": "invoice_lines"})
    _load(settings, "invoice_lines", [_line(stock_code="POST", price=0.0, customer_id=None)], "retail")
    validate_raw(START, END, "run-1", settings)
    row = Warehouse(settings).read("select * from quarantine.rows").iloc[0]
    assert row["expectation"] == "stock_code_is_product"
    assert row["failed_expectations"] == "stock_code_is_product,price_positive,customer_id_present"


def test_catalog_rules_catch_exactly_their_planted_rows(settings):
    settings = _only(settings, {"beauty": "catalog"})
    event = {"user_id": "u1", "item_id": "B001", "event_ts": TS, "event_type": "review", "rating": 5.0}
    clean = [event, {**event, "item_id": "B002", "rating": None}, {**event, "item_id": "B003", "rating": 0.0}]
    bad = {
        "user_id_present": {**event, "user_id": None, "item_id": "B004"},
        "item_id_present": {**event, "item_id": None},
        "event_ts_present": {**event, "event_ts": None, "item_id": "B005"},
        "event_ts_in_interval": {**event, "event_ts": pd.Timestamp("2010-12-31 23:59:59"), "item_id": "B006"},
        "not_duplicate": {**event, "rating": 4.0},  # same user, item, time and type as the first
        "rating_in_range": {**event, "item_id": "B007", "rating": 5.5},
    }
    ids = _load(settings, "interactions", [*clean, *bad.values()], "beauty")
    item = {"item_id": "B001", "title": "Concealer", "price": 5.0}
    items_bad = {
        "item_id_present": {**item, "item_id": None},
        "not_duplicate": {**item, "title": "Concealer (again)"},
        "price_non_negative": {**item, "item_id": "B002", "price": -1.0},
    }
    item_ids = _load(
        settings, "items", [item, {**item, "item_id": "B003", "price": None}, *items_bad.values()], "beauty"
    )

    report = validate_raw(START, END, "run-1", settings)

    by_table = {t.table: t for t in report.tables}
    assert by_table["interactions"].by_reason == dict.fromkeys(bad, 1)
    assert by_table["items"].by_reason == dict.fromkeys(items_bad, 1)
    rows = Warehouse(settings).read("select table_name, expectation, _row_id as row_id from quarantine.rows")
    got = {(r.table_name, r.expectation): r.row_id for r in rows.itertuples()}
    assert got == {
        **{("interactions", k): v for k, v in zip(bad, ids[len(clean) :], strict=True)},
        **{("items", k): v for k, v in zip(items_bad, item_ids[2:], strict=True)},
    }
    beauty = report.sources["beauty"]
    assert (beauty.landed, beauty.quarantined) == (len(ids) + len(item_ids), len(bad) + len(items_bad))


def test_rerun_replaces_the_partition_quarantine_with_identical_rows(settings):
    settings = _only(settings, {"retail": "invoice_lines"})
    _load(settings, "invoice_lines", [*CLEAN_LINES, *BAD_LINES.values()], "retail")
    warehouse = Warehouse(settings)
    columns = (
        "run_id, source, table_name, _partition, _row_id, expectation, reason, failed_expectations, row_json"
    )
    query = f"select {columns} from quarantine.rows order by _row_id"

    first = validate_raw(START, END, "run-1", settings)
    rows_first = warehouse.read(query)
    audit_first = warehouse.read("select * from raw.ingest_audit")
    second = validate_raw(START, END, "run-1", settings)

    assert second.as_dict()["sources"] == first.as_dict()["sources"]
    pd.testing.assert_frame_equal(warehouse.read(query), rows_first)
    pd.testing.assert_frame_equal(warehouse.read("select * from raw.ingest_audit"), audit_first)
    # Another interval leaves this one's quarantine alone.
    validate_raw(END, date(2011, 3, 1), "run-2", settings)
    assert len(warehouse.read(query)) == len(BAD_LINES)


def test_an_empty_interval_validates_nothing_and_clears_stale_quarantine(settings):
    settings = _only(settings, {"retail": "invoice_lines"})
    _load(settings, "invoice_lines", [_line(customer_id=None)], "retail")
    validate_raw(START, END, "run-1", settings)
    warehouse = Warehouse(settings)
    with warehouse.connect() as con:
        warehouse.execute(con, "delete from raw.invoice_lines")
    report = validate_raw(START, END, "run-2", settings)
    assert (report.landed, report.quarantined) == (0, 0)
    assert warehouse.scalar("select count(*) from quarantine.rows") == 0


# -- marts ---------------------------------------------------------------------------------------
def _marts() -> dict[str, pd.DataFrame]:
    ts = pd.to_datetime(["2011-11-01 10:00", "2011-11-02 10:00", "2014-01-01 00:00"])
    interactions = pd.DataFrame(
        {
            "interaction_id": ["i1", "i2", "i3"], "source": ["retail", "retail", "beauty"],
            "user_id": ["c1", "c1", "u1"], "item_id": ["22111", "85048", "B001"],
            "user_key": ["retail:c1", "retail:c1", "beauty:u1"],
            "item_key": ["retail:22111", "retail:85048", "beauty:B001"], "event_ts": ts,
            "event_type": ["purchase", "purchase", "review"], "rating": [None, None, 5.0],
            "quantity": pd.array([2, 1, None], dtype="Int64"), "sequence_number": [0, 1, 0],
        }
    )  # fmt: skip
    items = pd.DataFrame(
        {
            "item_key": ["retail:22111", "retail:85048", "beauty:B001"],
            "source": ["retail", "retail", "beauty"],
            "item_id": ["22111", "85048", "B001"], "title": ["MUG", "LIGHTS", "Concealer"], "brand": None,
            "categories": None, "category_top": None, "category_leaf": None, "description": None,
            "price": [1.0, 4.99, None], "price_bucket": ["under 5", "under 5", "unknown"],
            "item_text": ["MUG | price: under 5", "LIGHTS | price: under 5", "Concealer"],
            "is_in_catalog": [True, True, True],
        }
    )  # fmt: skip
    sequences = pd.DataFrame(
        {
            "user_key": ["retail:c1", "beauty:u1"], "source": ["retail", "beauty"], "user_id": ["c1", "u1"],
            "item_ids": ["22111|85048", "B001"], "n_events": [2, 1], "n_distinct_items": [2, 1],
            "first_event_ts": [ts[0], ts[2]], "last_event_ts": [ts[1], ts[2]],
        }
    )  # fmt: skip
    examples = interactions.assign(
        position=[1, 2, 1], n_user_events=[2, 2, 1], loo_split="train", time_split=["train", "test", "train"],
        time_split_validation_start=ts[1], time_split_test_start=ts[1],
    )  # fmt: skip
    baskets = pd.DataFrame(
        {
            "basket_id": ["retail:1", "retail:2"], "source": "retail", "invoice": ["1", "2"],
            "customer_id": ["c1", "c1"], "user_key": "retail:c1", "invoice_ts": ts[:2], "n_lines": [1, 2],
            "n_distinct_items": [1, 2], "total_quantity": [2, 3], "basket_value": [2.0, 6.0],
        }
    )  # fmt: skip
    pairs = pd.DataFrame(
        {
            "pair_id": ["retail:22111:85048"], "source": "retail", "item_a": "22111", "item_b": "85048",
            "item_key_a": "retail:22111", "item_key_b": "retail:85048", "n_baskets": [2], "support": [0.5],
            "confidence_a_to_b": [1.0], "confidence_b_to_a": [0.5], "lift": [1.0],
        }
    )  # fmt: skip
    return {
        "fct_interactions": interactions, "dim_items": items, "fct_user_sequences": sequences,
        "fct_training_examples": examples, "fct_baskets": baskets, "fct_copurchase_pairs": pairs,
    }  # fmt: skip


def _write_marts(settings, marts: dict[str, pd.DataFrame]) -> None:
    warehouse = Warehouse(settings)
    with warehouse.connect() as con:
        warehouse.ensure_tables(con)
        warehouse.execute(con, "CREATE SCHEMA IF NOT EXISTS marts")
        for name, frame in marts.items():
            con.register("_mart", frame)
            con.execute(f"CREATE OR REPLACE TABLE marts.{name} AS SELECT * FROM _mart")
            con.unregister("_mart")
        audit = pd.DataFrame(
            {
                "run_id": "ingest-1", "source": ["retail", "beauty"],
                "table_name": ["invoice_lines", "interactions"],
                "_partition": pd.to_datetime(["2011-11-01", "2014-01-01"]), "rows_landed": 1,
            }
        )  # fmt: skip
        warehouse.insert(con, "raw.ingest_audit", audit)


def test_valid_marts_pass(settings):
    _write_marts(settings, _marts())
    report = validate_marts("run-1", settings)
    assert report.success
    assert report.rows["fct_interactions"] == 3
    assert report.evaluated > 50
    assert report.data_docs is not None and report.data_docs.is_file()


def test_marts_gate_blocks_on_a_planted_duplicate_key_a_future_event_and_a_bad_purchase(settings):
    marts = _marts()
    items = marts["dim_items"]
    marts["dim_items"] = pd.concat([items, items.iloc[[0]]], ignore_index=True)
    interactions = marts["fct_interactions"]
    interactions.loc[1, "event_ts"] = pd.Timestamp("2011-12-01")  # the latest retail partition ends here
    interactions.loc[0, "quantity"] = 0
    _write_marts(settings, marts)

    with pytest.raises(QualityGateError) as caught:
        validate_marts("run-1", settings)

    failures = {(f.table, f.column, f.rule): f for f in caught.value.result.failures}
    assert set(failures) == {
        ("dim_items", "item_key", "item_key_unique"),
        ("fct_interactions", "event_ts", "event_ts_not_after_landed_data__retail"),
        ("fct_interactions", "quantity", "purchase_quantity_positive"),
    }
    message = str(caught.value)
    assert "marts.dim_items.item_key: item_key_unique (expect_column_values_to_be_unique) failed" in message
    assert "observed 2 unexpected of 4 rows, e.g. ['retail:22111', 'retail:22111']" in message
    assert "publish blocked" in message


def test_a_missing_mart_or_column_blocks(settings):
    marts = _marts()
    del marts["fct_copurchase_pairs"]
    marts["dim_items"] = marts["dim_items"].drop(columns=["item_text"])
    _write_marts(settings, marts)
    with pytest.raises(QualityGateError) as caught:
        validate_marts("run-1", settings)
    failures = {(f.table, f.column, f.rule) for f in caught.value.result.failures}
    assert failures == {
        ("fct_copurchase_pairs", None, "table_exists"),
        ("dim_items", "item_text", "column_exists"),
    }
    assert "marts.fct_copurchase_pairs: table_exists (table) failed, observed missing" in str(caught.value)


def test_an_unchanged_mart_keeps_its_pass_and_a_changed_one_is_validated_again(settings):
    marts = _marts()
    _write_marts(settings, marts)
    first = validate_marts("run-1", settings)
    assert first.reused == {} and first.evaluated > 50

    # Same rows, same suites: every earlier pass holds, nothing is evaluated again.
    again = validate_marts("run-2", settings)
    assert again.reused == {table: "run-1" for table in marts}
    assert again.evaluated == 0 and again.rows == first.rows

    # One duplicated item row: dim_items is validated again and fails; the rest still hold.
    items = marts["dim_items"]
    marts["dim_items"] = pd.concat([items, items.iloc[[0]]], ignore_index=True)
    _write_marts(settings, marts)
    with pytest.raises(QualityGateError) as caught:
        validate_marts("run-3", settings)
    outcome = caught.value.result
    assert {f.rule for f in outcome.failures} == {"item_key_unique"}
    assert "dim_items" not in outcome.reused and len(outcome.reused) == len(marts) - 1

    # The failure is not remembered as a pass: the same bad rows fail again.
    with pytest.raises(QualityGateError):
        validate_marts("run-4", settings)


def test_the_row_fingerprint_ignores_order_and_sees_one_changed_value(settings):
    from ml.data.quality.marts import fingerprint

    warehouse = Warehouse(settings)
    frame = pd.DataFrame({"a": ["x", "y", "z"], "b": [1, 2, 3]})
    with warehouse.connect() as con:
        warehouse.execute(con, "CREATE SCHEMA IF NOT EXISTS marts")
        for name, rows in {"t1": frame, "t2": frame.iloc[::-1], "t3": frame.assign(b=[1, 2, 4])}.items():
            con.register("_t", rows)
            con.execute(f"CREATE TABLE marts.{name} AS SELECT * FROM _t")
            con.unregister("_t")
    prints = {name: fingerprint(warehouse, f"marts.{name}", ["a", "b"]) for name in ("t1", "t2", "t3")}
    assert prints["t1"] == prints["t2"] and prints["t1"][0] == 3
    assert prints["t3"] != prints["t1"]
