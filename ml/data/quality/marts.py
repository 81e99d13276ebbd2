"""The marts gate: table-level suites of ``expectations.marts`` after ``dbt build``.

Any failure raises ``QualityGateError`` and so blocks publishing the "marts" asset. Freshness is
checked against the end of each source's latest landed partition (``raw.ingest_audit``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from expectations import marts as marts_rules
from expectations._rules import columns_used, rating_scale_parameters, rule_name, rule_reason
from ml.core.calendar import partition_end
from ml.core.settings import Settings, get_settings
from ml.core.warehouse import Warehouse
from ml.data.quality.gx import (
    MARTS_RESULT_FORMAT,
    QualityGateError,
    build_data_docs,
    gx_context,
    run_checkpoint,
)

log = logging.getLogger(__name__)


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
    reused: dict[str, str] = field(default_factory=dict)
    """Table → the run whose passing validation still holds: same rows (fingerprint), same suite
    and parameters, so GX would evaluate the same expectations on the same data again."""
    data_docs: Path | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "success": self.success,
            "rows": self.rows,
            "evaluated_expectations": self.evaluated,
            "reused": self.reused,
            "failures": [asdict(f) for f in self.failures],
            "data_docs": str(self.data_docs) if self.data_docs else None,
            "seconds": round(self.seconds, 2),
        }


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


# -- unchanged marts ----------------------------------------------------------------------------
# Every interval rebuilds all marts, but most of them do not change: Online Retail's marts stay
# the same while Beauty's later months are replayed, and GX on their 2M pandas rows was ~15 s of
# each ingest run. A mart whose rows and suite are both unchanged since a passing validation
# would pass again, so that result is reused, and the run says which one.
VALIDATED_FILE = "marts_validated.json"
"""Under ``settings.gx_dir``: per mart, the fingerprint, suite key and run of its last pass."""


def fingerprint(warehouse: Warehouse, qualified: str, columns: list[str]) -> tuple[int, str]:
    """(rows, content hash) of ``columns`` of a table, computed in the warehouse.

    An order-independent sum of per-row hashes: the same rows in any order give the same value.
    """
    listed = ", ".join(columns)
    if warehouse.engine == "duckdb":
        digest = f"sum(hash({listed}))"
    else:
        digest = f"sum(('x' || substr(md5(row({listed})::text), 1, 15))::bit(60)::bigint)"
    row = warehouse.read(f"select count(*) as n, coalesce({digest}, 0) as h from {qualified}").iloc[0]
    return int(row["n"]), f"{int(row['n'])}:{row['h']}"


def suite_key(suite: Any, parameters: dict[str, Any]) -> str:
    """A hash of the suite's expectations and of the parameter values it references."""
    body = json.dumps(suite.to_json_dict()["expectations"], sort_keys=True, default=str)
    used = {name: str(value) for name, value in sorted(parameters.items()) if f'"{name}"' in body}
    return hashlib.sha256(json.dumps([body, used]).encode()).hexdigest()[:16]


def _read_validated(settings: Settings) -> dict[str, dict[str, Any]]:
    path = settings.gx_dir / VALIDATED_FILE
    try:
        return dict(json.loads(path.read_text()))
    except (FileNotFoundError, ValueError):
        return {}


def _write_validated(settings: Settings, validated: dict[str, dict[str, Any]]) -> None:
    path = settings.gx_dir / VALIDATED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(validated, indent=1, sort_keys=True))
    partial.replace(path)  # atomic: a killed task leaves the old file, never half of one


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
    parameters: dict[str, Any] = {
        **{marts_rules.latest_partition_end_parameter(s): end for s, end in ends.items()},
        **rating_scale_parameters(settings.rating_scale),
    }
    context = gx_context(settings)
    validated = _read_validated(settings)
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
        columns = columns_used(suite) or present
        rows, content = fingerprint(warehouse, qualified, columns)
        key = suite_key(suite, parameters)
        prior = validated.get(table) or {}
        if prior.get("fingerprint") == content and prior.get("suite") == key:
            outcome.rows[table] = rows
            outcome.reused[table] = str(prior.get("run_id"))
            continue
        frame = warehouse.read(f"select {', '.join(columns)} from {qualified}")
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
            update_docs=False,
        )
        evaluated = outcome.evaluated
        failed = len(outcome.failures)
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
        if len(outcome.failures) == failed:
            validated[table] = {
                "fingerprint": content,
                "suite": key,
                "run_id": run_id,
                "rows": rows,
                "expectations": outcome.evaluated - evaluated,
            }
        else:
            validated.pop(table, None)
    _write_validated(settings, validated)
    outcome.success = not outcome.failures
    outcome.data_docs = build_data_docs(context)
    outcome.seconds = time.perf_counter() - began
    if not outcome.success:
        lines = "\n".join(f"  - {f}" for f in outcome.failures)
        raise QualityGateError(
            f"Marts quality gate failed ({len(outcome.failures)} check(s)); publish blocked:\n{lines}"
            + (f"\nData Docs: {outcome.data_docs}" if outcome.data_docs else ""),
            outcome,
        )
    log.info("validate_marts %s: %d expectations passed on %s", run_id, outcome.evaluated, outcome.rows)
    for table, earlier in outcome.reused.items():
        log.info(
            "validate_marts %s: marts.%s unchanged since %s (same rows, same suite): its pass holds",
            run_id,
            table,
            earlier,
        )
    return outcome
