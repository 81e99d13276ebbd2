"""Ingest: load the landing partitions of one data interval into the warehouse's ``raw.*`` tables.

Every file of the interval is read and checked against its contract first; only when all of them
pass is anything written, and then in one transaction that replaces exactly those partitions.
Rerunning an interval therefore changes nothing, and a bad file writes nothing at all.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from ml.core import pii, schemas
from ml.core.catalog import normalize_categories
from ml.core.settings import Settings, get_settings
from ml.core.warehouse import Warehouse

LANDING_SUFFIXES = (".parquet", ".csv")
PARTITION_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})$")
FREE_TEXT = {"review_text", "title", "description"}
HASHED_IDS = {"user_id", "customer_id"}
log = logging.getLogger(__name__)
INGEST_LOCK_KEY = 0x5F10_0001
"""PostgreSQL advisory lock that one ingest transaction holds at a time (any 64-bit number that
no other writer of the warehouse uses)."""
QUARANTINE_LOCK_KEY = 0x5F10_0002
"""The same for the raw gate's write of ``quarantine.rows`` and the audit counts."""


def hold_write_lock(warehouse: Warehouse, con: Any, key: int) -> None:
    """One writer at a time of what ``key`` guards, until ``con``'s transaction ends.

    Two runs of one interval at once (a manual run beside the scheduled one, a retry beside a run
    thought dead) would each DELETE the interval's rows and INSERT them anew: under READ COMMITTED
    the second DELETE does not see the first's uncommitted rows, so both sets stay
    (tests/faults/test_concurrent_runs.py found 112 of 1,268 raw rows, and 1,108 of 1,108
    quarantine rows, twice). On PostgreSQL a transaction-scoped advisory lock makes the second
    wait, then replace the first's rows. DuckDB needs none: its processes already queue on the
    file lock (warehouse.duckdb_lock).
    """
    if warehouse.engine == "postgres":
        warehouse.execute(con, "SELECT pg_advisory_xact_lock(:key)", {"key": key})


class ContractError(ValueError):
    """A landing file breaks its contract. The message names the file, the column and the row."""

    def __init__(self, file: Path, message: str, column: str | None = None, row: int | None = None):
        self.file, self.column, self.row = file, column, row
        where = f"{file}"
        if column is not None:
            where += f", column {column!r}"
        if row is not None:
            where += f", first bad row {row} (0-based, header excluded)"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class FileLoad:
    source: str
    table: str
    partition: date
    file: str
    rows: int
    scrubbed: dict[str, int] = field(default_factory=dict)
    """Free-text values the PII scrubber changed, per column (only columns with changes)."""


