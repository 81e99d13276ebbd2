"""Data quality: Great Expectations on the raw rows of a run (quarantine) and on the marts (gate).

Two stages of the flow call this module:

- ``validate_raw`` after ingest: runs the row-level suites of ``expectations.raw`` through a GX
  Checkpoint on the raw rows of the run's partitions, and replaces ``quarantine.rows`` for those
  partitions with one row per failing raw row (first failing rule, reason, all failing rules, the
  row as JSON). dbt staging anti-joins that table, so quarantined rows are kept but never reach
  the marts. ``check_quarantine_gate`` then stops the run when a source quarantines too much.
- ``validate_marts`` after ``dbt build``: table-level suites of ``expectations.marts``; any failure
  raises ``QualityGateError`` and so blocks publishing the "marts" asset.

GX validates pandas DataFrames read from the warehouse, not the warehouse through SQLAlchemy:
GX 1.24's SQL path is broken on DuckDB (every expectation fails with "list index out of range"),
and one code path serves DuckDB and PostgreSQL alike. The GX project is a file context under
``settings.gx_dir``: suites, checkpoints and validation results persist there and the Data Docs
site (``<gx_dir>/gx/uncommitted/data_docs/local_site/index.html``) shows every run.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

from expectations import marts as marts_rules
from expectations import raw as raw_rules
from expectations._rules import columns_used, rule_name, rule_reason
from ml.core import schemas
from ml.core.calendar import partition_end
from ml.core.settings import Settings, get_settings
from ml.core.warehouse import Warehouse

if TYPE_CHECKING:
    import great_expectations as gx
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
    )
    from great_expectations.data_context.types.resource_identifiers import ValidationResultIdentifier

log = logging.getLogger(__name__)

DATASOURCE = "shopflow_warehouse"
DOCS_SITE = "local_site"
ROW_ID = "_row_id"

# Raw rows: every failing row's id is needed, so COMPLETE. With _row_id as the frame's named index
# and exclude_unexpected_values, GX returns the ids as one list per expectation instead of a dict
# per row (235k guest lines: a list costs ~0.1 s, per-row dicts several seconds and 10x the JSON).
RAW_RESULT_FORMAT: dict[str, Any] = {
    "result_format": "COMPLETE",
    "unexpected_index_column_names": [ROW_ID],
    "exclude_unexpected_values": True,
    "return_unexpected_index_query": False,
    "partial_unexpected_count": 20,
}
# Marts: only whether each expectation holds and what was observed.
MARTS_RESULT_FORMAT: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": 10}


class QualityGateError(RuntimeError):
    """Data failed a quality gate; publishing must stop. ``result`` holds the details."""

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


class QualityCheckError(RuntimeError):
    """A check could not be evaluated (an expectation raised, GX returned incomplete results)."""


# -- results -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TableValidation:
    """Raw rows of one source table in the run's partitions, after the raw suite."""

    source: str
    table: str
    suite: str
    partitions: list[date]
    landed: int
    quarantined: int
    by_reason: dict[str, int]
    """Quarantined rows by their first failing rule (suite order): sums to ``quarantined``."""
    by_expectation: dict[str, int]
    """Rows failing each rule, whether first or not (GX's unexpected_count)."""
    seconds: float

    @property
    def accepted(self) -> int:
        return self.landed - self.quarantined


@dataclass(frozen=True)
class SourceCounts:
    """One landing source's totals over its tables."""

    source: str
    landed: int
    accepted: int
    quarantined: int
    by_reason: dict[str, int]

    @property
    def quarantine_rate(self) -> float:
        return self.quarantined / self.landed if self.landed else 0.0


