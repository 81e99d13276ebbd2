"""Issue 12, item 6: the served copy's fallback and check-failure rates per monitoring interval.

Each request log line counts the texts its response served (``copy``); the loader keeps them in
``monitoring.requests`` on both warehouses, and the monitoring run sums them per batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ml.core.settings import Settings
from ml.core.warehouse import Warehouse
from ml.generation.bundles import copy_counts, failure_rules
from ml.monitoring.request_logs import copy_note, copy_quality, load_request_logs
from ml.monitoring.run import MonitorResult, monitor_interval


def _line(n: int, endpoint: str, copy: dict[str, object] | None) -> str:
    record = {
        "timestamp": f"2026-12-01T10:00:{n:02d}.000+00:00",
        "endpoint": endpoint,
        "model_version": "shopflow_recommender:v1",
        "user_hash": None,
        "request": {"k": 3} if endpoint == "recommend" else {},
        "strategy": "personalized",
        "items": ["a", "b", "c"],
        "scores": [0.3, 0.2, 0.1],
        "latency_ms": 2.0,
    }
    if copy is not None:
        record["copy"] = copy
    return json.dumps(record) + "\n"


def test_copy_counts_count_each_text_once_and_each_failed_rule() -> None:
    rules = failure_rules(["number not in facts: 3", "number not in facts: 7", "brand not in facts: Acme"])
    assert rules == ("number not in facts", "brand not in facts")
    counts = copy_counts(
        [("generated", ()), ("fallback", rules), ("template", ()), ("fallback", ("length",))]
    )
    assert counts == {
        "served": 4,
        "generated": 1,
        "fallback": 2,
        "template": 1,
        "failures": {"brand not in facts": 1, "length": 1, "number not in facts": 1},
    }
    assert copy_counts(())["served"] == 0


def _write_logs(folder: Path) -> None:
    folder.mkdir(parents=True)
    lines = [
        # three reasons: 2 generated, 1 fallback (a number the facts do not have)
        _line(
            0,
            "recommend",
            copy_counts([("generated", ()), ("generated", ()), ("fallback", ("number not in facts",))]),
        ),
        # a bundle: the name generated, the description failed (a brand and its length)
        _line(1, "bundle", copy_counts([("generated", ()), ("fallback", ("brand not in facts", "length"))])),
        # an answer the generator never wrote (template), one it wrote and passed
        _line(2, "ask", copy_counts([("template", ())])),
        _line(3, "ask", copy_counts([("generated", ())])),
        # /similar serves no text; a line from before copy was logged: both NULL, not zero
        _line(4, "similar", None),
        _line(5, "recommend", None),
    ]
    (folder / "requests-2026-12-01.jsonl").write_text("".join(lines))


@pytest.mark.parametrize("warehouse", ["duckdb", "postgres"])
def test_copy_counts_load_and_sum_to_the_batch_rates(
    settings: Settings, own_pg_database: str, warehouse: str
) -> None:
    if warehouse == "postgres":
        settings = settings.model_copy(update={"warehouse": "postgres", "postgres_dsn": own_pg_database})
    # A warehouse whose table predates the copy columns: the load adds them (old rows NULL).
    wh = Warehouse(settings)
    with wh.connect() as con:
        wh.execute(con, "create schema if not exists monitoring")
        wh.execute(
            con,
            "create table monitoring.requests (request_file varchar, line_no bigint, logged_at timestamp, "
            "endpoint varchar, model_version varchar, user_hash varchar, strategy varchar, k bigint, "
            "items varchar, scores varchar, latency_ms double precision, batch_id varchar, "
            "loaded_at timestamp)",
        )
    _write_logs(settings.serving_log_dir)

    assert load_request_logs("run-1", settings).rows == 6

    rows = wh.read(
        "select endpoint, texts_served, texts_fallback, check_failures "
        "from monitoring.requests order by line_no"
    )
    assert rows["texts_served"].tolist()[:4] == [3, 2, 1, 1]
    assert rows["texts_served"].iloc[4:].isna().all()  # NULL: no copy on those lines, not 0
    assert json.loads(rows["check_failures"].iloc[1]) == {"brand not in facts": 1, "length": 1}

    quality = copy_quality("run-1", settings)
    assert quality is not None
    total = quality["all"]
    # 7 texts: 4 generated, 2 fallbacks, 1 template; the generator wrote 6, 2 failed the check.
    assert (total["requests"], total["served"], total["generated"], total["fallback"], total["template"]) == (
        4,
        7,
        4,
        2,
        1,
    )
    assert total["fallback_rate"] == pytest.approx(2 / 7, abs=1e-4)
    assert total["check_failure_rate"] == pytest.approx(2 / 6, abs=1e-4)
    assert total["template_rate"] == pytest.approx(1 / 7, abs=1e-4)
    assert total["failures"] == {"brand not in facts": 1, "length": 1, "number not in facts": 1}
    assert quality["endpoints"]["ask"]["check_failure_rate"] == 0.0
    assert quality["endpoints"]["bundle"]["check_failure_rate"] == 0.5
    assert set(quality["endpoints"]) == {"recommend", "bundle", "ask"}
    assert "check failures 33.3% of 6 generated" in copy_note(quality)
    assert copy_quality("no-such-run", settings) is None


def test_the_monitoring_run_writes_the_rates_into_its_summary_and_notes(settings: Settings) -> None:
    from datetime import date

    _write_logs(settings.serving_log_dir)
    load_request_logs("run-1", settings)

    result = monitor_interval(date(2026, 12, 1), date(2026, 12, 2), "run-1", settings)

    assert result.copy is not None and result.copy["all"]["served"] == 7
    assert any(n.startswith("copy served: 7 texts") for n in result.notes), result.notes
    summary = json.loads((Path(result.report_dir) / "summary.json").read_text())
    assert summary["copy"]["all"]["fallback_rate"] == pytest.approx(2 / 7, abs=1e-4)
    assert MonitorResult.from_dict(summary).copy == result.copy  # through an XCom and back
