"""Training data from mart-shaped frames, from the warehouse marts, and from the shipped Parquet."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.core.catalog import item_text, price_bucket
from ml.core.settings import Settings
from ml.modeling.baselines import ItemKNN, Popularity
from ml.modeling.datasets import TrainingDataError, from_frames, shipped_frames
from ml.modeling.evaluate import evaluate
from ml.modeling.splits import time_labels
from ml.training.snapshot import load_training_data


def _examples() -> pd.DataFrame:
    rows = [
        # u1: four events, the last two on the same second (sequence_number breaks the tie).
        ("u1", "A", "2014-01-01", 0),
        ("u1", "B", "2014-01-02", 1),
        ("u1", "D", "2014-01-04", 3),
        ("u1", "C", "2014-01-04", 2),
        # u2: two events only: all training.
        ("u2", "B", "2014-01-03", 0),
        ("u2", "C", "2014-01-05", 1),
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event_ts", "sequence_number"])
    frame["event_ts"] = pd.to_datetime(frame["event_ts"])
    return frame


def _items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ["A", "B", "C", "D", "COLD"],
            "title": ["Concealer", "Shampoo", None, "Lipstick", "Brand new serum"],
            "brand": ["COKA", None, None, "Revlon", None],
            "categories": ["Beauty > Makeup > Face", None, None, None, "Beauty > Skin Care"],
            "price": [5.0, None, 120.0, 9.99, 30.0],
        }
    )


def test_item_text_matches_dim_items() -> None:
    # The cases of the dim_items unit test.
    assert item_text("B001", "Concealer", "COKA", "Beauty > Makeup > Face", 5.0) == (
        "Concealer | brand: COKA | category: Beauty > Makeup > Face | price: 5-10"
    )
    assert item_text("B002", price=120.0) == "item B002 | price: 100+"
    assert item_text("B003", "Shampoo") == "Shampoo"
    assert item_text("B999") == "item B999"
    # Titleless items sharing a brand and category stay distinct (named by their ids).
    assert item_text("B004", brand="COKA", categories="Beauty > Makeup") == (
        "item B004 | brand: COKA | category: Beauty > Makeup"
    )
    assert item_text("B005", brand="COKA", categories="Beauty > Makeup") != item_text(
        "B004", brand="COKA", categories="Beauty > Makeup"
    )
    assert [price_bucket(p) for p in (None, 4.99, 5, 10, 49.99, 100)] == [
        "unknown",
        "under 5",
        "5-10",
        "10-25",
        "25-50",
        "100+",
    ]


def test_from_frames_orders_splits_and_keeps_cold_items() -> None:
    data = from_frames(_examples(), _items(), source="beauty")
    assert data.item_ids.tolist() == ["<pad>", "A", "B", "C", "COLD", "D"]
    assert (
        data.item_texts[data.item_index["COLD"]]
        == "Brand new serum | category: Beauty > Skin Care | price: 25-50"
    )
    assert data.user_ids.tolist() == ["u1", "u2"]
    idx = data.item_index
    assert data.sequences[0].tolist() == [idx["A"], idx["B"], idx["C"], idx["D"]]
    assert data.loo_split[0].tolist() == [0, 0, 1, 2]
    assert data.loo_split[1].tolist() == [0, 0]
    # The cold item is in the catalog but never in training.
    assert data.item_counts()[idx["COLD"]] == 0
    assert data.item_counts()[idx["B"]] == 2
    test = data.cases("test")
    assert test.users.tolist() == [0]
    assert test.histories[0].tolist() == [idx["A"], idx["B"], idx["C"]]
    assert test.targets.tolist() == [idx["D"]]
    assert data.train_sequences()[0].tolist() == [idx["A"], idx["B"]]


def test_a_refit_trains_on_the_validation_event_and_keeps_the_test_target() -> None:
    data = from_frames(_examples(), _items(), source="beauty")
    refit = data.validation_trained()
    idx = data.item_index
    assert refit.train_sequences()[0].tolist() == [idx["A"], idx["B"], idx["C"]]
    assert len(refit.cases("validation")) == 0
    test, before = refit.cases("test"), data.cases("test")
    assert test.targets.tolist() == before.targets.tolist() == [idx["D"]]
    assert [h.tolist() for h in test.histories] == [h.tolist() for h in before.histories]
    assert data.loo_split[0].tolist() == [0, 0, 1, 2]  # the original is untouched


def test_from_frames_names_the_broken_column() -> None:
    with pytest.raises(TrainingDataError, match=r"examples\.item_id: missing"):
        from_frames(_examples().drop(columns="item_id"), _items())
    broken = _items()
    broken.loc[0, "item_id"] = None
    with pytest.raises(TrainingDataError, match=r"items\.item_id: has nulls"):
        from_frames(_examples(), broken)


def test_time_split_follows_the_percentiles() -> None:
    stamps = pd.Series(pd.date_range("2010-01-01", periods=10, freq="D"))
    assert time_labels(stamps).tolist() == ["train"] * 8 + ["validation", "test"]
    data = from_frames(_examples(), _items())
    # Six events: the 80th percentile (discrete) is the 5th, 2014-01-04, so validation starts at
    # the next time, 2014-01-05 (u2's last event); nothing is later than the 90th -> no test.
    assert data.cases("validation", protocol="time").users.tolist() == [1]
    assert len(data.cases("test", protocol="time")) == 0


def test_load_training_data_reads_the_marts(settings: Settings) -> None:
    from ml.core.warehouse import Warehouse

    examples = _examples()
    examples["source"] = "beauty"
    examples = examples.sort_values(["user_id", "event_ts", "sequence_number"])
    examples["position"] = examples.groupby("user_id").cumcount() + 1
    examples["loo_split"] = ["train", "train", "validation", "test", "train", "train"]
    examples["time_split"] = "train"
    items = _items()
    items["source"] = "beauty"
    items["item_text"] = [
        item_text(r.item_id, r.title, r.brand, r.categories, r.price) for r in items.itertuples()
    ]
    other = items.iloc[:1].assign(source="retail", item_id="R1", item_text="GLASS BALL LIGHTS")
    items = pd.concat([items, other])
    warehouse = Warehouse(settings)
    with warehouse.connect() as con:
        con.execute("create schema if not exists marts")
        con.register("examples_df", examples)
        con.register("items_df", items)
        con.execute("create table marts.fct_training_examples as select * from examples_df")
        con.execute("create table marts.dim_items as select * from items_df")
    data = load_training_data(settings, source="beauty")
    assert data.source == "beauty"
    assert data.num_items == 6  # padding + five beauty items; the retail one stays out
    assert data.loo_split[0].tolist() == [0, 0, 1, 2]
    assert (
        data.item_texts[data.item_index["A"]]
        == "Concealer | brand: COKA | category: Beauty > Makeup > Face | price: 5-10"
    )


def test_shipped_beauty_split_is_the_published_one() -> None:
    from ml.core.settings import PROJECT_DIR

    data = from_frames(*shipped_frames(PROJECT_DIR / "data"), source="beauty")
    assert (data.num_users, data.num_items - 1, data.num_interactions) == (22_363, 12_101, 198_502)
    test, validation = data.cases("test"), data.cases("validation")
    assert len(test) == len(validation) == 22_363
    # Every user has >= 5 events: test history = all but the last, validation = all but two.
    assert all(len(h) == len(s) - 1 for h, s in zip(test.histories, data.sequences, strict=True))
    assert sum(len(s) for s in data.train_sequences()) == 198_502 - 2 * 22_363


def test_popularity_and_item_knn_on_a_planted_pair() -> None:
    # Whoever bought A bought B; C is the most popular training item. V, T: validation, test.
    histories = [list("ABCEVT"), list("ABCVT"), list("ABCVT"), list("CDFVT"), list("CDFVT"), list("CDFVT")]
    rows = [
        {"user_id": f"u{u}", "item_id": item, "position": position}
        for u, history in enumerate(histories)
        for position, item in enumerate(history, start=1)
    ]
    items = pd.DataFrame({"item_id": list("ABCDEFTV")})
    data = from_frames(pd.DataFrame(rows), items)
    idx = data.item_index
    pop = Popularity().fit(data)
    assert int(np.argmax(pop.score([[idx["A"]]])[0])) == idx["C"]
    knn = ItemKNN(neighbours=5).fit(data)
    scores = knn.score([[idx["A"]]])[0]
    assert int(np.argmax(scores)) == idx["B"]
    assert scores[0] == -np.inf
    result = evaluate(knn, data, "validation", ks=(1,))
    assert result["n"] == 6.0


def test_windows_keep_every_target_once() -> None:
    from ml.modeling.batches import make_batches, windows

    seq = np.arange(1, 121)
    cut = list(windows([seq, np.array([7]), np.array([3, 4])], max_len=50))
    assert all(len(w) <= 51 for w in cut)
    targets = np.concatenate([w[1:] for w in cut])
    assert sorted(targets.tolist()) == sorted([*range(2, 121), 4])
    batches = list(
        make_batches([seq, np.array([3, 4])], batch_size=2, max_len=50, rng=np.random.default_rng(0))
    )
    assert sum(b.positions for b in batches) == 119 + 1
    for b in batches:
        # Left padding: a row's targets are its inputs shifted by one.
        for inputs, targets in zip(b.inputs.tolist(), b.targets.tolist(), strict=True):
            real = [i for i in inputs if i]
            assert targets[-len(real) :][:-1] == real[1:]
