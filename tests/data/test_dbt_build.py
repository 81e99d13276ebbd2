"""dbt build on a real slice of both shipped datasets, on DuckDB and on PostgreSQL.

The slice goes through the real pipeline: ml.data.replay lands one day of Online Retail II
(2010-12-01: 3,108 lines with cancellations, guest checkouts, postage lines and verbatim
duplicates) and one day of Amazon Beauty reviews (2014-03-03), a catalog export for the reviewed
items is landed beside them, ml.data.ingest loads it all into raw.*, and a few rows are quarantined by
hand. Every mart figure is then checked against an independent pandas computation on raw.*.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from collections import Counter
from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ml.core.catalog import PRICE_BANDS, item_text, price_bucket, price_bucket_labels
from ml.core.settings import PROJECT_DIR, Settings
from ml.core.warehouse import Warehouse
from ml.data.ingest import ingest_interval
from ml.data.replay import replay
from ml.data.transform import DbtBuildError, DbtResult, dbt_build, dbt_docs_generate

RETAIL_DAY = date(2010, 12, 1)
BEAUTY_DAY = date(2014, 3, 3)
# Reviewed items left out of the landed catalog: dim_items must still give them a row and a text.
UNCATALOGUED = 2
N_UNIT_TESTS = 13
PRODUCT_CODE = r"^([0-9]{5}|DCGS[0-9])"
SEQUENCE_DELIMITER = "|"


# -- the slice -------------------------------------------------------------------------------


def _land_beauty_catalog(settings: Settings) -> None:
    """Land the catalog rows of the day's reviewed items (replay lands only first-seen items)."""
    folder = settings.data_dir / "amazon_beauty_2014_5core"
    reviews = pd.read_parquet(settings.landing_dir / "beauty" / "interactions" / f"{BEAUTY_DAY}.parquet")
    catalog = pd.read_parquet(folder / "items.parquet")
    reviewed = sorted(reviews["item_id"].unique())[UNCATALOGUED:]
    items = catalog[catalog["item_id"].isin(reviewed)][["item_id", "title", "categories", "brand", "price"]]
    items.to_parquet(settings.landing_dir / "beauty" / "items" / f"{BEAUTY_DAY}.parquet", index=False)


def _quarantine(settings: Settings) -> set[str]:
    """Quarantine a few raw rows of each table, as validate_raw would; return their _row_ids."""
    warehouse = Warehouse(settings)
    lines = warehouse.read("select * from raw.invoice_lines order by _row_id")
    purchases = lines[
        ~lines["invoice"].str.startswith("C")
        & lines["customer_id"].notna()
        & lines["stock_code"].str.upper().str.match(PRODUCT_CODE)
        & (lines["quantity"] > 0)
    ]
    reviews = warehouse.read("select _row_id from raw.interactions order by _row_id")
    items = warehouse.read("select _row_id from raw.items order by _row_id")
    chosen = {
        "invoice_lines": list(purchases["_row_id"].iloc[[0, 50, 100]])
        + list(lines.loc[lines["invoice"].str.startswith("C"), "_row_id"].iloc[:1]),
        "interactions": list(reviews["_row_id"].iloc[:3]),
        "items": list(items["_row_id"].iloc[:1]),
    }
    rows = pd.DataFrame(
        [
            {
                "run_id": "test-slice",
                "source": row_id.split("/")[0],
                "table_name": table,
                "_partition": pd.Timestamp(row_id.split("/")[2]),
                "_row_id": row_id,
                "expectation": "expect_column_values_to_not_be_null",
                "reason": "quarantined by the test",
                "failed_expectations": "expect_column_values_to_not_be_null",
                "row_json": "{}",
                "quarantined_at": pd.Timestamp(datetime(2024, 1, 1)),
            }
            for table, row_ids in chosen.items()
            for row_id in row_ids
        ]
    )
    with warehouse.connect() as con:
        warehouse.insert(con, "quarantine.rows", rows)
    return set(rows["_row_id"])


def _load_slice(settings: Settings) -> set[str]:
    replay(settings, start=RETAIL_DAY, end=date(2010, 12, 2), grain="day", sources=["retail"])
    replay(settings, start=BEAUTY_DAY, end=date(2014, 3, 4), grain="day", sources=["beauty"])
    _land_beauty_catalog(settings)
    ingest_interval(RETAIL_DAY, date(2014, 3, 4), run_id="test-slice", settings=settings)
    return _quarantine(settings)


