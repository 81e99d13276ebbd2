"""Monitoring's pure parts: the decision, online quality, drift on controlled data, the notifier."""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest

from ml.core.pii import user_hash
from ml.core.settings import Settings
from ml.monitoring.decision import Decision, decide, last_retrain_at, notify, record_run
from ml.monitoring.drift import drift_report
from ml.monitoring.features import (
    CONTEXT_NUMERICAL,
    DATA_CATEGORICAL,
    DATA_NUMERICAL,
    interaction_features,
    lifecycle_stage,
    prediction_features,
    with_lifecycles,
)
from ml.monitoring.online import online_quality
from ml.monitoring.run import MonitorResult

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_no_alarm_means_no_action(settings: Settings) -> None:
    assert decide([], settings, in_flight=0, last_retrain_at=None, interval_end=NOW).action == "none"


def test_alarm_retrains_unless_in_flight_or_cooling_down(settings: Settings) -> None:
    alarms = ["data drift: 60% of columns drifted (price)"]
    assert decide(alarms, settings, 0, None, NOW) == Decision("retrain", alarms[0], alarms)

    busy = decide(alarms, settings, in_flight=1, last_retrain_at=None, interval_end=NOW)
    assert busy.action == "alert" and "1 training run(s) in flight" in busy.reason

    cooldown = settings.retrain_cooldown_minutes
    recent = decide(alarms, settings, 0, NOW - timedelta(minutes=cooldown - 1), NOW)
    assert recent.action == "alert" and "cool-down until" in recent.reason
    assert decide(alarms, settings, 0, NOW - timedelta(minutes=cooldown + 1), NOW).action == "retrain"
    # Data on either side counts: a retraining for a later interval holds off an earlier one.
    assert decide(alarms, settings, 0, NOW + timedelta(minutes=cooldown - 1), NOW).action == "alert"
    assert decide(alarms, settings, 0, NOW + timedelta(minutes=cooldown + 1), NOW).action == "retrain"
    # Interval bounds are days: a date is its UTC midnight.
    day = date(2014, 3, 1)
    assert decide(alarms, settings, 0, day, datetime(2014, 3, 1, tzinfo=UTC)).action == "alert"


