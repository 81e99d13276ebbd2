"""The raw gate: row-level suites on a run's raw rows, quarantine, and the quarantine-rate limit.

``validate_raw`` runs after ingest: the suites of ``expectations.raw`` through a GX Checkpoint on
the raw rows of the run's partitions, and replaces ``quarantine.rows`` for those partitions with
one row per failing raw row (first failing rule, reason, all failing rules, the row as JSON). dbt
staging anti-joins that table, so quarantined rows are kept but never reach the marts.
``check_quarantine_gate`` then stops the run when a source quarantines too much.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from expectations import raw as raw_rules
from expectations._rules import rating_scale_parameters, rule_name, rule_reason
from ml.core import schemas
from ml.core.settings import Settings, get_settings
from ml.core.warehouse import Warehouse
from ml.data.ingest import QUARANTINE_LOCK_KEY, hold_write_lock
from ml.data.quality.gx import (
    RAW_RESULT_FORMAT,
    ROW_ID,
    QualityCheckError,
    QualityGateError,
    as_dates,
    coerce_types,
    data_docs_index,
    failures_by_rule,
    gx_context,
    run_checkpoint,
    slim_stored_result,
)

log = logging.getLogger(__name__)


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
class TableOutcome:
    validation: TableValidation
    quarantine: pd.DataFrame
    audit: pd.DataFrame  # per (partition, loading run): landed, quarantined


def validate_table(
    context: Any,
    warehouse: Warehouse,
    *,
    source: str,
    table: str,
    start: date,
    end: date,
    run_id: str,
    quarantined_at: datetime,
    rating_scale: tuple[float, float],
) -> TableOutcome:
    began = time.perf_counter()
    suite = raw_rules.RAW_SUITES[table]()
    rules = [rule_name(e) for e in suite.expectations]
    reasons = {rule_name(e): rule_reason(e) for e in suite.expectations}
    raw = warehouse.read(
        f"select * from raw.{table} where source = :source and _partition >= :start and _partition < :end",
        {"source": source, "start": start, "end": end},
    )
    frame = raw_rules.landing_order(coerce_types(raw, table))
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
                **rating_scale_parameters(rating_scale),
            },
        )
        failing = failures_by_rule(result, rules)
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
        partitions=as_dates(frame["_partition"]),
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
    return TableOutcome(validation, quarantine, audit)


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
        validate_table(
            context,
            warehouse,
            source=source,
            table=contract.table,
            start=start,
            end=end,
            run_id=run_id,
            quarantined_at=quarantined_at,
            rating_scale=settings.rating_scale,
        )
        for source, kind in settings.sources.items()
        for contract in schemas.CONTRACTS_BY_KIND[kind]
    ]

    with warehouse.connect() as con:
        # Two gates of one interval at once would both delete, then both insert: doubled rows.
        hold_write_lock(warehouse, con, QUARANTINE_LOCK_KEY)
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
