"""The rating scale is a setting (SHOPFLOW_RATING_SCALE): a shop rating 1-10 lands with it and is
quarantined without it, through the user's path (land -> ingest -> the raw gate's GX checkpoint),
and the marts suite reads the same setting."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from expectations._rules import rating_scale_parameters
from expectations.marts import fct_interactions_suite
from ml.core.settings import Settings
from ml.core.warehouse import Warehouse
from ml.data.ingest import ingest_interval
from ml.data.land import land
from ml.data.quality.gx import MARTS_RESULT_FORMAT, QualityGateError, gx_context, run_checkpoint
from ml.data.quality.raw import check_quarantine_gate, validate_raw

# A shop whose reviews are rated 1-10: 6 of the 10 ratings are above 5, one row has no rating.
RATINGS = [1, 3, 5, None, 6, 7, 8, 9, 10, 10]
CSV = "user_id,item_id,timestamp,rating\n" + "".join(
    f"u{i},i{i % 4},2024-10-{i + 1:02d}T10:00:00,{'' if r is None else r}\n" for i, r in enumerate(RATINGS)
)
START, END = date(2024, 10, 1), date(2024, 11, 1)


def _landed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scale: str | None) -> Settings:
    """Settings read from the environment as every ShopFlow process reads them."""
    monkeypatch.setenv("SHOPFLOW_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("SHOPFLOW_WAREHOUSE", "duckdb")
    monkeypatch.setenv("SHOPFLOW_PII_SALT", "test-salt")
    monkeypatch.setenv("SHOPFLOW_SOURCES", '{"tenshop": "catalog"}')
    if scale is None:
        monkeypatch.delenv("SHOPFLOW_RATING_SCALE", raising=False)
    else:
        monkeypatch.setenv("SHOPFLOW_RATING_SCALE", scale)
    settings = Settings()
    export = tmp_path / "export.csv"
    export.write_text(CSV)
    land(export, "tenshop", settings=settings)
    ingest_interval(START, END, "ingest-1", settings)
    return settings


def _quarantined(settings: Settings) -> dict[float, str]:
    """The quarantined rows' ratings (read back from the row as JSON) and their first rule."""
    rows = Warehouse(settings).read("select expectation, row_json from quarantine.rows")
    return {json.loads(j)["rating"]: e for j, e in zip(rows["row_json"], rows["expectation"], strict=True)}


def test_a_1_to_10_source_is_quarantined_under_the_default_scale(tmp_path, monkeypatch):
    settings = _landed(tmp_path, monkeypatch, None)
    assert settings.rating_scale == (0.0, 5.0)

    report = validate_raw(START, END, "run-1", settings)

    shop = report.sources["tenshop"]
    assert (shop.landed, shop.quarantined) == (10, 6)
    assert shop.by_reason == {"rating_in_range": 6}
    assert _quarantined(settings) == dict.fromkeys([6.0, 7.0, 8.0, 9.0, 10.0], "rating_in_range")
    reason = Warehouse(settings).scalar("select min(reason) from quarantine.rows")
    assert "SHOPFLOW_RATING_SCALE" in reason  # the quarantine table tells the user which setting
    with pytest.raises(QualityGateError, match=r"quarantined 60\.0% .* rating_in_range 6"):
        check_quarantine_gate(report, settings)


def test_the_same_source_lands_whole_with_the_setting(tmp_path, monkeypatch):
    settings = _landed(tmp_path, monkeypatch, "[1, 10]")
    assert settings.rating_scale == (1.0, 10.0)

    report = validate_raw(START, END, "run-1", settings)

    assert (report.landed, report.quarantined) == (10, 0)
    check_quarantine_gate(report, settings)  # passes
    assert Warehouse(settings).scalar("select count(*) from quarantine.rows") == 0


def test_the_marts_suite_reads_the_same_scale(settings):
    """fct_interactions' rating rule: 8 blocks under 0-5 and passes under 1-10; 0 the other way."""
    frame = pd.DataFrame(
        {
            "interaction_id": ["a", "b", "c"], "source": "tenshop", "user_id": "u1",
            "item_id": ["i1", "i2", "i3"], "user_key": "tenshop:u1",
            "item_key": ["tenshop:i1", "tenshop:i2", "tenshop:i3"],
            "event_ts": pd.to_datetime(["2024-10-01", "2024-10-02", "2024-10-03"]),
            "event_type": "review", "rating": [8.0, None, 0.0],
            "quantity": pd.array([None] * 3, dtype="Int64"), "sequence_number": [0, 1, 2],
        }
    )  # fmt: skip
    context = gx_context(settings)

    def rating_rule(scale: tuple[float, float]) -> dict:
        _, result = run_checkpoint(
            context, name="marts.fct_interactions", asset="marts.fct_interactions",
            suite=fct_interactions_suite(), frame=frame, run_id=f"scale-{scale}",
            result_format=MARTS_RESULT_FORMAT, parameters=rating_scale_parameters(scale),
        )  # fmt: skip
        (rule,) = [r for r in result.results if r.expectation_config.meta["rule"] == "rating_in_range"]
        assert all(r.success for r in result.results if r is not rule)
        return {"success": rule.success, "unexpected": rule.result.get("unexpected_count")}

    assert rating_rule((0.0, 5.0)) == {"success": False, "unexpected": 1}
    assert rating_rule((1.0, 10.0)) == {"success": False, "unexpected": 1}  # the 0
    frame.loc[2, "rating"] = 10.0
    assert rating_rule((1.0, 10.0)) == {"success": True, "unexpected": 0}