def _settings(work_dir: Path, **overrides: object) -> Settings:
    return Settings(
        work_dir=work_dir,
        data_dir=PROJECT_DIR / "data",
        pii_salt="test-salt",  # type: ignore[arg-type]
        **overrides,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def duckdb_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, DbtResult, set[str]]:
    settings = _settings(tmp_path_factory.mktemp("dbt_duckdb") / "work", warehouse="duckdb")
    quarantined = _load_slice(settings)
    return settings, dbt_build("test-duckdb", settings), quarantined


@pytest.fixture(scope="module")
def postgres_build(pg_database: str, tmp_path_factory: pytest.TempPathFactory):
    """The slice in a database of its own (Warehouse creates it), so other tests' rows don't count."""
    psycopg2 = pytest.importorskip("psycopg2")
    dsn = f"{pg_database}_dbt"
    settings = _settings(
        tmp_path_factory.mktemp("dbt_postgres") / "work", warehouse="postgres", postgres_dsn=dsn
    )
    quarantined = _load_slice(settings)
    try:
        yield settings, dbt_build("test-postgres", settings), quarantined
    finally:
        server, name = dsn.rsplit("/", 1)
        admin = psycopg2.connect(f"{server}/postgres")
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


# -- the independent computation -------------------------------------------------------------


def _expected(warehouse: Warehouse, quarantined: set[str]) -> dict[str, pd.DataFrame]:
    """The marts' contents that can be derived from raw.* with plain pandas."""
    lines = warehouse.read("select * from raw.invoice_lines")
    lines = lines[~lines["_row_id"].isin(quarantined)].copy()
    lines["invoice"] = lines["invoice"].str.strip().str.upper()
    lines["stock_code"] = lines["stock_code"].str.strip().str.upper()
    description = lines["description"].str.strip().str.replace(r"\s+", " ", regex=True)
    lines["description"] = description.mask(description == "")
    purchases = lines[
        ~lines["invoice"].str.startswith("C")
        & lines["stock_code"].str.match(PRODUCT_CODE)
        & (lines["quantity"] > 0)
        & (lines["price"] > 0)
    ].drop_duplicates(
        ["invoice", "stock_code", "description", "quantity", "invoice_ts", "price", "customer_id"]
    )

    reviews = warehouse.read("select * from raw.interactions")
    reviews = reviews[~reviews["_row_id"].isin(quarantined)]
    items = warehouse.read("select * from raw.items")
    items = items[~items["_row_id"].isin(quarantined)]

    bought = (
        purchases[purchases["customer_id"].notna()]
        .groupby(["invoice", "customer_id", "stock_code"], as_index=False)
        .agg(event_ts=("invoice_ts", "min"), quantity=("quantity", "sum"))
    )
    interactions = pd.concat(
        [
            pd.DataFrame(
                {
                    "source": "retail",
                    "user_id": bought["customer_id"],
                    "item_id": bought["stock_code"],
                    "event_ts": bought["event_ts"],
                    "tie": bought["invoice"] + "/" + bought["stock_code"],
                }
            ),
            pd.DataFrame(
                {
                    "source": "beauty",
                    "user_id": reviews["user_id"],
                    "item_id": reviews["item_id"],
                    "event_ts": reviews["event_ts"],
                    "tie": reviews["sequence_number"].map(lambda n: f"{int(n):09d}"),
                }
            ),
        ],
        ignore_index=True,
    ).sort_values(["source", "user_id", "event_ts", "tie"])

    baskets = (
        purchases.assign(amount=purchases["quantity"] * purchases["price"])
        .groupby("invoice")
        .agg(
            n_lines=("stock_code", "size"),
            n_distinct_items=("stock_code", "nunique"),
            basket_value=("amount", "sum"),
        )
    )
    eligible = baskets.index[baskets["n_distinct_items"] <= 200]
    pair_counts: Counter[tuple[str, str]] = Counter()
    for _, codes in purchases[purchases["invoice"].isin(eligible)].groupby("invoice")["stock_code"]:
        pair_counts.update(itertools.combinations(sorted(set(codes)), 2))
    pairs = pd.DataFrame(
        [(a, b, n) for (a, b), n in pair_counts.items() if n >= 2], columns=["item_a", "item_b", "n_baskets"]
    )
    item_baskets = purchases[purchases["invoice"].isin(eligible)].groupby("stock_code")["invoice"].nunique()
    pairs["lift"] = (
        pairs["n_baskets"]
        * len(eligible)
        / (item_baskets[pairs["item_a"]].to_numpy() * item_baskets[pairs["item_b"]].to_numpy())
    )

    beauty_items = set(items["item_id"]) | set(reviews["item_id"])
    return {
        "purchases": purchases,
        "interactions": interactions,
        "baskets": baskets,
        "pairs": pairs,
        "retail_items": purchases.groupby("stock_code")["price"].median().rename("price").reset_index(),
        "beauty_items": pd.DataFrame({"item_id": sorted(beauty_items)}),
        "catalog": items,
    }


