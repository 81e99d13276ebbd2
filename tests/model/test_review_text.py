"""Item text from reviews where a catalog has no titles (issue 11, item 5): training-period
reviews only, summarised to the encoder's budget, titled items and Beauty left as they were."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ml.core.settings import PROJECT_DIR
from ml.modeling.datasets import from_frames, shipped_frames
from ml.modeling.review_text import PREFIX, is_titleless, review_texts, words

ALL_BEAUTY = PROJECT_DIR / "data" / "amazon_reviews_2018_all_beauty_5core" / "reviews.parquet"


def _reviews() -> pd.DataFrame:
    """Three users; each one's last event (test) and the one before (validation) carry a
    word no training review has."""
    rows = []
    day = pd.Timestamp("2020-01-01")
    plan = {
        "u1": [("a", "silky shampoo lather"), ("b", "matte lipstick"), ("a", "zanzibar"), ("b", "quokka")],
        "u2": [("b", "matte lipstick shade"), ("a", "shampoo curls"), ("c", "narwhal"), ("c", "okapi")],
        "u3": [("a", "shampoo scalp"), ("b", "lipstick red"), ("b", "axolotl"), ("a", "pangolin")],
    }
    for user, events in plan.items():
        for n, (item, text) in enumerate(events):
            rows.append(
                {
                    "user_id": user,
                    "item_id": item,
                    "event_ts": day + pd.Timedelta(days=n),
                    "review_text": text,
                    "rating": 5.0,
                }
            )
    return pd.DataFrame(rows)


def test_validation_and_test_reviews_never_reach_item_text() -> None:
    examples = _reviews()
    data = from_frames(examples, pd.DataFrame({"item_id": ["a", "b", "c"]}), review_text="titleless")
    text = dict(zip(data.item_ids, data.item_texts, strict=True))
    for word in ("zanzibar", "quokka", "narwhal", "okapi", "axolotl", "pangolin"):
        assert all(word not in t for t in data.item_texts), word
    assert text["a"].startswith(PREFIX) and "shampoo" in text["a"]
    assert text["b"].startswith(PREFIX) and "lipstick" in text["b"]
    # Item c was only reviewed in validation/test events: it keeps its catalog text.
    assert text["c"] == "item c"


def test_the_time_split_guards_too() -> None:
    # Rows labelled validation/test by the time split are left out even when LOO says train,
    # unless the texts are asked for the LOO protocol only.
    examples = _reviews().assign(loo_split="train", time_split="train")
    examples.loc[examples["review_text"] == "silky shampoo lather", "time_split"] = "test"
    assert "silky" not in review_texts(examples)["a"] and "shampoo" in review_texts(examples)["a"]
    assert "silky" in review_texts(examples, protocol="loo")["a"]
    assert "silky" not in review_texts(examples, protocol="time")["a"]


def test_titled_items_keep_their_text_unless_always() -> None:
    examples = _reviews()
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["Curl shampoo", None, None], "brand": "Acme"})
    data = from_frames(examples, items)
    text = dict(zip(data.item_ids, data.item_texts, strict=True))
    assert text["a"] == "Curl shampoo | brand: Acme"
    # A titleless item's summary replaces the id placeholder; what the catalog said stays.
    assert text["b"].startswith(PREFIX) and text["b"].endswith(" | brand: Acme") and "item b" not in text["b"]
    both = from_frames(examples, items, review_text="always")
    always = dict(zip(both.item_ids, both.item_texts, strict=True))
    assert always["a"].startswith("Curl shampoo | brand: Acme | " + PREFIX)
    off = from_frames(examples, items, review_text="off")
    assert dict(zip(off.item_ids, off.item_texts, strict=True))["b"] == "item b | brand: Acme"


def test_summaries_fit_the_budget_and_tell_real_items_apart() -> None:
    raw = pd.read_parquet(ALL_BEAUTY).drop_duplicates(["user_id", "item_id", "timestamp"])
    raw["event_ts"] = pd.to_datetime(raw["timestamp"], unit="s")
    items = raw[["item_id"]].drop_duplicates()
    # Safe for both protocols, 49 of the 85 items have a training review; LOO-only, 56.
    for method, protocol, least in (("terms", "both", 45), ("sentences", "both", 45), ("terms", "loo", 52)):
        data = from_frames(raw, items, review_summary=method, review_protocol=protocol)  # type: ignore[arg-type]
        texts = data.item_texts[1:]
        reviewed = [t for t in texts if t.startswith(PREFIX)]
        assert len(reviewed) >= least, (method, protocol, len(reviewed))
        # Texts tell items apart; a pair may share one: the 2018 files repeat a review across
        # an item's style variants (SOURCE.md), so two variants can have the same reviews.
        assert len(set(reviewed)) >= 0.9 * len(reviewed), method
        assert max(len(t[len(PREFIX) :].split()) for t in reviewed) <= 32, method
    assert all(is_titleless(i, f"item {i}") for i in ("x", "B0001"))
    assert not is_titleless("x", "item xylophone")


def test_words_drop_stop_words_and_short_tokens() -> None:
    assert words("I really LOVE this shampoo, it's great!") == ["love", "shampoo", "great"]


@pytest.mark.parametrize("dataset", ["amazon_beauty_2014_5core"])
def test_shipped_beauty_texts_are_unchanged(dataset: str) -> None:
    # Beauty has titles and its frames carry no review text: the default changes nothing.
    examples, items = shipped_frames(PROJECT_DIR / "data", dataset)
    sample = examples[examples["user_id"].isin(examples["user_id"].drop_duplicates().head(200))]
    default = from_frames(sample, items)
    off = from_frames(sample, items, review_text="off")
    assert default.item_texts == off.item_texts
    assert not any(t.startswith(PREFIX) for t in default.item_texts)


@pytest.mark.slow
def test_a_review_export_without_titles_trains_on_review_text(tmp_path: Path) -> None:
    """The pipeline's way: land a shop's review export (no catalogue), ingest, dbt, snapshot."""
    from ml.core.settings import Settings
    from ml.data.ingest import ingest_interval
    from ml.data.land import land
    from ml.data.transform import dbt_build
    from ml.training.snapshot import read_training_frames

    settings = Settings(
        work_dir=tmp_path / "work",
        data_dir=PROJECT_DIR / "data",
        warehouse="duckdb",
        pii_salt="test-salt",  # type: ignore[arg-type]
        sources={"reviews": "catalog"},
        partition_grain="month",
    )
    raw = pd.read_parquet(ALL_BEAUTY)
    export = tmp_path / "reviews.parquet"
    raw[raw["timestamp"] >= pd.Timestamp("2016-01-01").timestamp()].to_parquet(export)
    landed = land(export, "reviews", settings=settings)
    ingest_interval(*landed.interval, run_id="test-reviews", settings=settings)
    dbt_build("test-reviews", settings)
    examples, items = read_training_frames(settings, "reviews")
    assert examples["review_text"].notna().mean() > 0.9
    data = from_frames(examples, items, source="reviews")
    with_text = [t for t in data.item_texts[1:] if t.startswith(PREFIX)]
    assert len(with_text) >= 0.4 * (data.num_items - 1), (len(with_text), data.num_items)
    # Validation and test events' reviews stay out (every split label reached the frame).
    held_out = examples[(examples["loo_split"] != "train") | (examples["time_split"] != "train")]
    assert len(held_out) and review_texts(examples) == review_texts(examples.drop(index=held_out.index))
