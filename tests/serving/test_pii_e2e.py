"""PII end to end (issue 16, item 2): an e-mail address and phone numbers typed into /search reach
neither the Bento's request log nor, once monitoring has loaded that log, ``monitoring.requests``.

Through the real pieces: the session's ``bentoml serve`` of the champion (``live_server``), its
request-log files, and ``ml.monitoring.request_logs.load_request_logs`` into a real warehouse
(the DuckDB file of the embedded default and the production PostgreSQL).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ml.core.settings import PROJECT_DIR, Settings
from ml.core.warehouse import Warehouse
from ml.monitoring.request_logs import TABLE, load_request_logs

EMAIL = "jane.doe@example.com"
PHONES = ("(212) 555-0123", "+44 20 7946 0958")
# Pieces of the PII that must appear nowhere, however a writer might split or quote them.
SECRETS = ("jane.doe", "example.com", "555-0123", "5550123", "7946 0958", "79460958")


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """A fresh warehouse of each engine for the monitoring load (the session's stays untouched)."""
    if request.param == "duckdb":
        yield Settings(work_dir=tmp_path / "work", data_dir=PROJECT_DIR / "data", pii_salt="test-salt")  # type: ignore[arg-type]
        return
    dsn = request.getfixturevalue("own_pg_database")
    yield Settings(
        work_dir=tmp_path / "work",
        data_dir=PROJECT_DIR / "data",
        warehouse="postgres",
        postgres_dsn=dsn,
        pii_salt="test-salt",  # type: ignore[arg-type]
    )


def test_pii_in_a_search_query_reaches_neither_the_log_nor_the_warehouse(
    served: Any, live_server: Any, warehouse_settings: Settings
) -> None:
    marker = f"pii{uuid.uuid4().hex[:10]}"  # finds this test's line among the session's others
    query = f"lipstick {marker} for {EMAIL}, call {PHONES[0]} or {PHONES[1]}"
    response = httpx.post(f"{live_server.base_url}/search", json={"query": query, "k": 3}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["query"] == query  # the caller gets its own words back; only records are scrubbed

    log_dir = served.settings.serving_log_dir
    files = sorted(log_dir.glob("requests-*.jsonl"))
    text = "".join(path.read_text() for path in files)
    lines = [json.loads(raw) for raw in text.splitlines()]  # every line parses
    [ours] = [line for line in lines if marker in json.dumps(line)]
    assert ours["endpoint"] == "search"
    assert ours["request"]["query"] == f"lipstick {marker} for [email], call [phone] or [phone]"
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} reached the request log"

    loaded = load_request_logs(f"pii-e2e-{marker}", warehouse_settings, log_dir=log_dir)
    assert loaded.rows == len(lines)
    table = Warehouse(warehouse_settings).read(f"select * from {TABLE}")
    assert len(table) == len(lines)
    assert (table["endpoint"] == "search").any()
    # Every cell of every column, as text: a column added later that carries the query is covered.
    dumped = table.astype(str).to_csv(index=False)
    for secret in SECRETS:
        assert secret not in dumped, f"{secret!r} reached {TABLE}"
