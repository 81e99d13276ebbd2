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


def test_the_generator_section_compares_base_and_tuned_and_gives_the_gate_and_tuned_texts() -> None:
    from ml.flows.closed_loop import render_generator

    def scores(rate: float, examples: list[dict[str, str]]) -> dict[str, object]:
        return {
            "raw_pass_rate": rate, "leaf_exact": 0.5, "top_level_accuracy": 1.0, "brand_accuracy": 0.25,
            "rouge_l": 0.3, "speed": {"tokens_per_s": 9.5}, "examples": {"grounded": examples},
        }  # fmt: skip

    tuned_text = {"kind": "bundle_name", "text": "Maybelline Eye Set"}
    result = DemoResult(
        generator={
            "run_id": "manual__1",
            "state": "success",
            "decision": {"promoted": True, "reason": "no metric below base; better on raw_pass_rate"},
            "evaluation": {
                "cases": {"grounded": 18},
                "results": {"base": scores(0.333, []), "tuned": scores(0.9, [tuned_text])},
            },
        }
    )

    text = render_generator(result)

    assert "run manual__1: success" in text
    base_row = next(line for line in text.splitlines() if line.strip().startswith("base"))
    tuned_row = next(line for line in text.splitlines() if line.strip().startswith("tuned"))
    assert "0.333" in base_row and "0.900" in tuned_row and "9.5" in tuned_row
    assert "gate: promoted" in text and "better on raw_pass_rate" in text
    assert "bundle_name: 'Maybelline Eye Set'" in text