def test_the_cool_down_counts_in_data_interval_time(settings: Settings) -> None:
    """A year backfilled in seconds decides as a year in production: with a 45-day cool-down, an
    alarm every month retrains every other month (by wall clock, only the first would)."""
    settings = settings.model_copy(update={"retrain_cooldown_minutes": 45 * 24 * 60.0})
    alarms = ["online quality: hit rate 0.017 over 300 recommendations, below 0.051 offline"]
    assert last_retrain_at(settings) is None  # no monitoring.runs table yet
    actions = []
    for month in range(1, 13):
        start, end = date(2014, month, 1), date(2014 + month // 12, month % 12 + 1, 1)
        run_id = f"backfill__2014-{month:02d}"
        decision = decide(alarms, settings, 0, last_retrain_at(settings, end, run_id), end)
        result = MonitorResult(run_id, str(start), str(end), "v1", None, None, None, "/r")
        record_run(result, decision, settings, datetime.now(UTC))  # all decided within a second
        actions.append(decision.action)
    assert actions == ["retrain", "alert"] * 6
    assert last_retrain_at(settings) == datetime(2014, 12, 1, tzinfo=UTC)  # the latest
    assert last_retrain_at(settings, date(2014, 2, 20)) == datetime(2014, 2, 1, tzinfo=UTC)  # nearest

    # A rerun of a run that retrained is not held off by its own first decision ...
    own = last_retrain_at(settings, date(2014, 2, 1), "backfill__2014-01")
    assert own == datetime(2014, 4, 1, tzinfo=UTC)
    assert decide(alarms, settings, 0, own, date(2014, 2, 1)).action == "retrain"
    # ... but another run of the same interval is.
    again = last_retrain_at(settings, date(2014, 2, 1), "manual__again")
    assert decide(alarms, settings, 0, again, date(2014, 2, 1)).action == "alert"
    assert "interval ending 2014-02-01" in decide(alarms, settings, 0, again, date(2014, 2, 1)).reason


def test_online_hit_rate_on_a_hand_computed_case(settings: Settings) -> None:
    settings = settings.model_copy(update={"min_monitored_requests": 2, "min_online_hit_ratio": 0.5})
    requests = pd.DataFrame(
        {
            "user_hash": [user_hash("u1"), user_hash("u2"), user_hash("u3"), None],
            "items": [["a", "b"], ["c"], ["d"], ["a"]],
        }
    )
    # u1 bought b (hit), u2 bought x (miss), u3 never came back (not judged), the anonymous one is not judged.
    outcomes = pd.DataFrame({"user_id": ["u1", "u2", "u2"], "item_id": ["b", "x", "y"]})
    quality = online_quality(requests, outcomes, expected=0.8, settings=settings)
    assert (quality.hit_rate, quality.judged, quality.served) == (0.5, 2, 3)
    assert not quality.low  # 0.5 >= 0.5 x 0.8
    assert online_quality(requests, outcomes, expected=1.2, settings=settings).low  # 0.5 < 0.6

    too_few = settings.model_copy(update={"min_monitored_requests": 3})
    judged_two = online_quality(requests, outcomes, expected=1.2, settings=too_few)
    assert judged_two.judged == 2 and not judged_two.low and "not enough" in judged_two.note


def _world(rng: np.random.Generator, n: int, price_scale: float = 1.0, cats: Any = None) -> pd.DataFrame:
    cats = cats if cats is not None else [0.5, 0.3, 0.2]
    return pd.DataFrame(
        {
            "price": rng.lognormal(2.5, 0.6, n) * price_scale,
            "title_length": rng.normal(60, 15, n),
            "history_length": rng.poisson(6, n).astype(float),
            "category": rng.choice(["Skin", "Hair", "Makeup"], n, p=cats),
        }
    )


def test_drift_report_finds_exactly_the_columns_that_changed(settings: Settings) -> None:
    rng = np.random.default_rng(7)
    reference = _world(rng, 20_000)

    _, same = drift_report(_world(rng, 5_000), reference, DATA_NUMERICAL, DATA_CATEGORICAL, settings, "data")
    assert same.share == 0.0 and not same.drifted and same.drifted_columns == []
    assert set(same.columns) == {"price", "title_length", "history_length", "category"}
    assert max(same.columns.values()) < 0.05

    shifted = _world(rng, 5_000, price_scale=2.0, cats=[0.1, 0.2, 0.7])
    snapshot, moved = drift_report(shifted, reference, DATA_NUMERICAL, DATA_CATEGORICAL, settings, "data")
    assert sorted(moved.drifted_columns) == ["category", "price"]
    assert moved.share == 0.5 and moved.drifted  # 2 of 4 columns, threshold 0.5
    assert moved.columns["price"] > 0.5 and moved.columns["title_length"] < 0.05
    assert snapshot.dict()["metrics"]  # a real Evidently snapshot, savable as HTML/JSON


ORIGIN = pd.Timestamp("2010-01-01")
DAY = pd.Timedelta(days=1)


def _calendar_world(rng: np.random.Generator, days: int = 1000, arrivals: int = 6) -> pd.DataFrame:
    """Mart rows of a world whose mix never changes: the warehouse starts at day 0, ``arrivals``
    users a day arrive (their first event), each stays active for an exponential lifetime (mean
    600 days) buying 0.05 times a day; an item sells most when new and fades (age at a sale
    exponential, mean 400 days, at most the warehouse's age). Item and catalog columns are
    stationary noise."""
    n = arrivals * days
    arrive, life = rng.uniform(0, days, n), rng.exponential(600, n)
    user = np.repeat(np.arange(n), 1 + rng.poisson(0.05 * life))
    first_of_user = np.r_[True, user[1:] != user[:-1]]
    t = arrive[user] + np.where(first_of_user, 0.0, rng.uniform(0, 1, len(user)) * life[user])
    keep = t < days
    user, t = user[keep], t[keep]
    age = np.minimum(rng.exponential(400, len(t)), t)
    return _mart_rows(rng, t, arrive[user], t - age)


def _mart_rows(
    rng: np.random.Generator, t: np.ndarray, user_first: np.ndarray, item_first: np.ndarray
) -> pd.DataFrame:
    n = len(t)
    return pd.DataFrame(
        {
            "event_ts": ORIGIN + t * DAY,
            "user_first_ts": ORIGIN + user_first * DAY,
            "item_first_ts": ORIGIN + item_first * DAY,
            "price": rng.lognormal(2.5, 0.6, n),
            "title": ["t" * k for k in rng.integers(20, 80, n)],
            "rating": rng.integers(1, 6, n).astype(float),
            "sequence_number": rng.poisson(6, n) + 1,
            "user_events_30d": rng.poisson(2, n) + 1,
            "category": rng.choice(["Skin", "Hair", "Makeup"], n),
            "brand": rng.choice(["A", "B", "C", "D"], n),
        }
    )


def _days(frame: pd.DataFrame, first: float, end: float) -> pd.DataFrame:
    return frame[frame["event_ts"].between(ORIGIN + first * DAY, ORIGIN + end * DAY, inclusive="left")]


def test_lifecycle_stages_bucket_days_since_first_seen() -> None:
    days = pd.Series([0.0, 6.99, 7.0, 29.9, 30.0, 4000.0, None])
    expected = ["new", "new", "recent", "recent", "established", "established", "unknown"]
    assert lifecycle_stage(days).tolist() == expected
    # A reference written before the stages existed gets them from its days.
    old = pd.DataFrame({"user_tenure_days": [1.0, 400.0], "item_age_days": [10.0, None]})
    assert with_lifecycles(old)["user_lifecycle"].tolist() == ["new", "established"]
    assert with_lifecycles(old)["item_lifecycle"].tolist() == ["recent", "unknown"]
    assert set(CONTEXT_NUMERICAL).isdisjoint(DATA_NUMERICAL + DATA_CATEGORICAL)


def test_a_calendar_shift_alone_does_not_drift_but_a_change_of_the_user_mix_does(settings: Settings) -> None:
    rng = np.random.default_rng(5)
    world = _calendar_world(rng)
    # The champion's reference: the last 90 days of a 2-year-old training world; six months on.
    reference = interaction_features(_days(world, 640, 730))
    later = _days(world, 910, 940)
    _, calendar = drift_report(
        interaction_features(later),
        reference,
        DATA_NUMERICAL + CONTEXT_NUMERICAL,
        DATA_CATEGORICAL,
        settings,
        "data",
    )
    # Tenure and age in days drift with the date alone (why they are context, not monitored) ...
    threshold = settings.drift_column_threshold
    assert calendar.columns["user_tenure_days"] > threshold and calendar.columns["item_age_days"] > threshold
    # ... while the lifecycle stages, and so the monitored columns, stay where they were.
    assert calendar.columns["user_lifecycle"] < 0.03 and calendar.columns["item_lifecycle"] < 0.03
    _, monitored = drift_report(
        interaction_features(later), reference, DATA_NUMERICAL, DATA_CATEGORICAL, settings, "data"
    )
    assert monitored.drifted_columns == [] and monitored.share == 0.0 and not monitored.drifted

    # A campaign brings 1,500 new shoppers in the same month, each buying twice in their first 5 days.
    arrive = rng.uniform(910, 935, 1_500).repeat(2)
    t = arrive + rng.uniform(0, 5, len(arrive))
    campaign = _mart_rows(rng, t, arrive, t - np.minimum(rng.exponential(400, len(t)), t))
    _, mix = drift_report(
        interaction_features(pd.concat([later, campaign], ignore_index=True)),
        reference,
        DATA_NUMERICAL,
        DATA_CATEGORICAL,
        settings,
        "data",
    )
    assert mix.drifted_columns == ["user_lifecycle"] and mix.columns["user_lifecycle"] > 0.2
    assert mix.columns["item_lifecycle"] < 0.03


def test_drift_sampling_bounds_the_rows_compared(settings: Settings) -> None:
    settings = settings.model_copy(update={"drift_sample_rows": 1_000})
    rng = np.random.default_rng(1)
    _, check = drift_report(_world(rng, 8_000), _world(rng, 9_000), ["price"], [], settings, "data")
    assert (check.rows_current, check.rows_reference) == (1_000, 1_000)


def test_prediction_features_describe_what_was_shown() -> None:
    requests = pd.DataFrame(
        {
            "items": [["a", "b"], ["c"], []],
            "scores": [[0.9, 0.5], [0.4], []],
            "strategy": ["personalized", "cold_start_popular", "personalized"],
        }
    )
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "category": ["Skin", "Hair", None]})
    popularity = pd.Series({"a": 1.0, "b": 0.5})
    frame = prediction_features(requests, items, popularity)
    assert frame["top_score"].tolist()[:2] == [0.9, 0.4]
    assert frame["mean_score"].tolist()[:2] == [pytest.approx(0.7), 0.4]
    assert frame["mean_item_popularity"].tolist()[:2] == [0.75, 0.0]
    assert frame["top_category"].tolist() == ["Skin", "unknown", "none"]


