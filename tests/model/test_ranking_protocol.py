"""The ranking benchmark's protocol pieces: shuffled tie order, the slice catalog, the time budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.core.settings import PROJECT_DIR
from ml.modeling.config import TrainConfig
from ml.modeling.datasets import TrainingData, shipped_frames
from ml.modeling.fit import train


@pytest.fixture(scope="module")
def beauty_orders() -> dict[str, pd.DataFrame]:
    return {
        "file": shipped_frames(PROJECT_DIR / "data")[0],
        "shuffled": shipped_frames(PROJECT_DIR / "data", ties="shuffled", seed=1)[0],
    }


def test_shuffled_ties_reorder_events_only_inside_a_day(beauty_orders: dict[str, pd.DataFrame]) -> None:
    file, shuffled = beauty_orders["file"], beauty_orders["shuffled"]
    keys = ["user_id", "item_id", "event_ts"]
    # The same events, each user's history still in time order.
    pd.testing.assert_frame_equal(
        file[keys].sort_values(keys).reset_index(drop=True),
        shuffled[keys].sort_values(keys).reset_index(drop=True),
    )
    assert shuffled.groupby("user_id")["event_ts"].apply(lambda s: s.is_monotonic_increasing).all()
    # Beauty's timestamps are days: many same-day ties, so many test targets change.
    test_file = file[file["loo_split"] == "test"].set_index("user_id")["item_id"]
    test_shuffled = shuffled[shuffled["loo_split"] == "test"].set_index("user_id")["item_id"]
    changed = float((test_file != test_shuffled.loc[test_file.index]).mean())
    assert 0.05 < changed < 0.5
    # Fixed seed: the same order again; another seed: another order.
    again = shipped_frames(PROJECT_DIR / "data", ties="shuffled", seed=1)[0]
    assert again["item_id"].tolist() == shuffled["item_id"].tolist()
    other = shipped_frames(PROJECT_DIR / "data", ties="shuffled", seed=2)[0]
    assert other["item_id"].tolist() != shuffled["item_id"].tolist()


def test_unknown_tie_order_is_an_error() -> None:
    with pytest.raises(ValueError, match="ties='random'"):
        shipped_frames(PROJECT_DIR / "data", ties="random")  # type: ignore[arg-type]


def test_used_catalog_keeps_every_history(planted_data: TrainingData) -> None:
    part = planted_data.subset_users(5, seed=3)
    small = part.used_catalog()
    used = {int(i) for s in part.sequences for i in s}
    assert small.num_items == len(used) + 1
    assert small.item_ids[0] == part.item_ids[0]  # padding stays index 0
    for before, after in zip(part.sequences, small.sequences, strict=True):
        assert [part.item_ids[i] for i in before] == [small.item_ids[i] for i in after]
        assert [part.item_texts[i] for i in before] == [small.item_texts[i] for i in after]
    assert [len(c) for c in small.cases("test").histories] == [len(c) for c in part.cases("test").histories]


def test_a_time_budget_stops_after_the_first_epoch(planted_data: TrainingData, tmp_path: Path) -> None:
    config = TrainConfig(
        use_text=False,
        hidden=16,
        layers=1,
        max_len=10,
        epochs=5,
        max_seconds=0.0,
        progress=False,
        num_threads=1,
    )
    result = train(planted_data, config, tmp_path)
    assert len(result.history) == 1
    assert result.stop_reason == "time budget"
    assert result.best_epoch == 1
    unlimited = train(planted_data, config.override(max_seconds=None, epochs=2), tmp_path / "all")
    assert (len(unlimited.history), unlimited.stop_reason) == (2, "epochs")
    assert np.isfinite(unlimited.history[-1]["loss"])
