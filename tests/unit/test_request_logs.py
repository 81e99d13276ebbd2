"""Loading the Bento's request log: incremental, idempotent per batch, never half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ml.core.settings import Settings
from ml.core.warehouse import Warehouse
from ml.monitoring.request_logs import RequestLogError, load_request_logs, read_batch, reference_batch


def _line(n: int, endpoint: str = "recommend", version: str = "shopflow_recommender:v1") -> str:
    record = {
        "timestamp": f"2026-12-01T10:00:{n:02d}.000+00:00",
        "endpoint": endpoint,
        "model_version": version,
        "user_hash": f"{n:016x}",
        "request": {"k": 2},
        "strategy": "personalized",
        "items": [f"i{n}", f"j{n}"],
        "scores": [0.9, 0.1 * n],
        "latency_ms": 1.5,
    }
    return json.dumps(record) + "\n"


def _count(settings: Settings) -> int:
    return int(Warehouse(settings).scalar("select count(*) from monitoring.requests"))


def test_batches_load_only_new_lines_and_a_rerun_changes_nothing(settings: Settings) -> None:
    folder = settings.serving_log_dir
    folder.mkdir(parents=True)
    day = folder / "requests-2026-12-01.jsonl"
    day.write_text("".join(_line(n) for n in range(3)))

    first = load_request_logs("run-1", settings)
    assert first.rows == 3 and first.files == {day.name: 3}
    assert load_request_logs("run-1", settings).rows == 3  # rerun of the same run: same batch
    assert _count(settings) == 3

    with day.open("a") as out:
        out.write(_line(3) + _line(4)[:-10])  # one complete line, one still being written
    second = load_request_logs("run-2", settings)
    assert second.rows == 1 and _count(settings) == 4

    with day.open("a") as out:
        out.write(_line(4)[-10:])  # the line is complete now
    assert load_request_logs("run-3", settings).rows == 1
    batch = read_batch("run-1", settings, endpoint="recommend")
    assert batch["items"].tolist() == [["i0", "j0"], ["i1", "j1"], ["i2", "j2"]]
    assert batch["scores"].tolist()[1] == [0.9, 0.1]
    assert load_request_logs("run-4", settings).rows == 0


def test_a_bad_line_names_file_and_line_and_writes_nothing(settings: Settings) -> None:
    folder = settings.serving_log_dir
    folder.mkdir(parents=True)
    (folder / "requests-2026-12-01.jsonl").write_text(_line(0))
    (folder / "requests-2026-12-02.jsonl").write_text(_line(1) + "{not json\n")
    with pytest.raises(RequestLogError, match=r"requests-2026-12-02\.jsonl, line 2"):
        load_request_logs("run-1", settings)
    # The load is one transaction, rolled back whole: not even its CREATE TABLE remains.
    assert not Warehouse(settings).table_exists("monitoring.requests")


def test_the_prediction_reference_is_the_first_batch_big_enough(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"min_monitored_requests": 3})
    folder = settings.serving_log_dir
    folder.mkdir(parents=True)
    day = folder / "requests-2026-12-01.jsonl"
    day.write_text(_line(0))  # a smoke query: too small to be a reference
    load_request_logs("smoke", settings)
    assert reference_batch("shopflow_recommender:v1", settings) is None
    with day.open("a") as out:
        out.write("".join(_line(n) for n in range(1, 5)) + _line(5, version="shopflow_recommender:v2"))
    load_request_logs("traffic", settings)
    assert reference_batch("shopflow_recommender:v1", settings) == "traffic"
    assert reference_batch("shopflow_recommender:v2", settings) is None


@pytest.mark.parametrize("warehouse", ["duckdb", "postgres"])
def test_lines_without_k_load_beside_lines_with_it(
    settings: Settings, own_pg_database: str, warehouse: str
) -> None:
    """/ask and /bundle log no k: the column has gaps, and PostgreSQL's COPY must still take it."""
    if warehouse == "postgres":
        settings = settings.model_copy(update={"warehouse": "postgres", "postgres_dsn": own_pg_database})
    folder = settings.serving_log_dir
    folder.mkdir(parents=True)
    ask = json.loads(_line(1, endpoint="ask"))
    ask["request"] = {"question": "how much is the mascara?"}
    (folder / "requests-2026-12-01.jsonl").write_text(_line(0) + json.dumps(ask) + "\n")

    loaded = load_request_logs("run-1", settings)

    assert loaded.rows == 2
    ks = Warehouse(settings).read("select endpoint, k from monitoring.requests order by line_no")
    assert ks["endpoint"].tolist() == ["recommend", "ask"]
    assert ks["k"].iloc[0] == 2 and pd.isna(ks["k"].iloc[1])
