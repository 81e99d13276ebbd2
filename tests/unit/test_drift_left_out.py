"""Drift features a source lacks are left out of its report with a note, not tested as empty (issue 16).

The source is the shipped Amazon 2018 All_Beauty reviews: ratings and times, no catalogue, so no
category, brand, price or title, exactly what a review export landed without items gives.
"""

from __future__ import annotations

import pandas as pd
import pytest

from ml.core.settings import PROJECT_DIR, Settings
from ml.monitoring.drift import drift_report
from ml.monitoring.features import DATA_CATEGORICAL, DATA_NUMERICAL, interaction_features

REVIEWS = PROJECT_DIR / "data" / "amazon_reviews_2018_all_beauty_5core" / "reviews.parquet"
LACKING = {"category", "brand", "price", "title_length"}


def _mart_rows(reviews: pd.DataFrame) -> pd.DataFrame:
    """Rows shaped as ``read_interactions`` returns them for a source without a catalogue."""
    rows = reviews.assign(event_ts=pd.to_datetime(reviews["timestamp"], unit="s"))
    rows = rows.sort_values(["user_id", "event_ts"]).reset_index(drop=True)
    rows["sequence_number"] = rows.groupby("user_id").cumcount() + 1
    rows["user_first_ts"] = rows.groupby("user_id")["event_ts"].transform("min")
    rows["item_first_ts"] = rows.groupby("item_id")["event_ts"].transform("min")
    rows["user_events_30d"] = 1
    rows["quantity"] = None
    for column in ("category", "brand", "price", "title"):
        rows[column] = None
    return rows


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = _mart_rows(pd.read_parquet(REVIEWS))
    features = interaction_features(rows)
    year = rows["event_ts"].dt.year
    return features[year == 2017].reset_index(drop=True), features[year == 2016].reset_index(drop=True)


def test_a_source_without_catalogue_drifts_only_on_what_it_has(
    frames: tuple[pd.DataFrame, pd.DataFrame], settings: Settings
) -> None:
    current, reference = frames
    assert len(current) > 300 and len(reference) > 300
    _, check = drift_report(current, reference, DATA_NUMERICAL, DATA_CATEGORICAL, settings, "data")
    assert set(check.left_out) == LACKING
    assert all("the source lacks it" in why for why in check.left_out.values())
    tested = set(check.columns)
    assert tested == set(DATA_NUMERICAL + DATA_CATEGORICAL) - LACKING
    # The share counts only the tested columns, so the lacking ones cannot dilute it.
    assert check.share == pytest.approx(len(check.drifted_columns) / len(tested))
    note = check.left_out_note()
    assert note is not None and note.startswith("data drift: left out ")
    for column in LACKING:
        assert column in note


def test_a_column_with_values_on_one_side_only_is_named_with_that_side(
    frames: tuple[pd.DataFrame, pd.DataFrame], settings: Settings
) -> None:
    current, reference = frames
    # The shop starts sending a catalogue: categories now, none in the reference.
    current = current.assign(category=["Skin Care" if i % 2 else "Hair Care" for i in range(len(current))])
    _, check = drift_report(current, reference, DATA_NUMERICAL, DATA_CATEGORICAL, settings, "data")
    assert check.left_out["category"] == "no values in the reference"
    assert "category" not in check.columns
    # With values on both sides it is tested again (and, 'unknown' against two real categories, drifts).
    reference = reference.assign(category="Skin Care")
    _, check = drift_report(current, reference, DATA_NUMERICAL, DATA_CATEGORICAL, settings, "data")
    assert "category" not in check.left_out
    assert check.columns["category"] > settings.drift_column_threshold