def _result() -> MonitorResult:
    version = "shopflow_recommender:v1"
    return MonitorResult("run-1", "2014-01-01", "2014-02-01", version, None, None, None, "/r")


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_alert_is_posted_to_the_webhook_and_a_dead_webhook_does_not_raise(settings: Settings) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    decision = Decision("retrain", "data drift: 60% of columns drifted (price)", ["data drift"])
    url = f"http://127.0.0.1:{server.server_port}/hook"
    sent = notify(decision, _result(), settings.model_copy(update={"alert_webhook_url": url}))
    thread.join(10)
    server.server_close()
    assert sent == {"logged": True, "webhook": 204}
    payload = _Hook.received[-1]
    assert payload["action"] == "retrain" and payload["model_version"] == "shopflow_recommender:v1"
    assert payload["interval"] == ["2014-01-01", "2014-02-01"] and "price" in payload["reason"]

    dead = notify(decision, _result(), settings.model_copy(update={"alert_webhook_url": url}))
    assert dead["logged"] and dead["webhook"] is None and dead["webhook_error"]


def test_monitor_result_survives_its_xcom_round_trip() -> None:
    result = _result()
    assert MonitorResult.from_dict(json.loads(json.dumps(result.as_dict()))) == result


def test_new_marts_retrain_only_until_there_is_a_champion(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk.api.datamodels._generated import DagRunType

    from ml import registry
    from ml.training.stages import publish_skip_reason

    assert publish_skip_reason(DagRunType.ASSET_TRIGGERED, settings) is None  # no champion yet
    monkeypatch.setattr(registry, "champion", lambda _settings: "shopflow_recommender:v1")
    # The Task SDK's enum prints as 'DagRunType.ASSET_TRIGGERED': its value must be what counts.
    reason = publish_skip_reason(DagRunType.ASSET_TRIGGERED, settings)
    assert reason is not None and "shopflow_recommender:v1 is champion" in reason
    assert publish_skip_reason("asset_triggered", settings) == reason
    assert publish_skip_reason(DagRunType.MANUAL, settings) is None  # monitor or a person asked
    always = settings.model_copy(update={"retrain_on_publish": "always"})
    assert publish_skip_reason(DagRunType.ASSET_TRIGGERED, always) is None
