"""What bench-demo keeps of a run: every phase by name, the total, the load and the contents."""

from __future__ import annotations

import json

from ml.core.settings import Settings
from ml.flows.closed_loop import DemoResult, timing_record


def test_timing_record_names_every_phase_and_keeps_the_total(settings: Settings) -> None:
    result = DemoResult(
        seconds={"replay": 12.04, "airflow_start": 30.0, "bootstrap_run": 200.0, "total": 242.04},
        traffic=[
            {"interval": ["2014-01-01", "2014-02-01"], "requests": {"/recommend": 100, "/search": 20}},
            {"requests": {"/recommend": 80}},
        ],
        serving_now="shopflow_recommender:abc",
    )

    record = timing_record(result, settings, (0.5, 0.4, 0.3))

    assert record["phases_seconds"] == {
        "1 land the training period": 12.0,
        "2 start Airflow": 30.0,
        "3 bootstrap run (history)": 200.0,
    }
    assert record["total_seconds"] == 242.0
    assert record["machine"]["load_average_at_start"] == [0.5, 0.4, 0.3]
    assert record["contents"]["later_intervals_replayed"] == 2
    assert record["contents"]["traffic_requests"] == 200
    json.dumps(record)  # the record is what bench/results/demo.json holds
