"""Land a shop's own files: checked against the landing contract, cut into partitions, written where
ingest reads them (``<landing_dir>/<source>/<table>/<YYYY-MM-DD>.parquet``).

This is the bring-your-own-data entry point: ``shopflow land PATH --source NAME --table TABLE``.

- **Checked first, written last.** Every input file is read and cast to its contract (ingest's
  ``read_landing_file``: the same ``ContractError`` naming file, column and first bad row), every
  partition is merged in memory, and only then is anything written, each partition file atomically
  (replay's ``write_atomically``: temp file + rename). A file that breaks the contract leaves the
  landing folder exactly as it was.
- **Partitions.** Rows with a time (interactions, invoice lines) are cut by
  ``settings.partition_grain`` on the partition calendar (``ml.core.calendar``), as replay cuts the
  shipped data, so no row lies outside its file's partition (which the raw gate quarantines).
- **Items have no date.** An items file lands in ONE partition: ``as_of``'s partition when given,
  else the first partition of the source's landed interactions, so the run that loads the oldest
  history loads the catalogue with it (a partition dated today would be skipped by a history run
  whose END is in the past). An item landed again in a later partition is an update: dbt staging
  keeps the newest partition's row of each item (``stg_shop__items``).
- **Landing again merges.** Rows are added to a partition that already exists: interaction rows
  identical to rows already there are skipped (so landing the same file twice changes nothing), an
  item landed again in the same partition replaces its earlier row. ``replace=True`` rewrites the
  partitions the input touches with the input's rows only (to correct a bad export).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pandas as pd

from ml.core import schemas
from ml.core.calendar import partition_end, partition_start
from ml.core.settings import Settings, get_settings
from ml.data.ingest import LANDING_SUFFIXES, ContractError, partition_files, read_landing_file
from ml.data.replay import write_atomically

SOURCE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
ITEM_KEY = "item_id"

# Pandas dtypes of the contract types: every landed partition is written with the same schema.
_DTYPES = {
    schemas.STRING: "object",
    schemas.INTEGER: "Int64",
    schemas.FLOAT: "float64",
    schemas.TIMESTAMP: "datetime64[us]",
}


class LandError(ContractError):
    """Nothing was landed: the message names the file, the column, the first bad row and how many
    rows are affected (or how many the file has)."""

    @classmethod
    def wrap(cls, error: ContractError, rows: int | None) -> LandError:
        """Ingest's contract error, with the file's row count added."""
        wrapped = cls.__new__(cls)
        ValueError.__init__(
            wrapped, f"{error}" + (f" ({rows:,} rows in the file)" if rows is not None else "")
        )
        wrapped.file, wrapped.column, wrapped.row = error.file, error.column, error.row
        return wrapped


@dataclass(frozen=True)
class LandedPartition:
    """One partition file written (or left as it was) by ``land``."""

    partition: date
    path: Path
    added: int
    """Rows of the input written to this partition."""
    skipped: int = 0
    """Input rows identical to rows already in the partition: not written twice."""
    replaced: int = 0
    """Rows already in the partition that the input replaced (items landed again; ``replace``)."""
    total: int = 0
    """Rows in the partition file after landing."""


@dataclass
class LandResult:
    """What ``land`` read and wrote."""

    source: str
    table: str
    grain: str
    files: list[Path]
    rows: int
    partitions: list[LandedPartition] = field(default_factory=list)

    @property
    def written(self) -> list[LandedPartition]:
        """Partitions whose file changed (a partition that got only already-landed rows did not)."""
        return [p for p in self.partitions if p.added or p.replaced]

    @property
    def interval(self) -> tuple[date, date]:
        """``[first partition's start, last partition's end)``: the run-interval that loads them all."""
        first = min(p.partition for p in self.partitions)
        last = max(p.partition for p in self.partitions)
        return first, partition_end(last, self.grain)


def _contract(settings: Settings, source: str, table: str | None) -> schemas.Contract:
    if not SOURCE_NAME.match(source):
        raise ValueError(f"source name {source!r}: use letters, digits, '_' and '-' only")
    kind = settings.sources.get(source)
    if kind is None:
        known: dict[str, str] = {**settings.sources, source: "catalog"}
        raise ValueError(
            f"unknown source {source!r}: ingest and the raw gate read only the sources in "
            f"SHOPFLOW_SOURCES (now {sorted(settings.sources)}), so its files would never be "
            f"loaded. Set it (it replaces the default list; keep the sources you still use), e.g. "
            f"export SHOPFLOW_SOURCES='{json.dumps(known)}'"
        )
    contracts = {c.table: c for c in schemas.CONTRACTS_BY_KIND[kind]}
    if table is None:
        return next(iter(contracts.values()))
    if table not in contracts:
        raise ValueError(
            f"source {source!r} follows the {kind!r} contract, whose tables are {sorted(contracts)}; "
            f"got --table {table!r}"
        )
    return contracts[table]


def input_files(path: Path) -> list[Path]:
    """``path`` itself, or the CSV and Parquet files of a folder (not recursive), sorted by name."""
    if path.is_dir():
        found = sorted(
            p
            for p in path.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in LANDING_SUFFIXES
        )
        if not found:
            raise LandError(path, f"no {' or '.join(LANDING_SUFFIXES)} files in this folder")
        return found
    if not path.is_file():
        raise LandError(path, "no such file or folder")
    if path.suffix.lower() not in LANDING_SUFFIXES:
        raise LandError(path, f"not a landing file: use {' or '.join(LANDING_SUFFIXES)}")
    return [path]


def _row_count(path: Path) -> int | None:
    """Rows of a file that failed its contract, for the error message (None when unreadable)."""
    try:
        if path.suffix.lower() == ".csv":
            return len(pd.read_csv(path, usecols=[0], dtype=str))
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception:  # the file is broken: its contract error already says so
        return None


def _typed(frame: pd.DataFrame, contract: schemas.Contract) -> pd.DataFrame:
    """The contract's columns with their contract dtypes (absent optional columns are all-null)."""
    return pd.DataFrame(
        {c.name: frame[c.name].astype(_DTYPES[c.type]) for c in contract.columns}, index=frame.index
    )