@dataclass
class IngestSummary:
    run_id: str
    start: date
    end: date
    files: list[FileLoad] = field(default_factory=list)

    @property
    def rows_by_table(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for load in self.files:
            key = f"{load.source}.{load.table}"
            totals[key] = totals.get(key, 0) + load.rows
        return totals

    @property
    def scrubbed_by_column(self) -> dict[str, int]:
        """Values the PII scrubber changed, per ``source.table.column`` (columns with changes)."""
        totals: dict[str, int] = {}
        for load in self.files:
            for column, changed in load.scrubbed.items():
                key = f"{load.source}.{load.table}.{column}"
                totals[key] = totals.get(key, 0) + changed
        return totals


def partition_files(folder: Path, start: date, end: date) -> list[tuple[date, Path]]:
    """Landing files in ``folder`` whose partition day is in ``[start, end)``, oldest first.

    Files from the future (on or after ``end``) are left for their own run.
    """
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix not in LANDING_SUFFIXES:
            continue  # temp files of a writer in progress, notes, etc.
        match = PARTITION_NAME.match(path.stem)
        if match is None:
            raise ContractError(
                path, "landing file names must be the partition's first day: YYYY-MM-DD.parquet|csv"
            )
        day = date.fromisoformat(match.group(1))
        if start <= day < end:
            found.append((day, path))
    return found


def _read(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=True)
        return pd.read_parquet(path)
    except Exception as error:  # pyarrow/pandas raise many types for corrupt files
        raise ContractError(path, f"cannot be read as {path.suffix[1:].upper()}: {error}") from error


def _first_bad(original: pd.Series, converted: pd.Series) -> int | None:
    bad = original.notna() & converted.isna()
    if original.dtype == object:
        bad &= original.astype(str).str.strip() != ""
    positions = np.flatnonzero(bad.to_numpy())
    return int(positions[0]) if len(positions) else None


def _convert(path: Path, column: schemas.Column, values: pd.Series) -> pd.Series:
    """Cast one column to its contract type, or raise naming the first value that does not fit."""
    if column.type == schemas.STRING:
        out = values.astype("object").where(values.notna(), None)
        return out.map(lambda v: v if v is None else str(v))
    if column.type in (schemas.INTEGER, schemas.FLOAT):
        numbers = pd.to_numeric(values, errors="coerce")
        row = _first_bad(values, numbers)
        if row is None and column.type == schemas.INTEGER:
            fractional = numbers.notna() & (numbers != np.floor(numbers.fillna(0)))
            hits = np.flatnonzero(fractional.to_numpy())
            row = int(hits[0]) if len(hits) else None
        if row is not None:
            raise ContractError(
                path, f"expected {column.type}, got {values.iloc[row]!r}", column=column.name, row=row
            )
        return numbers.astype("Int64") if column.type == schemas.INTEGER else numbers.astype("float64")
    if column.type == schemas.TIMESTAMP:
        if pd.api.types.is_datetime64_any_dtype(values):
            stamps = values
        else:
            # Per value: numbers are unix seconds, anything else must parse as ISO-8601.
            numeric = pd.to_numeric(values, errors="coerce")
            stamps = pd.to_datetime(numeric, unit="s", errors="coerce")
            textual = numeric.isna() & values.notna()
            if textual.any():
                stamps[textual] = pd.to_datetime(values[textual], errors="coerce", format="ISO8601")
            row = _first_bad(values, stamps)
            if row is not None:
                raise ContractError(
                    path,
                    f"expected a timestamp (unix seconds or ISO-8601), got {values.iloc[row]!r}",
                    column=column.name,
                    row=row,
                )
        if getattr(stamps.dt, "tz", None) is not None:
            stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
        return stamps.astype("datetime64[us]")
    raise AssertionError(f"unhandled contract type {column.type}")


def read_landing_file(path: Path, contract: schemas.Contract) -> pd.DataFrame:
    """Read a landing file and cast it to its contract (extra columns dropped)."""
    frame = _read(path)
    missing = [c for c in contract.required if c not in frame.columns]
    if missing:
        raise ContractError(
            path,
            f"missing required column(s) {missing}; found {list(frame.columns)} "
            f"(the {contract.table} contract needs {contract.required})",
            column=missing[0],
        )
    out = pd.DataFrame(index=frame.index)
    for column in contract.columns:
        if column.name in frame.columns:
            out[column.name] = _convert(path, column, frame[column.name])
        else:
            out[column.name] = None
    return out.reset_index(drop=True)


def to_raw(
    frame: pd.DataFrame,
    contract: schemas.Contract,
    *,
    source: str,
    partition: date,
    relative_file: str,
    run_id: str,
    salt: str,
    loaded_at: datetime,
    phone_regions: Sequence[str] | None = None,
    scrubbed: dict[str, int] | None = None,
) -> pd.DataFrame:
    """Hash ids, scrub text, rename to raw columns and add the lineage columns.

    ``phone_regions`` go to the scrubber (None: the setting); ``scrubbed``, when given, receives
    the number of values the scrubber changed per free-text column (columns with changes).
    """
    out = frame.copy()
    for name in out.columns:
        if name in HASHED_IDS:
            out[name] = pii.hash_ids(out[name], salt)
        elif name in FREE_TEXT:
            out[name] = pii.scrub_text(frame[name], phone_regions)
            changed = pii.changed_count(frame[name], out[name])
            if changed and scrubbed is not None:
                scrubbed[name] = changed
    if "categories" in out.columns:
        out["categories"] = normalize_categories(out["categories"])
    if "event_type" in out.columns:
        out["event_type"] = out["event_type"].fillna("interaction")
    out = out.rename(columns=schemas.RAW_RENAMES.get(contract.table, {}))
    out["source"] = source
    out["_row_id"] = [f"{source}/{contract.table}/{partition.isoformat()}/{i}" for i in range(len(out))]
    out["_partition"] = pd.Timestamp(partition)
    out["_source_file"] = relative_file
    out["_run_id"] = run_id
    out["_loaded_at"] = pd.Timestamp(loaded_at)
    return out[[c.name for c in schemas.RAW_TABLES[contract.table]]]


def ingest_interval(start: date, end: date, run_id: str, settings: Settings | None = None) -> IngestSummary:
    """Load every landing partition of ``[start, end)`` into ``raw.*``, replacing those partitions.

    Args:
        start: first day of the data interval (inclusive).
        end: end of the data interval (exclusive).
        run_id: the Airflow run (or CLI run) id, recorded on every row and in the audit.
        settings: ShopFlow settings.

    Returns:
        What was loaded, per file. An interval with no landing files is a no-op.

    Raises:
        ContractError: a file cannot be read or breaks its contract; nothing was written.
    """
    settings = settings or get_settings()
    if end <= start:
        raise ValueError(f"empty data interval [{start}, {end})")
    salt = settings.salt()
    loaded_at = datetime.now().replace(microsecond=0)  # metadata only: rows stay identical on rerun
    summary = IngestSummary(run_id=run_id, start=start, end=end)

    prepared: list[tuple[str, pd.DataFrame, FileLoad]] = []
    for source, kind in settings.sources.items():
        for contract in schemas.CONTRACTS_BY_KIND[kind]:
            files = partition_files(settings.landing_dir / source / contract.table, start, end)
            for day, path in tqdm(
                files, desc=f"ingest {source}/{contract.table}", unit="file", leave=False, disable=None
            ):
                relative = str(path.relative_to(settings.landing_dir))
                frame = read_landing_file(path, contract)
                scrubbed: dict[str, int] = {}
                raw = to_raw(
                    frame,
                    contract,
                    source=source,
                    partition=day,
                    relative_file=relative,
                    run_id=run_id,
                    salt=salt,
                    loaded_at=loaded_at,
                    phone_regions=settings.pii_phone_regions,
                    scrubbed=scrubbed,
                )
                if scrubbed:
                    log.warning("PII scrubbed in %s (values changed per column): %s", relative, scrubbed)
                load = FileLoad(source, contract.table, day, relative, len(raw), scrubbed)
                prepared.append((contract.table, raw, load))

    if not prepared:
        return summary

    warehouse = Warehouse(settings)
    with warehouse.connect() as con:
        hold_write_lock(warehouse, con, INGEST_LOCK_KEY)
        warehouse.ensure_tables(con)
        log.info(
            "ingest %s [%s, %s): writing %d file(s) in one transaction", run_id, start, end, len(prepared)
        )
        for table, raw, load in prepared:
            log.debug(
                "ingest %s: replacing raw.%s partition %s (%d rows)", run_id, table, load.file, load.rows
            )
            params = {"source": load.source, "partition": load.partition}
            warehouse.execute(
                con, f"DELETE FROM raw.{table} WHERE source = :source AND _partition = :partition", params
            )
            warehouse.insert(con, f"raw.{table}", raw)
            warehouse.execute(
                con,
                "DELETE FROM raw.ingest_audit WHERE run_id = :run_id AND source = :source "
                "AND table_name = :table AND _partition = :partition",
                {**params, "run_id": run_id, "table": table},
            )
            audit = {
                "run_id": run_id,
                "source": load.source,
                "table_name": table,
                "_partition": pd.Timestamp(load.partition),
                "file": load.file,
                "rows_landed": load.rows,
                "rows_loaded": load.rows,
                "loaded_at": pd.Timestamp(loaded_at),
            }
            warehouse.insert(con, "raw.ingest_audit", pd.DataFrame([audit]))
            summary.files.append(load)
    log.info("ingest %s [%s, %s): committed %d file(s)", run_id, start, end, len(summary.files))
    return summary
