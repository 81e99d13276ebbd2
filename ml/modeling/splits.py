"""The evaluation splits, the same rules as ``fct_training_examples`` computes in dbt.

Leave-one-out (the protocol of the published Beauty tables) and a global time split (the
production view); used where frames come straight from files instead of the marts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def loo_labels(position: pd.Series, n_user_events: pd.Series) -> pd.Series:
    """fct_training_examples.loo_split: last event test, the one before validation (>= 3 events)."""
    labels = np.where(
        n_user_events < 3,
        "train",
        np.where(
            position == n_user_events, "test", np.where(position == n_user_events - 1, "validation", "train")
        ),
    )
    return pd.Series(labels, index=position.index)


def time_labels(event_ts: pd.Series) -> pd.Series:
    """fct_training_examples.time_split: after the 80th / 90th percentile event time (discrete)."""
    ordered = np.sort(event_ts.to_numpy())
    n = len(ordered)
    if n == 0:
        return pd.Series([], dtype=object)

    def disc(q: float) -> object:
        # percentile_disc: the first value whose cumulative share reaches q.
        return ordered[max(int(np.ceil(q * n)) - 1, 0)]

    p80, p90 = disc(0.8), disc(0.9)
    later80 = ordered[ordered > p80]
    later90 = ordered[ordered > p90]
    val_start = later80[0] if len(later80) else None
    test_start = later90[0] if len(later90) else None
    labels = np.full(n, "train", dtype=object)
    ts = event_ts.to_numpy()
    if val_start is not None:
        labels[ts >= val_start] = "validation"
    if test_start is not None:
        labels[ts >= test_start] = "test"
    return pd.Series(labels, index=event_ts.index)
