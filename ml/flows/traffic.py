"""Replayed shop traffic: the real later interactions of real users, sent to the running Bento.

In the replay of the later period, each interval's shoppers come to the shop before they act: for
every user active in ``[start, end)`` (a seeded sample), the shop asks the Bento for their
recommendations (``/recommend`` by user id - the service knows the histories the champion was
trained on, unknown users get its cold-start answer), and some of them search for a product they
then interacted with (``/search`` with that item's title) or look at similar items. The Bento logs
every answer; ``monitor_drift`` judges them against what those users really did in the interval.

Requests go only to the given base URL (a Bento on loopback), bounded in count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from ml.core.settings import Settings, get_settings
from ml.core.warehouse import Warehouse
from serving.client import auth_headers


@dataclass
class TrafficSummary:
    interval: tuple[str, str]
    users: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    models: set[str] = field(default_factory=set)
    """Model versions that answered."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "interval": list(self.interval),
            "users": self.users,
            "requests": self.requests,
            "errors": self.errors,
            "models": sorted(self.models),
        }


def interval_shoppers(
    start: date, end: date, settings: Settings, max_users: int, seed: int = 0
) -> dict[str, list[str]]:
    """A seeded sample of the users active in ``[start, end)`` → titles of the items they touched."""

    frame = Warehouse(settings).read(
        "select i.user_id, coalesce(d.title, '') as title from marts.fct_interactions i "
        "left join marts.dim_items d on d.source = i.source and d.item_id = i.item_id "
        "where i.source = :source and i.event_ts >= :start and i.event_ts < :end "
        "order by i.user_id, i.event_ts",
        {"source": settings.train_source, "start": start, "end": end},
    )
    if frame.empty:
        return {}
    users = frame["user_id"].drop_duplicates().sort_values()
    chosen = set(users.sample(min(max_users, len(users)), random_state=seed))
    picked = frame[frame["user_id"].isin(chosen)]
    return {str(u): [t for t in g["title"] if t] for u, g in picked.groupby("user_id", sort=True)}


def send_traffic(
    base_url: str,
    start: date,
    end: date,
    settings: Settings | None = None,
    max_users: int = 300,
    search_every: int = 3,
    k: int = 10,
    progress: bool = True,
) -> TrafficSummary:
    """Send one interval's replayed traffic to the Bento at ``base_url``.

    Args:
        base_url: the running service, e.g. ``http://127.0.0.1:3000``.
        start, end: the interval whose shoppers come.
        settings: ShopFlow settings (warehouse, API token).
        max_users: at most this many shoppers (a seeded sample).
        search_every: every n-th shopper also searches for the first item they touched.
        k: recommendations per request.
        progress: show a progress bar.
    """
    import httpx
    from tqdm import tqdm

    settings = settings or get_settings()
    shoppers = interval_shoppers(start, end, settings, max_users)
    summary = TrafficSummary((str(start), str(end)), users=len(shoppers))
    calls: list[tuple[str, dict[str, Any]]] = []
    for n, (user, titles) in enumerate(shoppers.items()):
        calls.append(("/recommend", {"user_id": user, "k": k}))
        if titles and n % search_every == 0:
            calls.append(("/search", {"query": titles[0][:200], "k": k}))
    with httpx.Client(base_url=base_url, timeout=30.0, headers=auth_headers(settings)) as http:
        for path, body in tqdm(calls, desc=f"traffic {start}", unit="req", disable=not progress):
            response = http.post(path, json=body)
            endpoint = path.strip("/")
            summary.requests[endpoint] = summary.requests.get(endpoint, 0) + 1
            if response.status_code != 200:
                summary.errors += 1
                continue
            summary.models.add(str(response.json().get("model_version")))
    return summary
