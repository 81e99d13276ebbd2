"""The DuckDB file is opened by one ShopFlow process at a time: a second one waits, then works."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from ml.core.settings import Settings
from ml.core.warehouse import Warehouse, duckdb_lock

HOLD_S = 3.0


def test_a_second_process_waits_for_the_warehouse_instead_of_failing(settings: Settings) -> None:
    with Warehouse(settings).connect() as con:
        con.execute("create table t as select 1 as x")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from ml.core.settings import Settings
                from ml.core.warehouse import Warehouse
                settings = Settings(work_dir={str(settings.work_dir)!r}, pii_salt="test-salt")
                with Warehouse(settings).connect() as con:
                    con.execute("insert into t values (2)")
                    print("holding", flush=True)
                    time.sleep({HOLD_S})
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    started = time.monotonic()
    # Without the lock this connect fails at once with DuckDB's "Could not set lock on file".
    assert Warehouse(settings).scalar("select sum(x) from t") == 3
    waited = time.monotonic() - started
    assert holder.wait(30) == 0
    assert waited > HOLD_S / 2


def test_the_lock_is_reentrant_in_a_process_and_times_out_across_processes(settings: Settings) -> None:
    with duckdb_lock(settings), duckdb_lock(settings), Warehouse(settings).connect() as con:
        con.execute("select 1")
    impatient = settings.model_copy(update={"duckdb_lock_timeout_s": 1.0})
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import fcntl, time; f = open({str(settings.duckdb_file) + '.lock'!r}, 'a'); "
            "fcntl.flock(f, fcntl.LOCK_EX); print('holding', flush=True); time.sleep(5)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    with pytest.raises(TimeoutError, match="stayed locked"):
        Warehouse(impatient).scalar("select 1")
    holder.kill()
    holder.wait()