def _read(path: Path, contract: schemas.Contract) -> pd.DataFrame:
    """The file cast to its contract by ingest's own reader, so land refuses what ingest would."""
    try:
        cast = read_landing_file(path, contract)
    except ContractError as error:
        raise LandError.wrap(error, _row_count(path)) from error
    return _typed(cast, contract)


def _partition_keys(frame: pd.DataFrame, path: Path, contract: schemas.Contract, grain: str) -> pd.Series:
    """The first day of each row's partition (the calendar's, as replay cuts the shipped data)."""
    assert contract.time_column is not None
    stamps = frame[contract.time_column]
    missing = stamps.isna()
    if missing.any():
        first = int(missing.to_numpy().nonzero()[0][0])
        raise LandError(
            path,
            f"{int(missing.sum()):,} of {len(frame):,} rows have no {contract.time_column}: a row "
            "without a time belongs to no partition",
            column=contract.time_column,
            row=first,
        )
    return partition_start(stamps, grain)


def _items_as_of(settings: Settings, source: str, as_of: date | None) -> date:
    """The day an items file lands on: ``as_of``, else the source's first landed interactions day."""
    if as_of is not None:
        return as_of
    landed = partition_files(settings.landing_dir / source / "interactions", date.min, date.max)
    if not landed:
        raise ValueError(
            f"items have no date, and source {source!r} has no interactions landed yet to place "
            "them with: land the interactions first (the catalogue then lands in their first "
            "partition, so the history run loads it), or give --as-of: the first day of the "
            "interval that should load it"
        )
    return landed[0][0]


