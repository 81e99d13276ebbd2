"""Replay the shipped real datasets as a shop's exports would land: one file per time partition.

Each shipped dataset is mapped onto its landing contract (ml.core.schemas) and cut by the configured
grain into ``<landing_dir>/<source>/<table>/<YYYY-MM-DD>.parquet``, the date being the partition's
first day. Items land in the partition in which they were first interacted with, as a catalogue
export of new products would. Writing is atomic per file (temp file + rename), so a crashed replay
never leaves a half-written partition for ingest to load.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from ml.core.calendar import Grain, partition_start
from ml.core.settings import Settings, get_settings


def _beauty(data_dir: Path) -> dict[str, tuple[pd.DataFrame, str]]:
    folder = data_dir / "amazon_beauty_2014_5core"
    raw = pd.read_parquet(folder / "interactions.parquet")
    interactions = pd.DataFrame(
        {
            "user_id": raw["user_id"].astype(str),
            "item_id": raw["item_id"].astype(str),
            "timestamp": pd.to_datetime(raw["timestamp"], unit="s"),
            "event_type": "review",
            "sequence_number": raw["seq_pos"].astype("int64"),
        }
    )
    catalog = pd.read_parquet(folder / "items.parquet")
    first_seen = interactions.groupby("item_id")["timestamp"].min().rename("first_seen")
    items = catalog.merge(first_seen, left_on="item_id", right_index=True, how="inner")[
        ["item_id", "title", "categories", "brand", "price", "first_seen"]
    ]
    return {"interactions": (interactions, "timestamp"), "items": (items, "first_seen")}


def _retail(data_dir: Path) -> dict[str, tuple[pd.DataFrame, str]]:
    raw = pd.read_parquet(data_dir / "uci_online_retail_ii" / "online_retail_ii.parquet")
    lines = pd.DataFrame(
        {
            "invoice": raw["Invoice"].astype(str),
            "stock_code": raw["StockCode"].astype(str),
            "description": raw["Description"],
            "quantity": raw["Quantity"].astype("int64"),
            "invoice_ts": raw["InvoiceDate"],
            "price": raw["Price"].astype("float64"),
            "customer_id": raw["CustomerID"].astype("string"),
            "country": raw["Country"],
        }
    )
    return {"invoice_lines": (lines, "invoice_ts")}


# The shipped datasets, by the landing source name they replay as.
SHIPPED: dict[str, Callable[[Path], dict[str, tuple[pd.DataFrame, str]]]] = {
    "beauty": _beauty,
    "retail": _retail,
}


def write_atomically(frame: pd.DataFrame, path: Path) -> None:
    """Write Parquet to a temp file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False, compression="zstd")
    os.replace(tmp, path)


def replay(
    settings: Settings | None = None,
    start: date | None = None,
    end: date | None = None,
    grain: Grain | None = None,
    sources: list[str] | None = None,
) -> list[Path]:
    """Land the shipped datasets' partitions whose first day is in ``[start, end)``.

    Args:
        settings: ShopFlow settings (landing dir, grain, sources).
        start: first partition day to land; ``None`` lands from the beginning of the data.
        end: partitions on or after this day are not landed; ``None`` lands to the end.
        grain: ``day``, ``week`` or ``month``; defaults to ``settings.partition_grain``.
        sources: which shipped sources to replay; defaults to those in ``settings.sources``.

    Returns:
        The landing files written (existing partitions are rewritten with identical content).
    """
    settings = settings or get_settings()
    grain = grain or settings.partition_grain
    names = sources or [s for s in settings.sources if s in SHIPPED]
    unknown = [s for s in names if s not in SHIPPED]
    if unknown:
        raise ValueError(f"no shipped dataset for source(s) {unknown}; shipped: {sorted(SHIPPED)}")

    written: list[Path] = []
    for source in names:
        for table, (frame, time_column) in SHIPPED[source](settings.data_dir).items():
            keys = partition_start(frame[time_column], grain)
            mask = pd.Series(True, index=frame.index)
            if start is not None:
                mask &= keys >= pd.Timestamp(start)
            if end is not None:
                mask &= keys < pd.Timestamp(end)
            selected = frame[mask].drop(columns=["first_seen"], errors="ignore")
            groups = selected.groupby(keys[mask], sort=True)
            for key, part in tqdm(
                groups, desc=f"replay {source}/{table}", unit="partition", leave=False, disable=None
            ):
                path = (
                    settings.landing_dir / source / table / f"{pd.Timestamp(key).date().isoformat()}.parquet"
                )
                write_atomically(part.reset_index(drop=True), path)
                written.append(path)
    return written
