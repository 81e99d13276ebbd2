"""Column names and types of the landing contracts and of the warehouse tables ingest writes.

One place for them: ingest checks landing files against ``CONTRACTS``, creates ``raw.*`` from
``RAW_TABLES``, the GX suites and dbt sources name the same columns.
"""

from __future__ import annotations

from dataclasses import dataclass

# Logical column types, mapped to each engine's SQL type below.
STRING, INTEGER, FLOAT, TIMESTAMP, DATE = "string", "integer", "float", "timestamp", "date"

SQL_TYPES: dict[str, dict[str, str]] = {
    "duckdb": {STRING: "VARCHAR", INTEGER: "BIGINT", FLOAT: "DOUBLE", TIMESTAMP: "TIMESTAMP", DATE: "DATE"},
    "postgres": {
        STRING: "TEXT",
        INTEGER: "BIGINT",
        FLOAT: "DOUBLE PRECISION",
        TIMESTAMP: "TIMESTAMP",
        DATE: "DATE",
    },
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool = True
    description: str = ""


@dataclass(frozen=True)
class Contract:
    """What a landing file of one table must hold. Extra columns are ignored."""

    table: str
    columns: tuple[Column, ...]
    time_column: str | None

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


INTERACTIONS = Contract(
    table="interactions",
    time_column="timestamp",
    columns=(
        Column("user_id", STRING, description="The shop's user id (hashed with the salt at ingest)."),
        Column("item_id", STRING, description="The item interacted with."),
        Column("timestamp", TIMESTAMP, description="When: unix seconds or an ISO-8601 date/time."),
        Column("event_type", STRING, False, "view, click, cart, purchase, review… (default 'interaction')."),
        Column("rating", FLOAT, False, "Explicit rating, if the shop has one."),
        Column("review_text", STRING, False, "Free text; emails and phone numbers are scrubbed."),
        Column("sequence_number", INTEGER, False, "Order within a user's history when timestamps tie."),
    ),
)

ITEMS = Contract(
    table="items",
    time_column=None,
    columns=(
        Column("item_id", STRING),
        Column("title", STRING, description="Product title (may be empty for a few items)."),
        Column("description", STRING, False),
        Column("categories", STRING, False, "Category path: 'A > B', 'A|B' or a quoted list."),
        Column("brand", STRING, False),
        Column("price", FLOAT, False),
    ),
)

INVOICE_LINES = Contract(
    table="invoice_lines",
    time_column="invoice_ts",
    columns=(
        Column("invoice", STRING, description="Invoice number; a leading 'C' marks a cancellation."),
        Column("stock_code", STRING),
        Column("description", STRING, False),
        Column("quantity", INTEGER),
        Column("invoice_ts", TIMESTAMP),
        Column("price", FLOAT, description="Unit price."),
        Column("customer_id", STRING, False, "Missing for guest checkouts (hashed at ingest)."),
        Column("country", STRING, False),
    ),
)

CONTRACTS_BY_KIND: dict[str, tuple[Contract, ...]] = {
    "catalog": (INTERACTIONS, ITEMS),
    "invoice_lines": (INVOICE_LINES,),
}

# Columns every raw table carries besides the contract's.
META_COLUMNS: tuple[Column, ...] = (
    Column("source", STRING, description="Landing source name (settings.sources)."),
    Column("_row_id", STRING, description="Deterministic: '<source>/<table>/<partition>/<row number>'."),
    Column("_partition", DATE, description="Start of the landing partition the row came in."),
    Column("_source_file", STRING, description="Landing file, relative to the landing dir."),
    Column("_run_id", STRING, description="Airflow run (or CLI run) that loaded it."),
    Column("_loaded_at", TIMESTAMP, description="Wall-clock load time (metadata only)."),
)

# Contract columns are stored under their contract names, except the interaction time.
RAW_RENAMES = {"interactions": {"timestamp": "event_ts"}}


def raw_columns(contract: Contract) -> list[Column]:
    renames = RAW_RENAMES.get(contract.table, {})
    return [
        Column(renames.get(c.name, c.name), c.type, c.required, c.description) for c in contract.columns
    ] + list(META_COLUMNS)


RAW_TABLES: dict[str, list[Column]] = {c.table: raw_columns(c) for c in (INTERACTIONS, ITEMS, INVOICE_LINES)}

INGEST_AUDIT = [
    Column("run_id", STRING),
    Column("source", STRING),
    Column("table_name", STRING),
    Column("_partition", DATE),
    Column("file", STRING),
    Column("rows_landed", INTEGER),
    Column("rows_loaded", INTEGER, description="Rows written to raw (equals landed)."),
    Column("rows_quarantined", INTEGER, False, "Filled in by validate_raw."),
    Column("rows_accepted", INTEGER, False, "landed - quarantined: rows that reach staging."),
    Column("loaded_at", TIMESTAMP),
]

QUARANTINE = [
    Column("run_id", STRING),
    Column("source", STRING),
    Column("table_name", STRING),
    Column("_partition", DATE),
    Column("_row_id", STRING),
    Column("expectation", STRING, description="First failing expectation (suite order)."),
    Column("reason", STRING, description="Human-readable reason."),
    Column("failed_expectations", STRING, description="All failing expectations, comma-separated."),
    Column("row_json", STRING, description="The raw row as JSON, so nothing is lost."),
    Column("quarantined_at", TIMESTAMP),
]

# -- monitoring.* : what the Bento served, and what each monitoring run concluded ---------------
SERVING_REQUESTS = [
    Column("request_file", STRING, description="Request log file name (requests-<day>.jsonl)."),
    Column("line_no", INTEGER, description="1-based line in that file: (file, line) is the key."),
    Column("logged_at", TIMESTAMP, description="When the Bento answered (UTC)."),
    Column("endpoint", STRING),
    Column("model_version", STRING, description="Registry tag of the model that answered."),
    Column("user_hash", STRING, False, "sha256 of the (already salted-hashed) user id, 16 hex."),
    Column("strategy", STRING, False, "recommend only: personalized or cold_start_popular."),
    Column("k", INTEGER, False),
    Column("items", STRING, description="Returned item ids, JSON list, best first."),
    Column("scores", STRING, description="Their scores, JSON list."),
    Column("latency_ms", FLOAT),
    # The texts the response served (recommend reasons, bundle name + description, ask answer):
    # the monitoring run's fallback and check-failure rates per interval. NULL: an endpoint or a
    # line from before these were logged.
    Column("texts_served", INTEGER, False, "Generated or template texts in the response."),
    Column("texts_generated", INTEGER, False, "Written by the generator and passed the check."),
    Column("texts_fallback", INTEGER, False, "Written by the generator, failed the check: template served."),
    Column("texts_template", INTEGER, False, "The template, without a generation (not packaged, no budget)."),
    Column("check_failures", STRING, False, "Failed grounding rules of the fallbacks, JSON {rule: count}."),
    Column("batch_id", STRING, description="The monitoring run that loaded the line."),
    Column("loaded_at", TIMESTAMP),
]

MONITORING_RUNS = [
    Column("run_id", STRING),
    Column("interval_start", DATE),
    Column("interval_end", DATE),
    Column("model_version", STRING, False),
    Column("data_drift_share", FLOAT, False, "Share of monitored columns that drifted."),
    Column("data_drifted", INTEGER, False, "1 when data_drift_share passed the threshold."),
    Column("prediction_drift_share", FLOAT, False),
    Column("prediction_drifted", INTEGER, False),
    Column("online_hit_rate", FLOAT, False, "Served recommendations that the user then bought."),
    Column("online_requests", INTEGER, False, "Recommendations judged for online quality."),
    Column("expected_hit_rate", FLOAT, False, "The champion's offline recall@10."),
    Column("action", STRING, description="retrain, alert (retraining suppressed) or none."),
    Column("reason", STRING),
    Column("report_dir", STRING),
    Column("decided_at", TIMESTAMP),
]

MONITORING_TABLES: dict[str, list[Column]] = {
    "monitoring.requests": SERVING_REQUESTS,
    "monitoring.runs": MONITORING_RUNS,
}


def create_table_sql(engine: str, qualified_name: str, columns: list[Column]) -> str:
    types = SQL_TYPES[engine]
    cols = ",\n  ".join(f"{c.name} {types[c.type]}" for c in columns)
    return f"CREATE TABLE IF NOT EXISTS {qualified_name} (\n  {cols}\n)"