@dataclass
class RawValidation:
    """What ``validate_raw`` found and wrote for one run."""

    run_id: str
    start: date
    end: date
    tables: list[TableValidation] = field(default_factory=list)
    data_docs: Path | None = None
    seconds: float = 0.0

    @property
    def sources(self) -> dict[str, SourceCounts]:
        """Totals per landing source (a catalog source has interactions and items)."""
        out: dict[str, SourceCounts] = {}
        for source in dict.fromkeys(t.source for t in self.tables):
            tables = [t for t in self.tables if t.source == source]
            reasons: Counter[str] = Counter()
            for t in tables:
                reasons.update(t.by_reason)
            out[source] = SourceCounts(
                source=source,
                landed=sum(t.landed for t in tables),
                accepted=sum(t.accepted for t in tables),
                quarantined=sum(t.quarantined for t in tables),
                by_reason=dict(reasons.most_common()),
            )
        return out

    @property
    def landed(self) -> int:
        return sum(t.landed for t in self.tables)

    @property
    def quarantined(self) -> int:
        return sum(t.quarantined for t in self.tables)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (for XCom, logs and the CLI)."""
        return {
            "run_id": self.run_id,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "seconds": round(self.seconds, 2),
            "data_docs": str(self.data_docs) if self.data_docs else None,
            "sources": {
                name: {**asdict(counts), "quarantine_rate": round(counts.quarantine_rate, 6)}
                for name, counts in self.sources.items()
            },
            "tables": [
                {
                    **asdict(t),
                    "accepted": t.accepted,
                    "partitions": [p.isoformat() for p in t.partitions],
                    "seconds": round(t.seconds, 2),
                }
                for t in self.tables
            ],
        }


@dataclass(frozen=True)
class MartsFailure:
    """One failing marts expectation."""

    table: str
    column: str | None
    rule: str
    expectation: str
    observed: str
    reason: str

    def __str__(self) -> str:
        where = f"marts.{self.table}" + (f".{self.column}" if self.column else "")
        return f"{where}: {self.rule} ({self.expectation}) failed, observed {self.observed}. {self.reason}"


@dataclass
class MartsValidation:
    """What ``validate_marts`` checked."""

    run_id: str
    success: bool
    rows: dict[str, int] = field(default_factory=dict)
    failures: list[MartsFailure] = field(default_factory=list)
    evaluated: int = 0
    data_docs: Path | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "success": self.success,
            "rows": self.rows,
            "evaluated_expectations": self.evaluated,
            "failures": [asdict(f) for f in self.failures],
            "data_docs": str(self.data_docs) if self.data_docs else None,
            "seconds": round(self.seconds, 2),
        }


# -- the GX project ------------------------------------------------------------------------------
def gx_context(settings: Settings | None = None) -> gx.data_context.FileDataContext:
    """The file-mode GX project under ``settings.gx_dir`` (created on first use)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    settings = settings or get_settings()
    settings.gx_dir.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=settings.gx_dir)
    bars = context.variables.progress_bars  # a ProgressBarsConfig, or a dict once read back from YAML
    globally = bars.get("globally") if isinstance(bars, dict) else getattr(bars, "globally", None)
    if globally is not False:
        # Progress bars would flood the Airflow task logs.
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        context.variables.save()
    return context


def data_docs_index(context: Any) -> Path | None:
    """Path of the local Data Docs site's index.html, if it has been built."""
    for site in context.get_docs_sites_urls(site_name=DOCS_SITE):
        url = site.get("site_url")
        if url:
            return Path(unquote(urlparse(url).path))
    return None


def run_checkpoint(
    context: Any,
    *,
    name: str,
    asset: str,
    suite: gx.ExpectationSuite,
    frame: pd.DataFrame,
    run_id: str,
    result_format: dict[str, Any],
    parameters: dict[str, Any] | None = None,
) -> tuple[ValidationResultIdentifier, ExpectationSuiteValidationResult]:
    """Validate ``frame`` against ``suite`` through a Checkpoint that updates Data Docs.

    The suite, validation definition and checkpoint are written to the GX project on every call
    (add or update): the code in ``expectations/`` is the source of truth, never the YAML/JSON.

    Args:
        context: the GX data context.
        name: checkpoint and validation definition name.
        asset: dataframe asset name in the ShopFlow pandas data source.
        suite: the expectation suite.
        frame: the rows to validate.
        run_id: shown as the run name in Data Docs.
        result_format: GX result format.
        parameters: suite parameter values (``$PARAMETER`` references in the suite).

    Returns:
        The key of the stored validation result, and the result.
    """
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier

    try:
        datasource = context.data_sources.get(DATASOURCE)
    except KeyError:
        datasource = context.data_sources.add_pandas(DATASOURCE)
    if asset in datasource.get_asset_names():
        data_asset = datasource.get_asset(asset)
    else:
        data_asset = datasource.add_dataframe_asset(asset)
    try:
        batch = data_asset.get_batch_definition("whole_frame")
    except KeyError:
        batch = data_asset.add_batch_definition_whole_dataframe("whole_frame")

    stored_suite = context.suites.add_or_update(suite)
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=batch, suite=stored_suite)
    )
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=name,
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="update_data_docs", site_names=[DOCS_SITE])],
            result_format=result_format,
        )
    )
    outcome = checkpoint.run(
        batch_parameters={"dataframe": frame},
        expectation_parameters=parameters or {},
        run_id=RunIdentifier(run_name=run_id, run_time=datetime.now().astimezone()),
    )
    ((key, result),) = outcome.run_results.items()
    for expectation_result in result.results:
        info = expectation_result.exception_info or {}
        if info.get("raised_exception"):
            config = expectation_result.expectation_config
            raise QualityCheckError(
                f"{suite.name}: {config.type if config else '?'} could not be evaluated on {asset}: "
                f"{info.get('exception_message')}"
            )
    return key, result