def _assert_marts(settings: Settings, result: DbtResult, quarantined: set[str]) -> None:
    assert result.success
    assert result.failures == []
    # Every unit test ran and passed; every model built.
    assert result.resource_counts["unit_test"] == N_UNIT_TESTS
    assert result.resource_counts["model"] == 12
    assert result.resource_counts["test"] >= 100
    assert set(result.status_counts) <= {"success", "pass"}
    assert result.run_results_path is not None and result.run_results_path.exists()

    warehouse = Warehouse(settings)
    expected = _expected(warehouse, quarantined)

    def mart(name: str, order: str) -> pd.DataFrame:
        return warehouse.read(f"select * from marts.{name} order by {order}")

    # Quarantined rows never reach staging (they exist in raw: the test quarantined real rows).
    staged = warehouse.read(
        "select _row_id from staging.stg_shop__interactions union all "
        "select _row_id from staging.stg_shop__items union all "
        "select _row_id from staging.stg_retail__invoice_lines"
    )
    raw_ids = warehouse.read(
        "select _row_id from raw.interactions union all select _row_id from raw.items "
        "union all select _row_id from raw.invoice_lines"
    )
    assert quarantined <= set(raw_ids["_row_id"])
    assert not quarantined & set(staged["_row_id"])
    assert len(staged) == len(raw_ids) - len(quarantined)

    # fct_interactions: one row per review, one per (invoice, customer, item) purchase.
    interactions = mart("fct_interactions", "interaction_id")
    want = expected["interactions"]
    assert interactions["interaction_id"].is_unique
    assert interactions.groupby("source").size().to_dict() == want.groupby("source").size().to_dict()
    assert set(interactions["event_type"]) == {"review", "purchase"}
    assert (interactions.loc[interactions["source"] == "beauty", "event_type"] == "review").all()
    retail = interactions[interactions["source"] == "retail"]
    assert int(retail["quantity"].sum()) == int(
        expected["purchases"].loc[expected["purchases"]["customer_id"].notna(), "quantity"].sum()
    )

    # fct_monitored_interactions: the same rows; first-seen times per source never after the event.
    monitored = mart("fct_monitored_interactions", "interaction_id")
    assert monitored["interaction_id"].tolist() == interactions["interaction_id"].tolist()
    assert monitored.groupby("source").size().to_dict() == interactions.groupby("source").size().to_dict()
    assert (monitored["item_first_ts"] <= monitored["event_ts"]).all()
    assert (monitored["user_first_ts"] <= monitored["event_ts"]).all()
    by_item = monitored.groupby(["source", "item_id"])["event_ts"]
    by_user = monitored.groupby(["source", "user_id"])["event_ts"]
    assert (monitored["item_first_ts"] == by_item.transform("min")).all()
    assert (monitored["user_first_ts"] == by_user.transform("min")).all()
    # The slice spans one day per source, so the trailing 30 days hold all the user's events up
    # to this one's second (same-second events included).
    seconds = monitored["event_ts"].dt.floor("s").groupby([monitored["source"], monitored["user_id"]])
    assert monitored["user_events_30d"].tolist() == seconds.rank(method="max").astype(int).tolist()

    # fct_user_sequences: one row per user, items in (event_ts, sequence_number) order.
    sequences = mart("fct_user_sequences", "user_key")
    want_sequences = want.groupby(["source", "user_id"])["item_id"].agg(SEQUENCE_DELIMITER.join)
    got_sequences = sequences.set_index(["source", "user_id"])["item_ids"]
    assert len(got_sequences) == len(want_sequences)
    assert got_sequences.sort_index().to_dict() == want_sequences.sort_index().to_dict()
    assert (sequences["n_events"] == sequences["item_ids"].str.count(r"\|") + 1).all()

    # fct_training_examples: leave-one-out is exact per user; both splits take only known values.
    examples = mart("fct_training_examples", "interaction_id")
    assert len(examples) == len(interactions)
    sizes = want.groupby(["source", "user_id"]).size()
    long_users = sizes[sizes >= 3]
    assert len(long_users) > 50  # the slice really exercises leave-one-out
    per_user = examples.groupby(["source", "user_id"])["loo_split"].value_counts().unstack(fill_value=0)
    for split in ("test", "validation"):
        assert (per_user.loc[long_users.index, split] == 1).all()
        assert (per_user.drop(long_users.index)[split] == 0).all()
    assert int((examples["loo_split"] == "test").sum()) == len(long_users)
    last = examples.loc[examples["loo_split"] == "test"].set_index(["source", "user_id"])
    assert (last["position"] == last["n_user_events"]).all()
    # time_split: per source, events after the 80th / 90th percentile event time (percentile_disc).
    for source, group in examples.groupby("source"):
        stamps = group["event_ts"].sort_values().to_numpy()
        p80, p90 = (stamps[math.ceil(len(stamps) * q) - 1] for q in (0.8, 0.9))
        want_split = pd.Series("train", index=group.index)
        want_split[group["event_ts"] > p80] = "validation"
        want_split[group["event_ts"] > p90] = "test"
        assert group["time_split"].tolist() == want_split.tolist(), source
    assert set(examples["time_split"]) == {"train", "validation", "test"}

    # dim_items: every interacted item resolves; retail prices are median unit prices.
    items = mart("dim_items", "item_key")
    assert items["item_key"].is_unique
    assert set(interactions["item_key"]) <= set(items["item_key"])
    beauty = items[items["source"] == "beauty"]
    assert sorted(beauty["item_id"]) == list(expected["beauty_items"]["item_id"])
    assert int((~beauty["is_in_catalog"].astype(bool)).sum()) == len(expected["beauty_items"]) - len(
        expected["catalog"]
    )
    assert (items["item_text"].str.len() > 0).all()
    catalogued = beauty[beauty["is_in_catalog"].astype(bool) & beauty["title"].notna()]
    assert catalogued.apply(lambda r: str(r["title"]) in r["item_text"], axis=1).all()
    assert catalogued["item_text"].str.contains("category: Beauty > ").any()
    retail_items = items[items["source"] == "retail"].merge(
        expected["retail_items"], left_on="item_id", right_on="stock_code", suffixes=("", "_want")
    )
    assert len(retail_items) == len(expected["retail_items"]) == int((items["source"] == "retail").sum())
    assert retail_items["price"].to_numpy() == pytest.approx(retail_items["price_want"].to_numpy())

    # fct_baskets: one row per invoice with purchases; n_lines counts duplicate lines once.
    baskets = mart("fct_baskets", "basket_id").set_index("invoice").sort_index()
    want_baskets = expected["baskets"].sort_index()
    assert list(baskets.index) == list(want_baskets.index)
    assert baskets["n_lines"].tolist() == want_baskets["n_lines"].tolist()
    assert baskets["n_distinct_items"].tolist() == want_baskets["n_distinct_items"].tolist()
    assert baskets["basket_value"].to_numpy() == pytest.approx(want_baskets["basket_value"].to_numpy())
    assert int(baskets["customer_id"].isna().sum()) > 0  # guest checkouts are baskets too

    # fct_copurchase_pairs: the same pairs, counts and lift as the brute-force count.
    pairs = mart("fct_copurchase_pairs", "pair_id")
    want_pairs = expected["pairs"].sort_values(["item_a", "item_b"]).reset_index(drop=True)
    got_pairs = pairs.sort_values(["item_a", "item_b"]).reset_index(drop=True)
    assert len(got_pairs) == len(want_pairs) > 100
    assert (got_pairs["item_a"] < got_pairs["item_b"]).all()
    assert got_pairs[["item_a", "item_b", "n_baskets"]].values.tolist() == (
        want_pairs[["item_a", "item_b", "n_baskets"]].values.tolist()
    )
    assert got_pairs["lift"].to_numpy() == pytest.approx(want_pairs["lift"].to_numpy())


