"""PostgreSQL restarted during a production-profile dbt build (issue 16, item 3): the build fails
clearly (the error names the models whose connection was cut) and a retry builds the marts with
every accepted row.

The server is the test's own (initdb + pg_ctl on a free port, faultkit.ThrowawayPostgres), never
the shared one: ``pg_ctl restart -m fast`` terminates every session, as a failover or an
operator's restart does. dbt runs as the ``transform`` task runs it (``ml.data.transform.dbt_build``
on the ``postgres`` target), in its own process; the restart comes once it is executing SQL.
"""

from __future__ import annotations

import re
import subprocess
import time
from datetime import date
from pathlib import Path

import pytest
from faultkit import (
    REVIEWS_END,
    ThrowawayPostgres,
    land_reviews,
    shop_settings,
    start_python,
)

from ml.core.settings import Settings
from ml.core.warehouse import Warehouse
from ml.data.ingest import ingest_interval
from ml.data.quality.raw import validate_raw
from ml.data.transform import dbt_build

BUILD = """
import sys
from ml.core.settings import Settings
from ml.data.transform import DbtBuildError, dbt_build
try:
    dbt_build("dbt-restarted", Settings(), select=sys.argv[1] or None)
except DbtBuildError as error:
    print("DBT FAILED:", error)
    sys.exit(3)
print("DBT SUCCEEDED")
"""
GATE_START = date(2017, 1, 1)


def _wait_for_models(process: subprocess.Popen[str], log: Path, started: int = 5) -> str:
    """Wait until dbt has started ``started`` nodes (its console lines ``N of M START ...``)."""
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        assert process.poll() is None, f"dbt ended before the restart:\n{log.read_text()[-3000:]}"
        lines = [line for line in log.read_text().splitlines() if re.search(r"\d+ of \d+ START", line)]
        if len(lines) >= started:
            return lines[-1]
        time.sleep(0.05)
    raise AssertionError(f"dbt started fewer than {started} nodes in time:\n{log.read_text()[-3000:]}")


def _restart_during_build(
    server: ThrowawayPostgres, settings: Settings, tmp_path: Path, start: date, select: str
) -> None:
    land_reviews(settings)
    ingest_interval(start, REVIEWS_END, "ingest", settings)
    raw = validate_raw(start, REVIEWS_END, "validate", settings)
    accepted = raw.sources["reviews"].accepted  # landed minus quarantined (duplicates)
    assert accepted > 0

    log = tmp_path / "dbt-restarted.log"
    process = start_python(BUILD, settings, log, args=[select], pipe=False)
    statement = _wait_for_models(process, log)
    server.restart()
    process.wait(timeout=1200)
    out = log.read_text()
    assert process.returncode == 3, f"dbt did not fail on the restart ({statement[:200]}):\n{out[-3000:]}"
    [failure] = [line for line in out.splitlines() if line.startswith("DBT FAILED:")]
    assert "FAILED" in failure and "failed:" in out  # the failing nodes are named, one a line
    assert any(
        words in out
        for words in ("terminating connection", "server closed the connection", "connection", "shut down")
    ), out[-3000:]

    retried = dbt_build("dbt-retry", settings, select=select or None)
    assert retried.success and not retried.failures
    rows = Warehouse(settings).scalar("select count(*) from marts.fct_interactions where source = 'reviews'")
    assert rows == accepted  # every accepted row reached the mart: none lost to the restart


@pytest.mark.postgres
def test_postgres_restarted_during_dbt_build_fails_clearly_and_the_retry_builds(
    own_pg_server: ThrowawayPostgres, tmp_path: Path
) -> None:
    settings = shop_settings(tmp_path / "work", warehouse="postgres", postgres_dsn=own_pg_server.dsn)
    _restart_during_build(own_pg_server, settings, tmp_path, GATE_START, "")


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_restarted_during_the_whole_dbt_build(
    own_pg_server: ThrowawayPostgres, tmp_path: Path
) -> None:
    from faultkit import REVIEWS_START

    settings = shop_settings(tmp_path / "work", warehouse="postgres", postgres_dsn=own_pg_server.dsn)
    _restart_during_build(own_pg_server, settings, tmp_path, REVIEWS_START, "")
