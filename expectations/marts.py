"""Table-level suites for the marts dbt builds (schema ``marts``). Any failure BLOCKS publishing.

Written against the models in ``dbt/models/marts`` (their YAML names the columns and the grain).
dbt's own tests cover relationships between marts; these suites guard what training and serving
rely on: keys, the purchase contract, sane counts and measures, item text, and time.

Run-time values reach the suites as GX suite parameters, so the suites stay static code:
``latest_partition_end__<source>``, the end of the latest landed partition of each source (from
``raw.ingest_audit``), and ``rating_min`` / ``rating_max``, the rating scale of the settings.
"""

from __future__ import annotations

from collections.abc import Iterable

import great_expectations as gx
import great_expectations.expectations as gxe
from great_expectations.expectations.row_conditions import Column

from expectations._rules import rating_in_range, rule
from ml.core.catalog import price_bucket_labels

SCHEMA = "marts"
SPLITS = ["train", "validation", "test"]
PRICE_BUCKETS = price_bucket_labels()  # the bands are ml.core.catalog's (dbt gets them as a var)


def latest_partition_end_parameter(source: str) -> str:
    """Suite parameter holding the end of ``source``'s latest landed partition."""
    return f"latest_partition_end__{source}"


def _key(table: str, column: str) -> list[gxe.Expectation]:
    return [
        rule(
            gxe.ExpectColumnValuesToNotBeNull,
            f"{column}_not_null",
            f"{table} rows must have a {column}: it is the table's key.",
            column=column,
        ),
        rule(
            gxe.ExpectColumnValuesToBeUnique,
            f"{column}_unique",
            f"{column} is the key of {table}: one row per {column}; a duplicate means a fan-out join "
            "or a double load.",
            column=column,
        ),
    ]


def _not_null(table: str, *columns: str) -> list[gxe.Expectation]:
    return [
        rule(
            gxe.ExpectColumnValuesToNotBeNull,
            f"{column}_not_null",
            f"{table}.{column} is read downstream and must always be set.",
            column=column,
        )
        for column in columns
    ]


def _not_empty(table: str) -> gxe.Expectation:
    return rule(
        gxe.ExpectTableRowCountToBeBetween,
        "not_empty",
        f"{table} is empty: dbt built nothing from the raw data (all quarantined, or a broken join).",
        min_value=1,
    )


def _events_not_after_landed_data(column: str, sources: Iterable[str]) -> list[gxe.Expectation]:
    return [
        rule(
            gxe.ExpectColumnValuesToBeBetween,
            f"{column}_not_after_landed_data__{source}",
            f"{source} events dated after the end of its latest landed partition: future-dated "
            "rows (a clock or timezone bug) that would leak the future into training.",
            column=column,
            max_value={"$PARAMETER": latest_partition_end_parameter(source)},
            strict_max=True,
            row_condition=Column("source") == source,
        )
        for source in sources
    ]


def fct_interactions_suite(sources: Iterable[str] = ()) -> gx.ExpectationSuite:
    """``marts.fct_interactions``: one row per user-item event, all sources."""
    t = "fct_interactions"
    return gx.ExpectationSuite(
        name=f"{SCHEMA}.{t}",
        expectations=[
            _not_empty(t),
            *_key(t, "interaction_id"),
            *_not_null(t, "source", "user_id", "item_id", "user_key", "item_key", "event_ts", "event_type"),
            *_not_null(t, "sequence_number"),
            rule(
                gxe.ExpectColumnValuesToBeBetween,
                "purchase_quantity_positive",
                "A purchase must buy at least one unit: cancellations and returns are not purchases.",
                column="quantity",
                min_value=1,
                row_condition=Column("event_type") == "purchase",
            ),
            rule(
                gxe.ExpectColumnValuesToNotBeNull,
                "purchase_has_quantity",
                "A purchase without a quantity cannot be weighted.",
                column="quantity",
                row_condition=Column("event_type") == "purchase",
            ),
            rating_in_range(
                "Ratings are on the rating scale (SHOPFLOW_RATING_SCALE, default [0, 5]; NULL when "
                "the source has none): the raw gate quarantines the others."
            ),
            *_events_not_after_landed_data("event_ts", sources),
        ],
    )