# -- DuckDB ----------------------------------------------------------------------------------


def test_duckdb_build_matches_pandas(duckdb_build: tuple[Settings, DbtResult, set[str]]) -> None:
    settings, result, quarantined = duckdb_build
    assert result.target == "duckdb"
    assert json.loads(json.dumps(result.as_dict()))["resource_counts"]["unit_test"] == N_UNIT_TESTS
    assert str(result).startswith("dbt build on duckdb succeeded")
    _assert_marts(settings, result, quarantined)


def _assert_item_text_is_the_catalog_rule(settings: Settings) -> None:
    """The same rows through dbt (dim_items) and Python (ml.core.catalog) give the same text and band."""
    items = Warehouse(settings).read(
        "select item_id, title, brand, categories, price, description, price_bucket, item_text "
        "from marts.dim_items order by source, item_id"
    )
    assert len(items) > 1000 and items["price"].notna().any() and items["price"].isna().any()
    python_text = [
        item_text(r.item_id, r.title, r.brand, r.categories, r.price, r.description)
        for r in items.itertuples(index=False)
    ]
    mismatched = [
        (i, d, p) for i, d, p in zip(items["item_id"], items["item_text"], python_text, strict=True) if d != p
    ]
    assert mismatched == []
    assert items["price_bucket"].tolist() == [price_bucket(p) for p in items["price"]]
    assert set(items["price_bucket"]) <= set(price_bucket_labels())
    # dbt_project.yml's default (for hand-run dbt) is the Python bands too.
    project = yaml.safe_load((PROJECT_DIR / "dbt" / "dbt_project.yml").read_text())
    assert tuple(project["vars"]["price_bands"]) == PRICE_BANDS


