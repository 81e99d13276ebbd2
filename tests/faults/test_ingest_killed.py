"""An ingest killed mid-transaction (SIGKILL) leaves no partial partition; the rerun completes.

Ingest replaces every partition of its interval in one transaction. The test loads the All_Beauty
2018 reviews once, then starts a second ingest of the same interval in its own process and kills
it right after it has deleted and rewritten its first partition, inside the transaction: the
warehouse must still hold exactly the first load (every row of every partition, written by the
first run), and the same ingest rerun must then replace it completely.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from faultkit import (
    LINEAGE,
    REVIEWS_END,
    REVIEWS_START,
    land_reviews,
    shop_settings,
    sigkill,
    start_python,
    table_state,
    wait_for_line,
)

from ml.core.settings import Settings
from ml.data.ingest import ingest_interval, partition_files

INGEST = """
import logging
from datetime import date
from ml.core.settings import Settings
from ml.data.ingest import ingest_interval
logging.basicConfig(level=logging.WARNING, format="%(message)s")
logging.getLogger("ml.data.ingest").setLevel(logging.DEBUG)
import sys
start, end = date.fromisoformat(sys.argv[1]), date.fromisoformat(sys.argv[2])
ingest_interval(start, end, "second", Settings())
"""
GATE_START = date(2017, 1, 1)
"""The quick gate's interval: the last 20 monthly partitions (the slow tests take all 101)."""


def landed_rows(settings: Settings, start: date, end: date) -> int:
    files = partition_files(settings.landing_dir / "reviews" / "interactions", start, end)
    assert len(files) >= 10  # the kill lands after the first partition, with many still to write
    return sum(len(pd.read_parquet(path)) for _, path in files)


def _kill_mid_transaction_then_rerun(settings: Settings, tmp_path: Path, start: date) -> None:
    end = REVIEWS_END
    rows = landed_rows(settings, start, end)
    first = ingest_interval(start, end, "first", settings)
    assert first.rows_by_table == {"reviews.interactions": rows}
    before = table_state(settings, "raw.interactions", drop=set())
    log = tmp_path / "ingest-killed.log"

    process = start_python(INGEST, settings, log, args=[str(start), str(end)])
    wait_for_line(process, lambda line: "replacing raw.interactions" in line, log, timeout_s=300)
    rest = sigkill(process, log)
    assert "committed" not in rest, "the ingest committed before the kill: not mid-transaction"

    # Not one row of the killed run, not one row of the first run missing: the same table.
    after = table_state(settings, "raw.interactions", drop=set())
    assert len(after) == rows
    assert set(after["_run_id"]) == {"first"}
    assert after.equals(before)

    rerun = ingest_interval(start, end, "second", settings)
    assert rerun.rows_by_table == {"reviews.interactions": rows}
    done = table_state(settings, "raw.interactions", drop=set())
    assert len(done) == rows and set(done["_run_id"]) == {"second"}
    # The rerun's rows are the first load's, but for the run that wrote them.
    first_rows = before.drop(columns=list(LINEAGE))
    assert table_state(settings, "raw.interactions").equals(
        first_rows.sort_values(list(first_rows.columns)).reset_index(drop=True)
    )


def test_ingest_killed_mid_transaction_on_duckdb(reviews_shop: Settings, tmp_path: Path) -> None:
    _kill_mid_transaction_then_rerun(reviews_shop, tmp_path, GATE_START)


@pytest.mark.slow
def test_ingest_killed_mid_transaction_all_partitions(reviews_shop: Settings, tmp_path: Path) -> None:
    _kill_mid_transaction_then_rerun(reviews_shop, tmp_path, REVIEWS_START)


@pytest.mark.slow
@pytest.mark.postgres
def test_ingest_killed_mid_transaction_on_postgres(tmp_path: Path, own_pg_database: str) -> None:
    settings = shop_settings(tmp_path / "work", warehouse="postgres", postgres_dsn=own_pg_database)
    land_reviews(settings)
    _kill_mid_transaction_then_rerun(settings, tmp_path, REVIEWS_START)