def _merge(
    existing: pd.DataFrame | None, new: pd.DataFrame, contract: schemas.Contract, replace: bool
) -> tuple[pd.DataFrame, int, int, int]:
    """The partition's rows after landing ``new``, and (added, skipped, replaced)."""
    if existing is None or not len(existing):
        return new, len(new), 0, 0
    if replace:
        return new, len(new), 0, len(existing)
    if contract.time_column is None:
        # Items: the same item landed again is an update; its newest row is the one kept.
        stale = existing[ITEM_KEY].isin(set(new[ITEM_KEY].dropna()))
        merged = pd.concat([existing[~stale], new], ignore_index=True)
        return merged, len(new), 0, int(stale.sum())
    # Events: a row identical to one already landed is the same event exported twice.
    seen = set(pd.util.hash_pandas_object(existing, index=False))
    fresh = ~pd.util.hash_pandas_object(new, index=False).isin(seen).to_numpy()
    merged = pd.concat([existing, new[fresh]], ignore_index=True)
    return merged, int(fresh.sum()), int((~fresh).sum()), 0


def land(
    path: Path,
    source: str,
    table: str | None = None,
    *,
    as_of: date | None = None,
    replace: bool = False,
    settings: Settings | None = None,
) -> LandResult:
    """Check a shop's CSV/Parquet file (or folder of them) against its contract and land it.

    Args:
        path: a ``.csv`` or ``.parquet`` file, or a folder of them (all checked, landed together).
        source: the landing source; must be in ``settings.sources`` (``SHOPFLOW_SOURCES``).
        table: the contract table (``interactions`` or ``items`` for a catalog source); default
            the source kind's first table (``interactions``).
        as_of: items only: a day in the partition the file lands in; default the first partition
            of the source's landed interactions. Ignored for tables with a time column.
        replace: rewrite the touched partitions with the input only, instead of merging.
        settings: ShopFlow settings (landing dir, partition grain, sources).

    Returns:
        The partitions written, with rows added, skipped (already landed) and replaced.

    Raises:
        LandError: (a ``ContractError``) a file is unreadable, breaks its contract or has rows
            without a time; nothing was written.
        ValueError: an unknown source or table, or items with no date to land on.
    """
    settings = settings or get_settings()
    contract = _contract(settings, source, table)
    if as_of is not None and contract.time_column is not None:
        raise ValueError(
            f"--as-of is for items only: {contract.table} rows land by their {contract.time_column}"
        )
    grain = settings.partition_grain
    files = input_files(Path(path))
    if contract.time_column is None:
        item_day = partition_start(pd.Series([pd.Timestamp(_items_as_of(settings, source, as_of))]), grain)[0]

    # 1. Read and check everything; cut every file into partitions, in the files' row order.
    parts: dict[pd.Timestamp, list[pd.DataFrame]] = {}
    rows = 0
    for file in files:
        frame = _read(file, contract)
        rows += len(frame)
        if contract.time_column is None:
            parts.setdefault(pd.Timestamp(item_day), []).append(frame)
            continue
        for key, part in frame.groupby(_partition_keys(frame, file, contract, grain), sort=True):
            parts.setdefault(pd.Timestamp(key), []).append(part)

    # 2. Merge each partition with what is already landed, still in memory: file by file, so a
    #    later file of a folder updates an item of an earlier one, as a later `land` would.
    folder = settings.landing_dir / source / contract.table
    planned: list[tuple[pd.DataFrame, LandedPartition]] = []
    for key in sorted(parts):
        day = key.date()
        target = folder / f"{day.isoformat()}.parquet"
        other = target.with_suffix(".csv")
        if other.exists():
            raise LandError(
                other,
                f"a CSV landing file already holds partition {day}, and ingest would load both "
                f"files of it: move it away and land it with this command (into {target.name})",
            )
        merged = _typed(read_landing_file(target, contract), contract) if target.exists() else None
        added = skipped = replaced = 0
        for number, part in enumerate(parts[key]):
            merged, a, s, r = _merge(merged, part, contract, replace and number == 0)
            added, skipped, replaced = added + a, skipped + s, replaced + r
        assert merged is not None
        landed = LandedPartition(day, target, added, skipped, replaced, len(merged))
        planned.append((merged.reset_index(drop=True), landed))

    # 3. Only now write, each partition atomically; untouched partitions are not rewritten.
    for merged, landed in planned:
        if landed.added or landed.replaced:
            write_atomically(merged, landed.path)
    return LandResult(
        source=source,
        table=contract.table,
        grain=grain,
        files=files,
        rows=rows,
        partitions=[p for _, p in planned],
    )