def test_duckdb_item_text_is_the_catalog_rule(duckdb_build: tuple[Settings, DbtResult, set[str]]) -> None:
    _assert_item_text_is_the_catalog_rule(duckdb_build[0])


def test_duckdb_file_is_released_after_dbt(duckdb_build: tuple[Settings, DbtResult, set[str]]) -> None:
    """dbt-duckdb keeps its database open per process; dbt_build must hand the file back."""
    import duckdb

    settings, _, _ = duckdb_build
    path = str(settings.duckdb_file)
    # Same process, read-only (a config the open handle would conflict with) ...
    with duckdb.connect(path, read_only=True) as con:
        assert con.execute("select count(*) from marts.fct_interactions").fetchone()[0] > 0  # type: ignore[index]
    # ... the warehouse layer (read-write) ...
    assert Warehouse(settings).scalar("select count(*) from marts.dim_items") > 0
    # ... and another process, which DuckDB's file lock would refuse while dbt held it.
    query = "select count(*) from marts.fct_baskets"
    script = f"import duckdb; print(duckdb.connect({path!r}).execute({query!r}).fetchone()[0])"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert int(out.stdout) > 0


def test_docs_generate_writes_static_site(duckdb_build: tuple[Settings, DbtResult, set[str]]) -> None:
    settings, _, _ = duckdb_build
    path = dbt_docs_generate(settings)
    assert path.name == "static_index.html"
    assert path.is_relative_to(settings.work_dir)
    assert "fct_copurchase_pairs" in path.read_text()


def test_failed_build_raises_and_names_the_test(duckdb_build: tuple[Settings, DbtResult, set[str]]) -> None:
    """A raw row that breaks a staging test (and that validation missed) stops the build."""
    settings, _, _ = duckdb_build
    warehouse = Warehouse(settings)
    bad = pd.DataFrame(
        [
            {
                "source": "beauty",
                "user_id": None,
                "item_id": "B00BAD",
                "event_ts": pd.Timestamp("2014-03-03"),
                "event_type": "review",
                "_row_id": "beauty/interactions/2099-01-01/0",
                "_partition": pd.Timestamp("2099-01-01"),
            }
        ]
    )
    with warehouse.connect() as con:
        warehouse.insert(con, "raw.interactions", bad)
    try:
        with pytest.raises(DbtBuildError) as caught:
            dbt_build("test-failure", settings, select="stg_shop__interactions")
    finally:
        with warehouse.connect() as con:
            warehouse.execute(
                con, "delete from raw.interactions where _row_id = :row_id", {"row_id": bad["_row_id"][0]}
            )
    error = caught.value
    assert not error.result.success
    assert [f.name for f in error.result.failures] == ["not_null_stg_shop__interactions_user_id"]
    assert "not_null_stg_shop__interactions_user_id" in str(error)
    assert "duckdb" in str(error)


# -- PostgreSQL ------------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_build_matches_pandas(postgres_build: tuple[Settings, DbtResult, set[str]]) -> None:
    settings, result, quarantined = postgres_build
    assert result.target == "postgres"
    _assert_marts(settings, result, quarantined)


def test_postgres_item_text_is_the_catalog_rule(postgres_build: tuple[Settings, DbtResult, set[str]]) -> None:
    _assert_item_text_is_the_catalog_rule(postgres_build[0])