def slim_stored_result(
    context: Any, key: ValidationResultIdentifier, result: ExpectationSuiteValidationResult
) -> None:
    """Cut the failing-row lists of a stored validation result to a sample (modifies ``result``).

    Quarantine has taken the row ids from them. With ``exclude_unexpected_values`` GX keeps every
    failing id twice (the "partial" list is the whole list in one dict), so a full Online Retail
    load would store ~30 MB of ids, and every Data Docs index build reads every stored result.
    """
    sample = RAW_RESULT_FORMAT["partial_unexpected_count"]
    for expectation_result in result.results:
        details = expectation_result.result
        if not details:
            continue
        details.pop("unexpected_index_list", None)
        partial = details.get("partial_unexpected_index_list")
        if partial and isinstance(partial[0], dict):
            details["partial_unexpected_index_list"] = [
                {column: list(values)[:sample] for column, values in partial[0].items()}
            ]
    context.validation_results_store.set(key, result)


# -- raw: quarantine -----------------------------------------------------------------------------
def _coerce(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """Give the columns their logical types whatever the engine returned (DuckDB or psycopg2)."""
    columns: dict[str, Any] = {}
    for column in schemas.RAW_TABLES[table]:
        values = frame[column.name] if column.name in frame.columns else pd.Series(None, index=frame.index)
        if column.type == schemas.INTEGER:
            columns[column.name] = pd.to_numeric(values, errors="coerce").astype("Int64")
        elif column.type == schemas.FLOAT:
            columns[column.name] = pd.to_numeric(values, errors="coerce").astype("float64")
        elif column.type in (schemas.TIMESTAMP, schemas.DATE):
            columns[column.name] = pd.to_datetime(values, errors="coerce")
        else:
            columns[column.name] = values.astype(object).where(values.notna(), None)
    # Built in one go so the frame is consolidated (GX copies it several times).
    return pd.DataFrame(columns, index=frame.index)


def _as_dates(values: pd.Series) -> list[date]:
    return sorted({pd.Timestamp(v).date() for v in values.dropna().unique()})


def _failures(result: ExpectationSuiteValidationResult, rules: list[str]) -> dict[str, list[str]]:
    """Failing ``_row_id``s per rule, checked against GX's own unexpected counts."""
    failing: dict[str, list[str]] = {r: [] for r in rules}
    for expectation_result in result.results:
        config = expectation_result.expectation_config
        name = rule_name(config)
        details = expectation_result.result or {}
        ids: list[str] = []
        for entry in details.get("unexpected_index_list") or []:
            ids.extend(entry[ROW_ID] if isinstance(entry, dict) else [entry])
        expected = int(details.get("unexpected_count") or 0)
        if len(ids) != expected:
            raise QualityCheckError(
                f"{name}: GX reported {expected} unexpected rows but listed {len(ids)} row ids"
            )
        failing[name] = ids
    return failing


def quarantine_frame(
    frame: pd.DataFrame,
    failing: dict[str, list[str]],
    reasons: dict[str, str],
    *,
    run_id: str,
    table: str,
    quarantined_at: datetime,
) -> pd.DataFrame:
    """One ``quarantine.rows`` row per raw row that failed at least one rule.

    Args:
        frame: the validated raw rows (the raw table's columns, ``_row_id`` among them).
        failing: failing row ids per rule, in suite order.
        reasons: human reason per rule.
        run_id: the validating run.
        table: raw table name.
        quarantined_at: wall-clock time (metadata only).

    Returns:
        Rows in the column order of ``quarantine.rows``.
    """
    rules = list(failing)
    row_ids = pd.Index(frame[ROW_ID].to_numpy())
    matrix = np.zeros((len(frame), len(rules)), dtype=bool)
    for j, name in enumerate(rules):
        if failing[name]:
            positions = row_ids.get_indexer(pd.Index(failing[name]))
            if (positions < 0).any():
                raise QualityCheckError(f"{name}: GX returned row ids that are not in the batch")
            matrix[positions, j] = True
    hit = matrix.any(axis=1)
    columns = [c.name for c in schemas.QUARANTINE]
    if not hit.any():
        return pd.DataFrame(columns=columns)

    rows = frame.iloc[np.flatnonzero(hit)]
    flags = matrix[hit]
    names = np.array(rules, dtype=object)
    first = names[flags.argmax(axis=1)]
    # All failing rules in suite order, built column by column (vectorised, k <= a dozen).
    joined = pd.Series("", index=rows.index, dtype=object)
    for j, name in enumerate(rules):
        joined = joined + np.where(flags[:, j], name + ",", "")
    raw_columns = [c.name for c in schemas.RAW_TABLES[table]]
    as_json = rows[raw_columns].to_json(orient="records", lines=True, date_format="iso", force_ascii=False)
    # pandas escapes "/" as "\\/" (valid JSON, but unreadable in _row_id); every "/" is escaped
    # that way and a data backslash is "\\\\", so undoing it is exact.
    records = as_json.rstrip("\n").replace("\\/", "/").split("\n")
    return pd.DataFrame(
        {
            "run_id": run_id,
            "source": rows["source"].to_numpy(),
            "table_name": table,
            "_partition": pd.to_datetime(rows["_partition"]).dt.normalize().to_numpy(),
            "_row_id": rows[ROW_ID].to_numpy(),
            "expectation": first,
            "reason": [reasons[n] for n in first],
            "failed_expectations": joined.str.rstrip(",").to_numpy(),
            "row_json": records,
            "quarantined_at": pd.Timestamp(quarantined_at),
        }
    )[columns]


@dataclass
class _TableOutcome:
    validation: TableValidation
    quarantine: pd.DataFrame
    audit: pd.DataFrame  # per (partition, loading run): landed, quarantined


def _validate_table(
    context: Any,
    warehouse: Warehouse,
    *,
    source: str,
    table: str,
    start: date,
    end: date,
    run_id: str,
    quarantined_at: datetime,
) -> _TableOutcome:
    began = time.perf_counter()
    suite = raw_rules.RAW_SUITES[table]()
    rules = [rule_name(e) for e in suite.expectations]
    reasons = {rule_name(e): rule_reason(e) for e in suite.expectations}
    raw = warehouse.read(
        f"select * from raw.{table} where source = :source and _partition >= :start and _partition < :end",
        {"source": source, "start": start, "end": end},
    )
    frame = raw_rules.landing_order(_coerce(raw, table))
    del raw
    if not frame[ROW_ID].is_unique:
        raise QualityCheckError(f"raw.{table} ({source}): _row_id is not unique in [{start}, {end})")

    failing: dict[str, list[str]] = {r: [] for r in rules}
    if len(frame):
        key, result = run_checkpoint(
            context,
            name=f"raw.{source}.{table}",
            asset=f"raw.{source}.{table}",
            suite=suite,
            frame=raw_rules.validation_frame(table, frame),
            run_id=run_id,
            result_format=RAW_RESULT_FORMAT,
            parameters={
                raw_rules.INTERVAL_START: datetime.combine(start, datetime.min.time()),
                raw_rules.INTERVAL_END: datetime.combine(end, datetime.min.time()),
            },
        )
        failing = _failures(result, rules)
        slim_stored_result(context, key, result)
        quarantine = quarantine_frame(
            frame,
            failing,
            reasons,
            run_id=run_id,
            table=table,
            quarantined_at=quarantined_at,
        )
    else:
        quarantine = pd.DataFrame(columns=[c.name for c in schemas.QUARANTINE])

    # Audit per partition and per run that loaded it (the audit row of the data now in raw).
    landed = frame.groupby(["_partition", "_run_id"], dropna=False).size().rename("landed")
    bad = frame[ROW_ID].isin(set(quarantine["_row_id"]))
    quarantined = bad.groupby([frame["_partition"], frame["_run_id"]], dropna=False).sum()
    audit = (
        pd.concat([landed, quarantined.rename("quarantined")], axis=1)
        .reset_index()
        .rename(columns={"_partition": "partition", "_run_id": "loaded_by"})
    )

    counts = Counter(quarantine["expectation"])
    validation = TableValidation(
        source=source,
        table=table,
        suite=suite.name,
        partitions=_as_dates(frame["_partition"]),
        landed=len(frame),
        quarantined=len(quarantine),
        by_reason={r: counts[r] for r in rules if counts[r]},
        by_expectation={r: len(ids) for r, ids in failing.items() if ids},
        seconds=time.perf_counter() - began,
    )
    log.info(
        "raw.%s (%s): %d landed, %d quarantined in %.1f s %s",
        table, source, validation.landed, validation.quarantined, validation.seconds, validation.by_reason,
    )  # fmt: skip
    return _TableOutcome(validation, quarantine, audit)


def validate_raw(start: date, end: date, run_id: str, settings: Settings | None = None) -> RawValidation:
    """Validate the raw rows of ``[start, end)`` and replace their quarantine rows.

    For each source table: read the raw rows of the partitions in ``[start, end)``, run its raw
    suite through a GX Checkpoint (results land in Data Docs), and collect the failing ``_row_id``s
    per expectation. Then, in ONE transaction, replace ``quarantine.rows`` of those partitions (one
    row per quarantined raw row) and set ``rows_quarantined`` / ``rows_accepted`` on the
    ``raw.ingest_audit`` rows of the loads now in raw. Rerunning gives the same rows.

    Args:
        start: first day of the data interval (inclusive).
        end: end of the data interval (exclusive).
        run_id: the Airflow (or CLI) run id, recorded on each quarantine row.
        settings: ShopFlow settings.

    Returns:
        Landed / accepted / quarantined counts per table and source, counts by reason, and the
        Data Docs index.

    Raises:
        QualityCheckError: an expectation could not be evaluated; nothing was written.
    """
    settings = settings or get_settings()
    if end <= start:
        raise ValueError(f"empty data interval [{start}, {end})")
    began = time.perf_counter()
    warehouse = Warehouse(settings)
    with warehouse.connect() as con:
        warehouse.ensure_tables(con)
    context = gx_context(settings)
    quarantined_at = datetime.now().replace(microsecond=0)  # metadata only

    outcomes = [
        _validate_table(
            context,
            warehouse,
            source=source,
            table=contract.table,
            start=start,
            end=end,
            run_id=run_id,
            quarantined_at=quarantined_at,
        )
        for source, kind in settings.sources.items()
        for contract in schemas.CONTRACTS_BY_KIND[kind]
    ]

    with warehouse.connect() as con:
        for outcome in outcomes:
            v = outcome.validation
            warehouse.execute(
                con,
                "DELETE FROM quarantine.rows WHERE source = :source AND table_name = :table "
                "AND _partition >= :start AND _partition < :end",
                {"source": v.source, "table": v.table, "start": start, "end": end},
            )
            warehouse.insert(con, "quarantine.rows", outcome.quarantine)
            for row in outcome.audit.itertuples(index=False):
                warehouse.execute(
                    con,
                    "UPDATE raw.ingest_audit SET rows_quarantined = :quarantined, rows_accepted = :accepted "
                    "WHERE run_id = :loaded_by AND source = :source AND table_name = :table "
                    "AND _partition = :partition",
                    {
                        "quarantined": int(row.quarantined),
                        "accepted": int(row.landed) - int(row.quarantined),
                        "loaded_by": row.loaded_by,
                        "source": v.source,
                        "table": v.table,
                        "partition": pd.Timestamp(row.partition).date(),
                    },
                )

    result = RawValidation(
        run_id=run_id,
        start=start,
        end=end,
        tables=[o.validation for o in outcomes],
        data_docs=data_docs_index(context),
        seconds=time.perf_counter() - began,
    )
    log.info("validate_raw %s [%s, %s): %s", run_id, start, end, result.as_dict()["sources"])
    return result


def check_quarantine_gate(result: RawValidation, settings: Settings | None = None) -> None:
    """Stop the run when a source quarantined more than ``settings.max_quarantine_rate`` of its rows.

    Args:
        result: what ``validate_raw`` returned.
        settings: ShopFlow settings (the threshold).

    Raises:
        QualityGateError: naming each offending source, its rate, the threshold and the top reasons.
    """
    settings = settings or get_settings()
    threshold = settings.max_quarantine_rate
    problems = []
    for counts in result.sources.values():
        if counts.landed and counts.quarantine_rate > threshold:
            top = ", ".join(f"{name} {n:,}" for name, n in list(counts.by_reason.items())[:3])
            problems.append(
                f"source {counts.source!r} quarantined {counts.quarantine_rate:.1%} of its rows "
                f"({counts.quarantined:,} of {counts.landed:,} landed in [{result.start}, {result.end})), "
                f"above max_quarantine_rate {threshold:.1%}; top reasons: {top}"
            )
    if problems:
        raise QualityGateError("Quarantine gate failed: " + "; ".join(problems), result)


def latest_partition_ends(warehouse: Warehouse, grain: str) -> dict[str, datetime]:
    """Per source, the end of its latest landed partition (from ``raw.ingest_audit``)."""
    frame = warehouse.read("select source, max(_partition) as latest from raw.ingest_audit group by source")
    return {
        str(row.source): datetime.combine(
            partition_end(pd.Timestamp(row.latest).date(), grain), datetime.min.time()
        )
        for row in frame.itertuples(index=False)
        if pd.notna(row.latest)
    }


def _observed(details: dict[str, Any]) -> str:
    if "observed_value" in details:
        return repr(details["observed_value"])
    if "unexpected_count" in details:
        sample = details.get("partial_unexpected_list") or []
        total = details.get("element_count")
        return f"{details['unexpected_count']} unexpected of {total} rows, e.g. {sample[:5]!r}"
    return repr(details)


def validate_marts(run_id: str, settings: Settings | None = None) -> MartsValidation:
    """Check the marts dbt built; raise if any table-level expectation fails (blocks publish).

    Args:
        run_id: the Airflow (or CLI) run id (Data Docs run name).
        settings: ShopFlow settings (warehouse, partition grain).

    Returns:
        Row counts per mart, expectations evaluated, the Data Docs index.

    Raises:
        QualityGateError: a mart is missing or fails an expectation; the message lists each
            failure (table, column, observed value) and ``.result`` holds the MartsValidation.
    """
    settings = settings or get_settings()
    began = time.perf_counter()
    warehouse = Warehouse(settings)
    ends = (
        latest_partition_ends(warehouse, settings.partition_grain)
        if warehouse.table_exists("raw.ingest_audit")
        else {}
    )
    suites = marts_rules.marts_suites(sorted(ends))
    parameters = {marts_rules.latest_partition_end_parameter(s): end for s, end in ends.items()}
    context = gx_context(settings)
    outcome = MartsValidation(run_id=run_id, success=True)
    for table, suite in suites.items():
        qualified = f"{marts_rules.SCHEMA}.{table}"
        if not warehouse.table_exists(qualified):
            outcome.failures.append(
                MartsFailure(table, None, "table_exists", "table", "missing", "dbt build did not create it.")
            )
            continue
        # Only the columns the suite reads: the largest marts hold millions of rows of text keys.
        present = list(warehouse.read(f"select * from {qualified} limit 0").columns)
        absent = [c for c in columns_used(suite) if c not in present]
        for name in absent:
            outcome.failures.append(
                MartsFailure(table, name, "column_exists", "column", "missing", "dbt no longer builds it.")
            )
        if absent:
            continue
        frame = warehouse.read(f"select {', '.join(columns_used(suite)) or '*'} from {qualified}")
        outcome.rows[table] = len(frame)
        _, result = run_checkpoint(
            context,
            name=f"marts.{table}",
            asset=f"marts.{table}",
            suite=suite,
            frame=frame,
            run_id=run_id,
            result_format=MARTS_RESULT_FORMAT,
            parameters=parameters,
        )
        for r in result.results:
            outcome.evaluated += 1
            if r.success:
                continue
            config = r.expectation_config
            kwargs = config.kwargs if config else {}
            pair = [kwargs[k] for k in ("column_A", "column_B") if kwargs.get(k)]
            column: str | None = kwargs.get("column") or ",".join(kwargs.get("column_list") or pair) or None
            outcome.failures.append(
                MartsFailure(
                    table=table,
                    column=column,
                    rule=rule_name(config),
                    expectation=config.type if config else "?",
                    observed=_observed(r.result or {}),
                    reason=rule_reason(config),
                )
            )
    outcome.success = not outcome.failures
    outcome.data_docs = data_docs_index(context)
    outcome.seconds = time.perf_counter() - began
    if not outcome.success:
        lines = "\n".join(f"  - {f}" for f in outcome.failures)
        raise QualityGateError(
            f"Marts quality gate failed ({len(outcome.failures)} check(s)); publish blocked:\n{lines}"
            + (f"\nData Docs: {outcome.data_docs}" if outcome.data_docs else ""),
            outcome,
        )
    log.info("validate_marts %s: %d expectations passed on %s", run_id, outcome.evaluated, outcome.rows)
    return outcome
