"""What monitoring measures: features of interactions (data drift) and of served answers (prediction drift).

Interactions come from the ``fct_monitored_interactions`` mart (each with its item's features and
the item's and user's first-seen times); the model version's *reference* is the same features over
the end of its training world, written once at registration (:func:`write_reference`).
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

DATA_NUMERICAL = [
    "price",
    "title_length",
    "rating",
    "history_length",
    "user_tenure_days",
    "item_age_days",
    "user_events_30d",
]


DATA_CATEGORICAL = ["category", "brand"]


PREDICTION_NUMERICAL = ["top_score", "mean_score", "mean_item_popularity"]


PREDICTION_CATEGORICAL = ["top_category", "strategy"]


# -- features --------------------------------------------------------------------------------------
def read_interactions(
    settings: Settings, start: datetime | date | None, end: datetime | date, source: str | None = None
) -> pd.DataFrame:
    """The source's interactions in ``[start, end)`` with item features and first-seen times.

    ``item_first_ts`` / ``user_first_ts`` are the first interaction of the item / user in the whole
    warehouse (not only the window), so ages and tenures mean the same on both sides of a test.
    """

    source = source or settings.train_source
    lower = "and i.event_ts >= :start " if start is not None else ""
    params: dict[str, Any] = {"source": source, "end": pd.Timestamp(end).to_pydatetime()}
    if start is not None:
        params["start"] = pd.Timestamp(start).to_pydatetime()
    sql = f"""
        with item_first as (
            select item_id, min(event_ts) as item_first_ts
            from marts.fct_interactions where source = :source group by item_id
        ),
        user_first as (
            select user_id, min(event_ts) as user_first_ts
            from marts.fct_interactions where source = :source group by user_id
        )
        select
            i.user_id, i.item_id, i.event_ts, i.rating, i.quantity, i.sequence_number,
            coalesce(d.category_leaf, d.category_top) as category, d.brand, d.price, d.title,
            f.item_first_ts, u.user_first_ts
        from marts.fct_interactions i
        left join marts.dim_items d on d.source = i.source and d.item_id = i.item_id
        left join item_first f on f.item_id = i.item_id
        left join user_first u on u.user_id = i.user_id
        where i.source = :source {lower}and i.event_ts < :end
    """
    frame = Warehouse(settings).read(sql, params)
    frame["user_events_30d"] = _events_in_last_30_days(settings, source, frame, start, end)
    return frame


def _events_in_last_30_days(
    settings: Settings, source: str, frame: pd.DataFrame, start: Any, end: Any
) -> pd.Series:
    """For each row, the user's interactions in the 30 days up to it (user activity).

    Counted over a trailing window that reaches before ``start``, so the figure does not depend on
    how long the monitored window is.
    """

    if frame.empty:
        return pd.Series(dtype=float)
    lookback = pd.Timestamp(start if start is not None else frame["event_ts"].min()) - pd.Timedelta(days=30)
    history = Warehouse(settings).read(
        "select user_id, event_ts from marts.fct_interactions "
        "where source = :source and event_ts >= :start and event_ts < :end",
        {"source": source, "start": lookback.to_pydatetime(), "end": pd.Timestamp(end).to_pydatetime()},
    )
    # One sorted key per event: (user code, seconds) packed in an int64, so a single vectorised
    # searchsorted counts every row's trailing window (users occupy disjoint key ranges).
    codes = pd.Index(history["user_id"].astype(str).unique())
    span = np.int64(2**33)  # > any epoch second here; keeps users apart

    def keys(users: pd.Series, at: pd.Series) -> np.ndarray:
        code = codes.get_indexer(users.astype(str)).astype(np.int64)
        seconds = pd.to_datetime(at).to_numpy().astype("datetime64[s]").astype(np.int64)
        return np.where(code >= 0, code * span + seconds, -1)

    known = np.sort(keys(history["user_id"], history["event_ts"]))
    rows = keys(frame["user_id"], frame["event_ts"])
    month = np.int64(30 * 86_400)
    counts = np.searchsorted(known, rows, side="right") - np.searchsorted(known, rows - month, side="right")
    counts = np.where(rows >= 0, counts, 0).astype(float)
    return pd.Series(counts, index=frame.index)


def interaction_features(frame: pd.DataFrame) -> pd.DataFrame:
    """The monitored data features, one row per interaction (see the module docstring).

    Args:
        frame: rows of :func:`read_interactions`.
    """
    if frame.empty:
        return pd.DataFrame(columns=DATA_NUMERICAL + DATA_CATEGORICAL)
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
    return out.reset_index(drop=True)


def write_reference(package: Path, settings: Settings, until: datetime | None = None) -> Path | None:
    """Save the data-drift reference of a model being registered (its training world, once).

    The reference is :func:`interaction_features` over the last ``drift_reference_days`` of the
    training source up to ``until`` (default: the latest interaction), sampled to
    ``drift_sample_rows``. Returns the file, or None when the warehouse has no interactions.
    """

    if not Warehouse(settings).table_exists("marts.fct_interactions"):
        return None  # marts not built by dbt (a hand-made training slice): nothing to refer to
    if until is None:
        latest = Warehouse(settings).scalar(
            "select max(event_ts) from marts.fct_interactions where source = :source",
            {"source": settings.train_source},
        )
        if latest is None or pd.isna(latest):
            return None
        until = pd.Timestamp(latest).to_pydatetime() + timedelta(seconds=1)
    start = until - timedelta(days=settings.drift_reference_days)
    features = interaction_features(read_interactions(settings, start, until))
    if features.empty:
        return None
    out = Path(package) / REFERENCE_FILE
    sample_rows(features, settings.drift_sample_rows).to_parquet(out, index=False)
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
