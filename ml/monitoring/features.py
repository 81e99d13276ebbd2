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
MONITORED_MART = "marts.fct_monitored_interactions"


def read_interactions(
    settings: Settings, start: datetime | date | None, end: datetime | date, source: str | None = None
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
            user_id, item_id, event_ts, rating, quantity, sequence_number,
            category, brand, price, title, item_first_ts, user_first_ts, user_events_30d
        from {MONITORED_MART}
        where source = :source {lower}and event_ts < :end
    """
    return Warehouse(settings).read(sql, params)


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
