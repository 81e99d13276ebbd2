"""What monitoring measures: features of interactions (data drift) and of served answers (prediction drift).

Interactions come from the ``fct_monitored_interactions`` mart (each with its item's features and
the item's and user's first-seen times); the model version's *reference* is the same features over
the end of its training world, written once at registration (:func:`write_reference`).

**Why tenure and age are monitored as lifecycle stages, not as days.** The reference is the last
``drift_reference_days`` of the training world, and every later interval lies later in the
calendar: its returning users and items are older by the time that passed, so tenure and age in
days drift by construction. On the shipped Beauty data (the demo's reference, October-December
2013) the normed Wasserstein distance of tenure grows from 0.03 in January 2014 to 0.34 in March,
and that of item age to 0.20 by July, with nothing changed but the date: features that fire on
every later month say nothing. What changes the model's quality is the *mix*: a user in their
first days has a short history the model knows little of; an item first seen days ago is (nearly)
cold, ranked on its text alone. So ``user_lifecycle`` and ``item_lifecycle`` put the days since
first seen, at each event, into ``new`` (< 7 days), ``recent`` (< 30 days) or ``established``.
The horizons are fixed lengths back from each event (as ``user_events_30d``'s 30 days are), not
points of the calendar, so once the warehouse holds more history before the reference than the
longest horizon (the replay holds years), a calendar shift alone leaves the shares where they
were, while a real change of the mix (a campaign bringing new shoppers, a wave of new products)
moves them. On Beauty the stages stay at 0.004-0.08 (Jensen-Shannon) from January to May 2014
and reach 0.11-0.14 in June and July, where the mix really moved (fewer users in their first
week, more items in their first month near the end of the crawl).

Bucketing rather than dropping the two: the share of new users and new items is exactly where a
recommender trained on history is weak. The raw ``user_tenure_days`` and ``item_age_days`` stay
in the feature frame and the reference as *context* (:data:`CONTEXT_NUMERICAL`): never
drift-tested, reported as medians beside the reference's in a run's notes. A reference written
before the stages existed gets them from its days (:func:`with_lifecycles`).

``history_length`` (the event's position in the user's whole history) moves too on Beauty's later
months (0.08-0.38), also when capped at 5, 10 or 20 events: there the later months really hold
more experienced users (the 5-core filter favours them near the end of the crawl), which changes
what the sequence model sees. It stays a monitored feature.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml.core.artifacts import REFERENCE_FILE
from ml.core.settings import Settings
from ml.core.warehouse import Warehouse

DATA_NUMERICAL = ["price", "title_length", "rating", "history_length", "user_events_30d"]


DATA_CATEGORICAL = ["category", "brand", "user_lifecycle", "item_lifecycle"]


CONTEXT_NUMERICAL = ["user_tenure_days", "item_age_days"]
"""Kept beside the features and in the reference, reported, never drift-tested: they grow with
the calendar (see the module docstring)."""


LIFECYCLE_DAYS = ((7.0, "new"), (30.0, "recent"))
"""Days since first seen (at the event) below which a user or item is in a stage; older ones are
'established'. Fixed horizons back from each event: they do not move with the calendar."""


LIFECYCLES = {"user_lifecycle": "user_tenure_days", "item_lifecycle": "item_age_days"}
"""Each lifecycle stage feature and the days it buckets."""


PREDICTION_NUMERICAL = ["top_score", "mean_score", "mean_item_popularity"]


PREDICTION_CATEGORICAL = ["top_category", "strategy"]


# -- features --------------------------------------------------------------------------------------
MONITORED_MART = "marts.fct_monitored_interactions"


def hashed_sample(sql: str, key: str, rows: int, seed: int = 0) -> str:
    """``sql`` cut down, in the warehouse, to a seeded uniform sample of at most ``rows`` rows.

    Rows are ordered by the md5 of ``seed`` and their ``key`` (SQL over the query's columns) and
    the first ``rows`` kept. Why this and not ``TABLESAMPLE``/``USING SAMPLE``: DuckDB and
    PostgreSQL agree on ``md5(concat_ws(...))`` to the bit, so both warehouses draw the same rows;
    a row's membership depends on its identity only, so a rerun of an interval compares the same
    rows; and the warehouse does the work (a hash and a top-N), so an interval of ten million rows
    never reaches Python whole: the drift's cost follows the sample, not the data (bench/drift.py).
    """
    return (
        f"select * from ({sql}) as population "
        f"order by md5(concat_ws('|', {int(seed)}, {key})) limit {int(rows)}"
    )


INTERACTION_KEY = "source, user_id, item_id, event_ts, sequence_number"
"""What identifies an interaction row (the key the drift sample hashes)."""


def read_interactions(
    settings: Settings,
    start: datetime | date | None,
    end: datetime | date,
    source: str | None = None,
    sample_rows: int | None = None,
) -> pd.DataFrame:
    """The source's interactions in ``[start, end)`` with their item features, from the
    ``fct_monitored_interactions`` mart.

    ``item_first_ts`` / ``user_first_ts`` are the first interaction of the item / user in the whole
    warehouse (not only the window), and ``user_events_30d`` counts the user's events in the 30 days
    up to each one, so ages, tenures and activity mean the same on both sides of a test.
    """
    source = source or settings.train_source
    lower = "and event_ts >= :start " if start is not None else ""
    params: dict[str, Any] = {"source": source, "end": pd.Timestamp(end).to_pydatetime()}
    if start is not None:
        params["start"] = pd.Timestamp(start).to_pydatetime()
    sql = f"""
        select
            source, user_id, item_id, event_ts, rating, quantity, sequence_number,
            category, brand, price, title, item_first_ts, user_first_ts, user_events_30d
        from {MONITORED_MART}
        where source = :source {lower}and event_ts < :end
    """
    if sample_rows is not None:
        sql = hashed_sample(sql, INTERACTION_KEY, sample_rows)
    return Warehouse(settings).read(sql, params)


def read_pairs(
    settings: Settings, start: datetime | date, end: datetime | date, source: str | None = None
) -> pd.DataFrame:
    """Every (user_id, item_id) interaction of the source in ``[start, end)``: what the online
    hit rate needs, unsampled, without the feature columns."""
    sql = f"""
        select user_id, item_id from {MONITORED_MART}
        where source = :source and event_ts >= :start and event_ts < :end
    """
    params = {
        "source": source or settings.train_source,
        "start": pd.Timestamp(start).to_pydatetime(),
        "end": pd.Timestamp(end).to_pydatetime(),
    }
    return Warehouse(settings).read(sql, params)


def interaction_features(frame: pd.DataFrame) -> pd.DataFrame:
    """The monitored data features, one row per interaction (see the module docstring).

    Args:
        frame: rows of :func:`read_interactions`.
    """
    if frame.empty:
        return pd.DataFrame(columns=DATA_NUMERICAL + DATA_CATEGORICAL + CONTEXT_NUMERICAL)
    event = pd.to_datetime(frame["event_ts"])
    day = pd.Timedelta(days=1)
    out = pd.DataFrame(
        {
            "price": pd.to_numeric(frame["price"], errors="coerce"),
            "title_length": frame["title"].fillna("").str.len().astype(float),
            "rating": pd.to_numeric(frame["rating"], errors="coerce"),
            "history_length": pd.to_numeric(frame["sequence_number"], errors="coerce").astype(float),
            "user_tenure_days": (event - pd.to_datetime(frame["user_first_ts"])) / day,
            "item_age_days": (event - pd.to_datetime(frame["item_first_ts"])) / day,
            "user_events_30d": pd.to_numeric(frame["user_events_30d"], errors="coerce").astype(float),
            "category": frame["category"].fillna("unknown").astype(str),
            "brand": frame["brand"].fillna("unknown").astype(str),
        }
    )
    return with_lifecycles(out).reset_index(drop=True)


def lifecycle_stage(days: pd.Series) -> pd.Series:
    """'new', 'recent' or 'established' by days since first seen (:data:`LIFECYCLE_DAYS`);
    'unknown' where the days are missing."""
    stage = pd.Series("established", index=days.index, dtype=object)
    for limit, name in reversed(LIFECYCLE_DAYS):
        stage[days < limit] = name
    stage[days.isna()] = "unknown"
    return stage


def with_lifecycles(features: pd.DataFrame) -> pd.DataFrame:
    """``features`` with the lifecycle stages added where missing but their days are there.

    References written before the stages existed hold only the days: this derives the stages
    from them, so an older champion is judged on the same columns as a new one.
    """
    missing = {
        stage: days for stage, days in LIFECYCLES.items() if stage not in features and days in features
    }
    if not missing:
        return features
    return features.assign(
        **{
            stage: lifecycle_stage(pd.to_numeric(features[days], errors="coerce"))
            for stage, days in missing.items()
        }
    )


def context_summary(current: pd.DataFrame, reference: pd.DataFrame) -> str | None:
    """The calendar context of a run: medians of :data:`CONTEXT_NUMERICAL`, current vs reference
    (None when neither side has them)."""
    parts = []
    for column in CONTEXT_NUMERICAL:
        if column in current and column in reference:
            now, then = current[column].median(), reference[column].median()
            if pd.notna(now) and pd.notna(then):
                parts.append(f"median {column} {now:.0f} (reference {then:.0f})")
    if not parts:
        return None
    return "calendar context, not drift-tested: " + ", ".join(parts)


def write_reference(package: Path, settings: Settings, until: datetime | None = None) -> Path | None:
    """Save the data-drift reference of a model being registered (its training world, once).

    The reference is :func:`interaction_features` over the last ``drift_reference_days`` of the
    training source up to ``until`` (default: the latest interaction), sampled to
    ``drift_sample_rows``. Returns the file, or None when the warehouse has no interactions.
    """

    if not Warehouse(settings).table_exists(MONITORED_MART):
        return None  # marts not built by dbt (a hand-made training slice): nothing to refer to
    if until is None:
        latest = Warehouse(settings).scalar(
            f"select max(event_ts) from {MONITORED_MART} where source = :source",
            {"source": settings.train_source},
        )
        if latest is None or pd.isna(latest):
            return None
        until = pd.Timestamp(latest).to_pydatetime() + timedelta(seconds=1)
    start = until - timedelta(days=settings.drift_reference_days)
    features = interaction_features(
        read_interactions(settings, start, until, sample_rows=settings.drift_sample_rows)
    )
    if features.empty:
        return None
    out = Path(package) / REFERENCE_FILE
    features.to_parquet(out, index=False)
    return out


def prediction_features(requests: pd.DataFrame, items: pd.DataFrame, popularity: pd.Series) -> pd.DataFrame:
    """One row per served recommendation: score level and spread, what kind of items it showed.

    Args:
        requests: ``monitoring.requests`` rows of endpoint recommend (``items``/``scores`` lists).
        items: item_id → category (a frame with columns item_id, category).
        popularity: item_id → popularity percentile in [0, 1] (1 = the most interacted-with item).
    """
    if requests.empty:
        return pd.DataFrame(columns=PREDICTION_NUMERICAL + PREDICTION_CATEGORICAL)
    category = dict(zip(items["item_id"].astype(str), items["category"].fillna("unknown"), strict=False))
    pop = popularity.to_dict()
    rows = []
    for answer, scores, strategy in zip(
        requests["items"], requests["scores"], requests["strategy"], strict=True
    ):
        shown = [str(i) for i in answer]
        rows.append(
            {
                "top_score": float(scores[0]) if scores else math.nan,
                "mean_score": float(np.mean(scores)) if scores else math.nan,
                "mean_item_popularity": float(np.mean([pop.get(i, 0.0) for i in shown]))
                if shown
                else math.nan,
                "top_category": category.get(shown[0], "unknown") if shown else "none",
                "strategy": str(strategy or "unknown"),
            }
        )
    return pd.DataFrame(rows)


def sample_rows(frame: pd.DataFrame, rows: int, seed: int = 0) -> pd.DataFrame:
    return frame if len(frame) <= rows else frame.sample(rows, random_state=seed).reset_index(drop=True)


def catalog_categories(settings: Settings) -> pd.DataFrame:

    return Warehouse(settings).read(
        "select item_id, coalesce(category_leaf, category_top) as category from marts.dim_items "
        "where source = :source",
        {"source": settings.train_source},
    )
