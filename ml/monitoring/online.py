"""Online quality: did the users we served come back and interact with an item we recommended?"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ml.core.pii import user_hash
from ml.core.settings import Settings


@dataclass
class OnlineQuality:
    hit_rate: float | None
    judged: int
    """Served recommendations whose user came back in the interval."""
    served: int
    expected: float | None
    """The champion's offline test recall@10."""
    low: bool
    note: str = ""


def online_quality(
    requests: pd.DataFrame, outcomes: pd.DataFrame, expected: float | None, settings: Settings
) -> OnlineQuality:
    """Hit rate of served recommendations against what the served users did next.

    Args:
        requests: recommend rows with ``user_hash`` and ``items`` (lists).
        outcomes: the interval's interactions (``user_id``, ``item_id``); user ids are hashed the
            way the service logs them to match.
        expected: the champion's offline recall@10 (the alarm compares against a share of it).
    """

    served = requests[requests["user_hash"].notna()] if not requests.empty else requests
    if served.empty or outcomes.empty:
        return OnlineQuality(None, 0, len(served), expected, False, "no served users or no outcomes yet")
    bought: dict[str, set[str]] = {}
    for user, item in zip(outcomes["user_id"].astype(str), outcomes["item_id"].astype(str), strict=True):
        bought.setdefault(user_hash(user) or "", set()).add(item)
    hits = judged = 0
    for user, answer in zip(served["user_hash"], served["items"], strict=True):
        later = bought.get(str(user))
        if not later:
            continue
        judged += 1
        hits += bool(later.intersection(str(i) for i in answer))
    if judged < settings.min_monitored_requests:
        rate = hits / judged if judged else None
        return OnlineQuality(rate, judged, len(served), expected, False, f"only {judged} judged: not enough")
    rate = hits / judged
    low = expected is not None and rate < settings.min_online_hit_ratio * expected
    return OnlineQuality(rate, judged, len(served), expected, low)