def dim_items_suite() -> gx.ExpectationSuite:
    """``marts.dim_items``: one row per item per source, with the text the encoder reads."""
    t = "dim_items"
    return gx.ExpectationSuite(
        name=f"{SCHEMA}.{t}",
        expectations=[
            _not_empty(t),
            *_key(t, "item_key"),
            *_not_null(t, "source", "item_id", "is_in_catalog"),
            rule(
                gxe.ExpectColumnValuesToNotBeNull,
                "item_text_not_null",
                "Every item needs a text: it is all the recommender knows about a cold item.",
                column="item_text",
            ),
            rule(
                gxe.ExpectColumnValuesToMatchRegex,
                "item_text_not_blank",
                "item_text is empty or whitespace: the encoder would embed nothing.",
                column="item_text",
                regex=r"\S",
            ),
            rule(
                gxe.ExpectColumnValuesToBeInSet,
                "price_bucket_known",
                "price_bucket must be one of the fixed bands (item_text and cached embeddings use them).",
                column="price_bucket",
                value_set=PRICE_BUCKETS,
            ),
            rule(
                gxe.ExpectColumnValuesToBeBetween,
                "price_non_negative",
                "A negative price is not a price.",
                column="price",
                min_value=0,
            ),
        ],
    )


def fct_user_sequences_suite() -> gx.ExpectationSuite:
    """``marts.fct_user_sequences``: one row per user per source, the history in event order."""
    t = "fct_user_sequences"
    return gx.ExpectationSuite(
        name=f"{SCHEMA}.{t}",
        expectations=[
            _not_empty(t),
            *_key(t, "user_key"),
            *_not_null(t, "source", "user_id", "item_ids", "first_event_ts", "last_event_ts"),
            rule(
                gxe.ExpectColumnValuesToMatchRegex,
                "item_ids_not_blank",
                "A user sequence without items cannot train or be served.",
                column="item_ids",
                regex=r"\S",
            ),
            rule(
                gxe.ExpectColumnValuesToBeBetween,
                "n_events_positive",
                "A user is in fct_user_sequences because of at least one event.",
                column="n_events",
                min_value=1,
            ),
            rule(
                gxe.ExpectColumnPairValuesAToBeGreaterThanB,
                "distinct_items_within_events",
                "A user cannot have more distinct items than events.",
                column_A="n_events",
                column_B="n_distinct_items",
                or_equal=True,
            ),
            rule(
                gxe.ExpectColumnPairValuesAToBeGreaterThanB,
                "first_event_not_after_last",
                "first_event_ts after last_event_ts: the history is out of order.",
                column_A="last_event_ts",
                column_B="first_event_ts",
                or_equal=True,
            ),
        ],
    )


def fct_training_examples_suite() -> gx.ExpectationSuite:
    """``marts.fct_training_examples``: one row per interaction with its position and splits."""
    t = "fct_training_examples"
    return gx.ExpectationSuite(
        name=f"{SCHEMA}.{t}",
        expectations=[
            _not_empty(t),
            *_key(t, "interaction_id"),
            *_not_null(t, "source", "user_key", "item_key", "event_ts"),
            *[
                rule(
                    gxe.ExpectColumnValuesToBeInSet,
                    f"{split}_known",
                    f"{split} must be train, validation or test: anything else leaks into no split.",
                    column=split,
                    value_set=SPLITS,
                )
                for split in ("loo_split", "time_split")
            ],
            *_not_null(t, "loo_split", "time_split"),
            rule(
                gxe.ExpectColumnValuesToBeBetween,
                "position_positive",
                "Positions in a user's history are 1-based.",
                column="position",
                min_value=1,
            ),
            rule(
                gxe.ExpectColumnPairValuesAToBeGreaterThanB,
                "position_within_history",
                "A position beyond the user's number of events means a broken window function.",
                column_A="n_user_events",
                column_B="position",
                or_equal=True,
            ),
        ],
    )


def fct_baskets_suite() -> gx.ExpectationSuite:
    """``marts.fct_baskets``: one row per retail invoice that bought something.

    Baskets larger than ``max_basket_lines`` stay in fct_baskets by design (dbt only leaves them
    out of co-purchase pairs; the real data has 29 such invoices, up to 540 distinct items), so
    only the lower bound is an expectation here.
    """
    t = "fct_baskets"
    return gx.ExpectationSuite(
        name=f"{SCHEMA}.{t}",
        expectations=[
            *_key(t, "basket_id"),
            *_not_null(t, "source", "invoice", "invoice_ts"),
            rule(
                gxe.ExpectColumnValuesToBeBetween,
                "n_distinct_items_positive",
                "A basket holds at least one item.",
                column="n_distinct_items",
                min_value=1,
            ),
            rule(
                gxe.ExpectColumnPairValuesAToBeGreaterThanB,
                "distinct_items_within_lines",
                "A basket cannot have more distinct items than lines.",
                column_A="n_lines",
                column_B="n_distinct_items",
                or_equal=True,
            ),
            rule(
                gxe.ExpectColumnValuesToBeBetween,
                "total_quantity_positive",
                "Purchases buy a positive quantity: a basket totalling zero or less is a return.",
                column="total_quantity",
                min_value=1,
            ),
            rule(
                gxe.ExpectColumnValuesToBeBetween,
                "basket_value_positive",
                "Purchases have a positive price: a basket worth nothing is an adjustment.",
                column="basket_value",
                min_value=0,
                strict_min=True,
            ),
        ],
    )


def fct_copurchase_pairs_suite() -> gx.ExpectationSuite:
    """``marts.fct_copurchase_pairs``: unordered item pairs bought together, with measures."""
    t = "fct_copurchase_pairs"
    return gx.ExpectationSuite(
        name=f"{SCHEMA}.{t}",
        expectations=[
            *_key(t, "pair_id"),
            *_not_null(t, "source", "item_a", "item_b", "item_key_a", "item_key_b"),
            rule(
                gxe.ExpectColumnPairValuesAToBeGreaterThanB,
                "pair_ordered",
                "Pairs are unordered and stored once with item_a < item_b; equal items are no pair.",
                column_A="item_b",
                column_B="item_a",
            ),
            rule(
                gxe.ExpectColumnValuesToBeBetween,
                "n_baskets_positive",
                "A pair exists because it was bought together at least once.",
                column="n_baskets",
                min_value=1,
            ),
            *[
                rule(
                    gxe.ExpectColumnValuesToBeBetween,
                    f"{measure}_is_probability",
                    f"{measure} is a probability in (0, 1].",
                    column=measure,
                    min_value=0,
                    max_value=1,
                    strict_min=True,
                )
                for measure in ("support", "confidence_a_to_b", "confidence_b_to_a")
            ],
            rule(
                gxe.ExpectColumnValuesToBeBetween,
                "lift_positive",
                "Lift of a pair seen together is positive.",
                column="lift",
                min_value=0,
                strict_min=True,
            ),
        ],
    )


def marts_suites(sources: Iterable[str] = ()) -> dict[str, gx.ExpectationSuite]:
    """Mart table name -> a fresh suite.

    Args:
        sources: landing sources with landed data; each gets an "events not after its latest
            landed partition" rule (suite parameter ``latest_partition_end__<source>``).
    """
    sources = list(sources)
    return {
        "fct_interactions": fct_interactions_suite(sources),
        "dim_items": dim_items_suite(),
        "fct_user_sequences": fct_user_sequences_suite(),
        "fct_training_examples": fct_training_examples_suite(),
        "fct_baskets": fct_baskets_suite(),
        "fct_copurchase_pairs": fct_copurchase_pairs_suite(),
    }
